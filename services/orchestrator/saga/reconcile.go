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
			if err := watch.run(ctx, s.reg, unsettled, s.settled); err != nil && ctx.Err() == nil {
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
		ids := watch.candidates()
		s.metrics.candidates.Set(float64(len(ids)))
		if err := s.reconcile(ctx, ids); err != nil && ctx.Err() == nil {
			s.log.Warn("reconcile pass incomplete", zap.Error(err))
		}
	}
}

// reconcile makes one pass over ids: it feeds each record the clock (Step
// rolls back sagas past their deadline, retries compensation whose backoff
// has elapsed) and executes effects a replica left pending.
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

func (w *registryWatch) run(ctx context.Context, reg *Registry, attention func(*events.TenantRecord) bool, settled func(id string)) error {
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
				w.mu.Unlock()
				settled(e.Key())
				continue
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

// settled forgets what this process kept about tenant id while its saga
// ran (the registry's guess, pending timings): the saga settled, perhaps on
// another replica, so these stay O(in-flight).
func (s *Saga) settled(id string) {
	s.reg.forget(id)
	s.book.drop(id)
}

func (s *Saga) reconcileOne(ctx context.Context, id string) error {
	rec, _, changed, err := s.write(ctx, id, Event{Kind: EvTick})
	if err != nil || rec == nil || len(rec.Outbox) == 0 {
		return err
	}
	if !changed && s.now().Sub(rec.UpdatedAt) < s.cfg.StuckAfter {
		return nil // fresh effects: the handler that wrote them is executing them
	}
	// Left pending by a replica that died (or failed) after writing them.
	return s.flush(ctx, rec)
}

// unsettled reports whether a record may need the reconciler: a saga in
// flight, pending effects, stores (of this or an earlier generation) still
// being compensated or re-provisioned. It does not depend on the clock, so
// the registry watch can keep the set current; Step decides on timing.
func unsettled(rec *events.TenantRecord) bool {
	if rec.State.InFlight() || len(rec.Outbox) > 0 {
		return true
	}
	for _, st := range rec.Stores {
		if st.State == events.StoreDeprovisioning || st.State == events.StorePending {
			return true
		}
	}
	for _, pg := range rec.Past {
		for _, st := range pg.Stores {
			if st.State == events.StoreDeprovisioning {
				return true
			}
		}
	}
	return false
}
