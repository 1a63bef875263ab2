package saga

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// reconcileLoop re-drives the registry every ReconcileInterval until ctx is
// cancelled. It is what makes the saga's timers survive restarts: deadlines
// and retry times are in the records, and every replica looks at them. The
// process's one watch on the registry (registryFeed) keeps the set of
// records worth a look, so a pass costs reads only for tenants that are in
// flight or unsettled, not for every tenant ever provisioned.
func (s *Saga) reconcileLoop(ctx context.Context) {
	watch := s.watch
	s.feed.use(ctx)
	var beats *progressWatch
	if nc := s.js.Conn(); nc != nil && s.policy().extends() {
		w, err := watchProgress(nc, s.now)
		if err != nil {
			s.log.Warn("agents' heartbeats unavailable: deadlines will not be extended", zap.Error(err))
		} else {
			beats = w
			defer w.stop()
		}
	}
	t := time.NewTicker(s.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var progress *Progress
		if beats != nil {
			progress = beats.snapshot()
		}
		ids := watch.candidates(s.now())
		s.metrics.candidates.Set(float64(len(ids)))
		if err := s.reconcile(ctx, ids, progress); err != nil && ctx.Err() == nil {
			s.log.Warn("reconcile pass incomplete", zap.Error(err))
		}
	}
}

// reconcile makes one pass over ids: it feeds each record the clock (Step
// rolls back sagas past their deadline unless the agents they wait for are
// working (progress), retries compensation whose backoff
// has elapsed) and executes effects a replica left pending.
func (s *Saga) reconcile(ctx context.Context, ids []string, progress *Progress) error {
	var firstErr error
	past := map[string]int{}
	for _, k := range ids {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rec, err := s.reconcileOne(ctx, k, progress)
		if err != nil {
			s.log.Warn("reconcile tenant", zap.String("tenant", k), zap.Error(err))
			if firstErr == nil {
				firstErr = err
			}
		}
		if kind, ok := pastDeadline(rec, s.now(), s.policy()); ok {
			past[kind]++
		}
	}
	for _, kind := range deadlineKinds {
		s.metrics.pastDeadline.WithLabelValues(kind).Set(float64(past[kind]))
	}
	return firstErr
}

// deadlineKinds are the kind label values of the past-deadline gauge.
var deadlineKinds = []string{"provision", "rollback", "deprovision", "lifecycle"}

// pastDeadline reports whether rec (as the reconciler left it, after its
// tick) is past its saga's deadline, and the saga's kind: a provisioning
// whose (extended) deadline passed although the tick should have extended
// it or started the rollback, or a rollback, deprovisioning or lifecycle
// operation that has not changed for longer than the hard cap
// (SAGA_MAX_TIMEOUT): compensation retries with backoff and is never
// abandoned, so such a tenant is stuck, not slow.
func pastDeadline(rec *events.TenantRecord, now time.Time, p Policy) (string, bool) {
	if rec == nil || !rec.State.InFlight() {
		return "", false
	}
	stale := now.Sub(rec.UpdatedAt) > p.hardTimeout()
	switch rec.State {
	case events.TenantProvisioning:
		return "provision", rec.Deadline != nil && now.After(*rec.Deadline)
	case events.TenantRollingBack:
		return "rollback", stale
	case events.TenantDeprovisioning:
		return "deprovision", stale
	}
	return "lifecycle", stale
}

// registryWatch follows the tenants bucket and keeps the IDs of records
// that may need the reconciler. It is a cache of the registry, rebuilt from
// the bucket by every replica; decisions are always taken on a fresh read.
//
// Scheduled steps (a rotation's retire, a retained tenant's purge) are due
// at a time kept in their record (Scheduled.DueAt): the watch indexes them
// in a min-heap by due time, so a pass looks only at the records whose
// step is due — popping the heap costs O(log n) per due record, never a
// scan of every tenant. A record stays a candidate from its due time until
// a write clears or moves its schedule.
type registryWatch struct {
	// attention reports whether a record may need the reconciler;
	// settled is called for a record that does not (or is deleted).
	attention func(*events.TenantRecord) bool
	settled   func(id string)

	mu    sync.Mutex
	ids   map[string]bool
	sched map[string]time.Time // tenant -> due time of its scheduled step
	// heap holds tenant IDs by due time; an entry a later write moved or
	// cleared stays in it and is skipped when popped.
	heap timeHeap[string]
	due  map[string]bool // scheduled steps found due
}

func newRegistryWatch(attention func(*events.TenantRecord) bool, settled func(id string)) *registryWatch {
	return &registryWatch{attention: attention, settled: settled, ids: map[string]bool{}, sched: map[string]time.Time{}, due: map[string]bool{}}
}

// schedule records tenant id's scheduled step (nil: none).
func (w *registryWatch) schedule(id string, sc *events.ScheduledStep) {
	delete(w.due, id)
	if sc == nil {
		delete(w.sched, id)
		return
	}
	w.sched[id] = sc.DueAt
	w.heap.Push(sc.DueAt, id)
}

// apply indexes one registry update.
func (w *registryWatch) apply(u registryUpdate) {
	w.mu.Lock()
	forget := false
	if u.err == nil && u.put() && w.attention(u.rec) {
		w.ids[u.key] = true
	} else if u.err == nil || !u.put() {
		delete(w.ids, u.key) // settled, or deleted
		forget = true
	}
	// A settled record may still have a step scheduled (a rotation's
	// retire, a retained tenant's purge).
	switch {
	case u.err == nil && u.put():
		if at, ok := w.sched[u.key]; u.rec.Scheduled == nil || !ok || !at.Equal(u.rec.Scheduled.DueAt) {
			w.schedule(u.key, u.rec.Scheduled)
		}
	case !u.put():
		w.schedule(u.key, nil)
	}
	w.mu.Unlock()
	if forget {
		w.settled(u.key)
	}
}

// inFlight is the number of unsettled records (sagas in flight).
func (w *registryWatch) inFlight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ids)
}

// candidates are the records worth a look at now: unsettled ones, and
// those whose scheduled step is due.
func (w *registryWatch) candidates(now time.Time) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.heap.Len() > 0 && !w.heap.Peek().After(now) {
		due, id := w.heap.Pop()
		if at, ok := w.sched[id]; ok && at.Equal(due) {
			w.due[id] = true
		}
	}
	out := make([]string, 0, len(w.ids)+len(w.due))
	for id := range w.ids {
		out = append(out, id)
	}
	for id := range w.due {
		if !w.ids[id] {
			out = append(out, id)
		}
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

func (s *Saga) reconcileOne(ctx context.Context, id string, progress *Progress) (*events.TenantRecord, error) {
	rec, d, changed, err := s.write(ctx, id, Event{Kind: EvTick, Progress: progress})
	if err == nil && changed && d.Note != "" {
		s.log.Info(d.Note, zap.String("tenant", id))
	}
	if err != nil || rec == nil || len(rec.Outbox) == 0 {
		return rec, err
	}
	if !changed && s.now().Sub(rec.UpdatedAt) < s.cfg.StuckAfter {
		return rec, nil // fresh effects: the handler that wrote them is executing them
	}
	// Left pending by a replica that died (or failed) after writing them.
	return rec, s.flush(ctx, rec)
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
