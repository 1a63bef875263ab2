package saga

import (
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// progressWatch listens to the agents' heartbeats (events.AgentProgress on
// store.progress.<store>, core NATS) and keeps, per store, when one was
// last received by this replica's clock. The reconciler hands a snapshot to
// Step with every tick, which extends a passed deadline while the stores
// it waits for beat. It is evidence, not state: a replica that restarts
// starts with none and says so (Progress.Since), and nothing in the
// registry depends on it.
type progressWatch struct {
	now func() time.Time

	mu         sync.Mutex
	since      time.Time
	last       map[events.Store]time.Time
	reconnects uint64
	nc         *nats.Conn
	sub        *nats.Subscription
}

// watchProgress subscribes to every store's heartbeats on nc.
func watchProgress(nc *nats.Conn, now func() time.Time) (*progressWatch, error) {
	w := &progressWatch{now: now, last: map[events.Store]time.Time{}, nc: nc}
	w.since = now()
	w.reconnects = nc.Stats().Reconnects
	sub, err := nc.Subscribe(events.SubjectAllProgress, func(m *nats.Msg) {
		p, err := events.DecodeAgentProgress(m.Data)
		if err != nil || events.ProgressSubject(p.Store) != m.Subject {
			return // only a store's own subject speaks for it
		}
		w.mu.Lock()
		w.last[p.Store] = w.now()
		w.mu.Unlock()
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", events.SubjectAllProgress, err)
	}
	// Heartbeats are small and frequent; a slow reconciler must not make
	// the client drop them.
	_ = sub.SetPendingLimits(-1, -1)
	w.sub = sub
	return w, nil
}

// snapshot returns the evidence as of now. After the connection was lost
// and re-established, heartbeats sent meanwhile were missed: listening
// counts as starting again.
func (w *progressWatch) snapshot() *Progress {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r := w.nc.Stats().Reconnects; r != w.reconnects {
		w.reconnects = r
		w.since = w.now()
	}
	if !w.nc.IsConnected() {
		w.since = w.now()
	}
	return &Progress{Since: w.since, Last: maps.Clone(w.last)}
}

func (w *progressWatch) stop() { _ = w.sub.Unsubscribe() }
