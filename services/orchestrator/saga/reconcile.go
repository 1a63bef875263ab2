package saga

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// reconcileLoop re-drives the registry every ReconcileInterval until ctx is
// cancelled. It is what makes the saga's timers survive restarts: deadlines
// and retry times are in the records, and every replica looks at them. A
// watch on the registry keeps the set of records worth a look, so a pass
// costs reads only for tenants that are in flight or unsettled, not for
// every tenant ever provisioned.
func (s *Saga) reconcileLoop(ctx context.Context) {
	watch := newRegistryWatch()
	go func() {
		for ctx.Err() == nil {
			if err := watch.run(ctx, s.reg, unsettled); err != nil && ctx.Err() == nil {
				s.log.Warn("registry watch stopped; restarting", zap.Error(err))
				time.Sleep(time.Second)
			}
		}
	}()
	t := time.NewTicker(s.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.reconcile(ctx, watch.candidates()); err != nil && ctx.Err() == nil {
			s.log.Warn("reconcile pass incomplete", zap.Error(err))
		}
	}
}

// reconcile makes one pass over ids: rolls back provisioning sagas past
// their deadline, retries compensation whose backoff has elapsed, and
// finishes steps (sealing, deleting sealed secrets, announcing) that a
// replica died in the middle of.
func (s *Saga) reconcile(ctx context.Context, ids []string) error {
	var firstErr error
	for _, k := range ids {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := s.reconcileOne(ctx, k); err != nil {
			s.log.Warn("reconcile tenant", zap.String("tenant", k), zap.Error(err))
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}

// registryWatch follows the tenants bucket and keeps the IDs of records
// that may need the reconciler. It is a cache of the registry, rebuilt from
// the bucket by every replica; decisions are always taken on a fresh read.
type registryWatch struct {
	mu  sync.Mutex
	ids map[string]bool
}

func newRegistryWatch() *registryWatch { return &registryWatch{ids: map[string]bool{}} }

func (w *registryWatch) run(ctx context.Context, reg *Registry, attention func(*events.TenantRecord) bool) error {
	kw, err := reg.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch registry: %w", err)
	}
	defer func() { _ = kw.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-kw.Updates():
			if !ok {
				return errors.New("registry watch closed")
			}
			if e == nil {
				continue // initial values delivered
			}
			w.mu.Lock()
			if rec, err := events.DecodeTenantRecord(e.Value()); err == nil && e.Operation() == jetstream.KeyValuePut && attention(rec) {
				w.ids[e.Key()] = true
			} else if err == nil || e.Operation() != jetstream.KeyValuePut {
				delete(w.ids, e.Key()) // settled, or deleted
			}
			w.mu.Unlock()
		}
	}
}

func (w *registryWatch) candidates() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.ids))
	for id := range w.ids {
		out = append(out, id)
	}
	return out
}

func (s *Saga) reconcileOne(ctx context.Context, id string) error {
	cur, _, err := s.reg.Get(ctx, id)
	if err != nil || cur == nil {
		return err
	}
	if !unsettled(cur) {
		return nil
	}
	now := s.now()
	rec, changed, err := s.reg.Update(ctx, id, func(rec *events.TenantRecord) (*events.TenantRecord, error) {
		if rec == nil {
			return nil, errNoChange
		}
		dirty := false
		if rec.State == events.TenantProvisioning && rec.Deadline != nil && now.After(*rec.Deadline) {
			s.startRollback(rec, fmt.Sprintf("deadline of %s exceeded; no answer from: %s", s.cfg.SagaTimeout, pendingStores(rec)), now)
			dirty = true
		}
		for _, st := range rec.Stores {
			if st.State != events.StoreDeprovisioning || st.CommandSentAt == nil {
				continue
			}
			if now.Sub(*st.CommandSentAt) >= s.cfg.backoff(st.Attempt) {
				st.Attempt++
				st.CommandSentAt = &now
				dirty = true
			}
		}
		if !dirty {
			return nil, errNoChange
		}
		return rec, nil
	})
	if err != nil {
		return err
	}
	if !changed && now.Sub(rec.UpdatedAt) < s.cfg.StuckAfter {
		return nil // a handler is on it; only a record left idle is re-driven
	}
	if changed && rec.State == events.TenantRollingBack && cur.State == events.TenantProvisioning {
		s.log.Warn("saga deadline passed; rolling back", zap.String("tenant", id), zap.String("reason", rec.Reason))
		if err := s.audit(ctx, rec, events.AuditTenantRollbackStarted, "", "", map[string]any{"reason": rec.Reason}); err != nil {
			return err
		}
	}
	return s.drive(ctx, rec, true)
}

// unsettled reports whether a record may need the reconciler: a saga in
// flight, stores still being compensated, a settled state not yet
// announced, or an active tenant without its sealed secrets. It does not
// depend on the clock, so the registry watch can keep the set current;
// reconcileOne decides on timing.
func unsettled(rec *events.TenantRecord) bool {
	if rec.State.InFlight() || rec.Announced != rec.State {
		return true
	}
	if rec.State == events.TenantActive && rec.Secrets == nil {
		return true
	}
	for _, st := range rec.Stores {
		if st.State == events.StoreDeprovisioning {
			return true
		}
	}
	return false
}
