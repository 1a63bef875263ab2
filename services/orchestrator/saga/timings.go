package saga

import (
	"maps"
	"sync"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// timingBook holds, per tenant, the time this replica spent on a saga's
// steps since its last registry write; the next write folds it into the
// record's Timings (diagnostics only: a replica that dies loses what it
// had not written, and nothing is decided on it). An entry lives only
// while its tenant is unsettled: it is dropped when a write leaves the
// record settled with nothing pending, so the book is O(in-flight).
type timingBook struct {
	mu      sync.Mutex
	pending map[string]*pendingTimes
}

type pendingTimes struct {
	ms          map[string]float64
	requestedAt time.Time // of the request being handled, when known
}

func newTimingBook() *timingBook { return &timingBook{pending: map[string]*pendingTimes{}} }

// add counts d against step of tenant id's saga.
func (b *timingBook) add(id, step string, d time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.entry(id)
	p.ms[step] += events.RoundMS(d)
}

// wrote counts one registry write of tenant id's saga.
func (b *timingBook) wrote(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entry(id).ms[events.StepRegistryWrites]++
}

// requested notes when the request now being handled was stored.
func (b *timingBook) requested(id string, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.entry(id).requestedAt = at
}

func (b *timingBook) entry(id string) *pendingTimes {
	p := b.pending[id]
	if p == nil {
		p = &pendingTimes{ms: map[string]float64{}}
		b.pending[id] = p
	}
	return p
}

// take removes and returns what is pending for id (nil when nothing is).
func (b *timingBook) take(id string) *pendingTimes {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pending[id]
	delete(b.pending, id)
	return p
}

// giveBack returns what take returned when the write did not happen.
func (b *timingBook) giveBack(id string, p *pendingTimes) {
	if p == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.entry(id)
	for k, v := range p.ms {
		q.ms[k] += v
	}
	if q.requestedAt.IsZero() {
		q.requestedAt = p.requestedAt
	}
}

// drop forgets id (its saga settled).
func (b *timingBook) drop(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.pending, id)
}

// size is the number of tenants with pending timings.
func (b *timingBook) size() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pending)
}

// foldTimings writes a step's timing into next (the record Step produced
// from cur on ev): a saga that starts gets fresh Timings; pending times
// are added; an applied store result brings the agent's breakdown; a
// settled saga gets its total.
func foldTimings(cur, next *events.TenantRecord, ev Event, p *pendingTimes, now time.Time) {
	started := next.State == events.TenantProvisioning || next.State == events.TenantDeprovisioning
	if started && (cur == nil || cur.State != next.State || cur.Generation != next.Generation) {
		kind := "provision"
		if next.State == events.TenantDeprovisioning {
			kind = "deprovision"
		}
		at := now
		if p != nil && !p.requestedAt.IsZero() {
			at = p.requestedAt
		}
		next.Timings = &events.SagaTimings{Saga: kind, RequestedAt: at.UTC(), MS: map[string]float64{}}
	} else if next.Timings != nil {
		next.Timings = &events.SagaTimings{Saga: next.Timings.Saga, RequestedAt: next.Timings.RequestedAt, MS: maps.Clone(next.Timings.MS)}
		if next.Timings.MS == nil {
			next.Timings.MS = map[string]float64{}
		}
	}
	t := next.Timings
	if t == nil {
		return
	}
	if p != nil {
		for k, v := range p.ms {
			t.MS[k] += v
		}
	}
	if ev.Kind == EvResult && ev.Result != nil {
		res := ev.Result
		if st := next.Stores[res.Store]; st != nil && st.CompletedAt != nil && st.CompletedAt.Equal(res.CompletedAt) && st.DurationMS == res.DurationMS &&
			next.Generation == res.Generation {
			st.TimingsMS = maps.Clone(res.TimingsMS)
			if st.TimingsMS == nil {
				st.TimingsMS = map[string]float64{}
			}
			st.TimingsMS[events.StepResult] = events.RoundMS(max(now.Sub(res.CompletedAt), 0))
			if settledStores(next) {
				t.MS[events.StepStores] = events.RoundMS(max(now.Sub(firstCommand(next, t.RequestedAt)), 0))
			}
		}
	}
	if (cur == nil || next.State != cur.State) && (next.State == events.TenantActive || next.State == events.TenantFailed || next.State == events.TenantDeprovisioned) {
		t.MS[events.StepTotal] = events.RoundMS(max(now.Sub(t.RequestedAt), 0))
	}
}

// settledStores reports whether every store of rec has answered the
// current saga.
func settledStores(rec *events.TenantRecord) bool {
	for _, st := range rec.Stores {
		if st.State == events.StorePending || st.State == events.StoreDeprovisioning {
			return false
		}
	}
	return len(rec.Stores) > 0
}

// firstCommand is when the current saga's first store command was sent
// (StartedAt of provisioning; otherwise since).
func firstCommand(rec *events.TenantRecord, since time.Time) time.Time {
	first := time.Time{}
	for _, st := range rec.Stores {
		if st.StartedAt != nil && st.StartedAt.After(since) && (first.IsZero() || st.StartedAt.Before(first)) {
			first = *st.StartedAt
		}
	}
	if first.IsZero() {
		return since
	}
	return first
}
