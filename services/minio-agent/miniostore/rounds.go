package miniostore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Why this file exists: three reads that Provision, Verify, Observe and
// Deprovision need cost MinIO far more than the rest of a tenant's calls,
// and two of them grow with the number of tenants.
//
//   - no_foreign_grants needs every canned policy and who they are
//     attached to. MinIO answers ListCannedPolicies by loading every
//     policy from its drives while holding the IAM write lock, which
//     stalls every other request's authentication meanwhile (≈130 ms at
//     1,000 tenants, linear in them), and GetPolicyEntities is sealed with
//     Argon2id (≈150 ms of CPU on each side, whatever the size).
//   - A user's access keys (no_extra_keys, Deprovision) come only from
//     Argon2id-sealed calls.
//   - A bucket's creation date (the ownership stamp, owner.go) comes only
//     from the listing of every bucket.
//
// Each caller's answer must be as fresh as a read of its own, or the check
// would prove less than before. A round gives exactly that: a caller joins
// the next round that has not started yet, so the read it gets began after
// it asked, and everyone who asked while a round was running shares the
// next one. At most one round of a kind runs at a time, so under load the
// reads cost MinIO a bounded rate whatever the number of tenants waiting,
// instead of one read per tenant.

// roundTimeout bounds one shared read (it runs for all its callers, so no
// single caller's context governs it).
const roundTimeout = 30 * time.Second

// rounds coalesces one kind of read: fetch is called with the keys of every
// caller of the round (deduplicated, sorted) and its result is handed to all
// of them. The zero value is ready to use.
type rounds[K comparable, V any] struct {
	mu      sync.Mutex
	next    *round[K, V]
	running bool
}

type round[K comparable, V any] struct {
	keys map[K]bool
	done chan struct{}
	val  V
	err  error
}

// get waits for a round that starts after this call and returns its result.
// All callers of one kind must pass the same fetch.
func (r *rounds[K, V]) get(ctx context.Context, key K, fetch func(context.Context, []K) (V, error)) (V, error) {
	r.mu.Lock()
	if r.next == nil {
		r.next = &round[K, V]{keys: map[K]bool{}, done: make(chan struct{})}
	}
	rd := r.next
	rd.keys[key] = true
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
		return zero, ctx.Err()
	}
}

// run runs rounds back to back while callers wait for one.
func (r *rounds[K, V]) run(fetch func(context.Context, []K) (V, error)) {
	for {
		r.mu.Lock()
		rd := r.next
		r.next = nil
		if rd == nil {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		keys := make([]K, 0, len(rd.keys))
		for k := range rd.keys {
			keys = append(keys, k)
		}
		rd.val, rd.err = runRound(keys, fetch)
		close(rd.done)
	}
}

// runRound calls fetch with its own deadline, turning a panic into the
// round's error so that no caller waits forever.
func runRound[K comparable, V any](keys []K, fetch func(context.Context, []K) (V, error)) (v V, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("shared read panicked: %v", p)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), roundTimeout)
	defer cancel()
	return fetch(ctx, keys)
}

// sortedKeys returns keys sorted, for fetches whose request lists them.
func sortedKeys(keys []string) []string {
	out := slices.Clone(keys)
	slices.Sort(out)
	return out
}
