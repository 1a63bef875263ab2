package saga

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// reconcileLoop re-drives the registry every ReconcileInterval until ctx is
// cancelled. It is what makes the saga's timers survive restarts: deadlines
// and retry times are in the records, and every replica looks at them.
func (s *Saga) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.Reconcile(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("reconcile pass incomplete", zap.Error(err))
		}
	}
}

// Reconcile makes one pass over the registry: rolls back provisioning sagas
// past their deadline, retries compensation whose backoff has elapsed, and
// finishes steps (sealing, deleting sealed secrets, announcing) that a
// replica died in the middle of.
func (s *Saga) Reconcile(ctx context.Context) error {
	keys, err := s.reg.Keys(ctx)
	if err != nil {
		return err
	}
	var firstErr error
	for _, k := range keys {
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

func (s *Saga) reconcileOne(ctx context.Context, id string) error {
	cur, _, err := s.reg.Get(ctx, id)
	if err != nil || cur == nil {
		return err
	}
	if !s.needsAttention(cur) {
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
	return s.drive(ctx, rec)
}

// needsAttention is the cheap filter in front of a reconcile write: in
// flight, stores still being compensated, a settled state not yet
// announced, or a step that has been sitting longer than StuckAfter.
func (s *Saga) needsAttention(rec *events.TenantRecord) bool {
	if rec.State.InFlight() {
		return true
	}
	for _, st := range rec.Stores {
		if st.State == events.StoreDeprovisioning {
			return true
		}
	}
	if rec.Announced != rec.State {
		return s.now().Sub(rec.UpdatedAt) > s.cfg.StuckAfter || rec.State == events.TenantActive && rec.Secrets == nil
	}
	return false
}
