package agent

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Rounds share an expensive read among the commands that need it at the
// same moment, without giving any of them an older answer than a read of
// its own would: a caller joins the next round that has not started yet,
// so the read it gets began after it asked, and everyone who asks while a
// round runs shares the next one. At most one round of a kind runs at a
// time, so under load the store serves a bounded number of such reads
// whatever the number of tenants waiting. The stores use them for reads
// whose cost grows with the number of tenants (MinIO's policy and bucket
// listings, Redis's ACL LIST) or that are sealed with Argon2id (MinIO's key
// listings), and for Redis's ACL SAVE (a save that began after each
// caller's change).

// RoundTimeout bounds one shared read (it runs for all its callers, so no
// single caller's context governs it).
const RoundTimeout = 30 * time.Second

// MaxRest bounds the pause between two rounds of one kind (Rounds.Rest).
const MaxRest = time.Second

// Rounds coalesces one kind of read: fetch is called with the keys of every
// caller of the round (deduplicated, in no particular order) and its result
// is handed to all of them. The zero value is ready to use.
type Rounds[K comparable, V any] struct {
	// Rest, when set, makes a round start no sooner than the last one
	// took after it ended (at most MaxRest). Under steady demand a round
	// would otherwise follow the last one at once, and the reads would
	// keep the store (and the agent's CPU) busy all the time; with Rest
	// they take at most about half of it, and the callers waiting
	// meanwhile share the next round. A caller that finds no round has
	// run for that long is served at once.
	Rest bool

	mu      sync.Mutex
	next    *round[K, V]
	running bool
	started int
	// notBefore is the earliest start of the next round (Rest).
	notBefore time.Time
}

type round[K comparable, V any] struct {
	keys    map[K]bool
	waiters int // callers that joined (tests)
	done    chan struct{}
	val     V
	err     error
}

// Get waits for a round that starts after this call and returns its result.
// All callers of one kind must pass the same fetch.
func (r *Rounds[K, V]) Get(ctx context.Context, key K, fetch func(context.Context, []K) (V, error)) (V, error) {
	r.mu.Lock()
	if r.next == nil {
		r.next = &round[K, V]{keys: map[K]bool{}, done: make(chan struct{})}
	}
	rd := r.next
	rd.keys[key] = true
	rd.waiters++
	if !r.running {
		r.running = true
		go r.run(fetch)
	}
	r.mu.Unlock()
	select {
	case <-rd.done:
		return rd.val, rd.err
	case <-ctx.Done():
		var zero V
		return zero, fmt.Errorf("waiting for a shared read: %w", ctx.Err())
	}
}

// run runs rounds back to back while callers wait for one.
func (r *Rounds[K, V]) run(fetch func(context.Context, []K) (V, error)) {
	for {
		r.mu.Lock()
		rest := time.Until(r.notBefore)
		r.mu.Unlock()
		if rest > 0 {
			time.Sleep(rest)
		}
		r.mu.Lock()
		rd := r.next
		r.next = nil
		if rd == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.started++
		r.mu.Unlock()
		keys := make([]K, 0, len(rd.keys))
		for k := range rd.keys {
			keys = append(keys, k)
		}
		began := time.Now()
		rd.val, rd.err = runRound(keys, fetch)
		if r.Rest {
			took := time.Since(began)
			r.mu.Lock()
			r.notBefore = time.Now().Add(min(took, MaxRest))
			r.mu.Unlock()
		}
		close(rd.done)
	}
}

// Fetches returns how many rounds have started.
func (r *Rounds[K, V]) Fetches() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.started
}

// runRound calls fetch with its own deadline, turning a panic into the
// round's error so that no caller waits forever.
func runRound[K comparable, V any](keys []K, fetch func(context.Context, []K) (V, error)) (v V, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("shared read panicked: %v", p)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), RoundTimeout)
	defer cancel()
	return fetch(ctx, keys)
}
