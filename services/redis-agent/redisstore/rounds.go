package redisstore

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Why this file exists: inward_isolation (Verify and Observe) needs every
// ACL user's patterns, and ACL LIST renders every user — with the long
// command rules each tenant user has — on Redis's only command thread: its
// cost grows with the number of tenants, and one per Verify made the
// per-tenant cost grow with them too.
//
// Each caller's answer must be as fresh as a read of its own, or the check
// would prove less than before. A round gives exactly that (the same shape
// as the MinIO agent's miniostore/rounds.go): a caller joins the next round
// that has not started yet, so the read it gets began after it asked, and
// everyone who asked while a round was running shares the next one. At most
// one round of a kind runs at a time, so under load Redis renders the ACL a
// bounded number of times whatever the number of tenants waiting.

// roundTimeout bounds one shared read (it runs for all its callers, so no
// single caller's context governs it).
const roundTimeout = 30 * time.Second

// rounds coalesces one kind of read: every caller of a round gets the result
// of one fetch that began after it called get. The zero value is ready to
// use.
type rounds[V any] struct {
	mu      sync.Mutex
	next    *round[V]
	running bool
	// started counts fetches, for tests.
	started int
}

type round[V any] struct {
	done chan struct{}
	val  V
	err  error
}

// get waits for a round that starts after this call and returns its result.
// All callers of one rounds must pass the same fetch.
func (r *rounds[V]) get(ctx context.Context, fetch func(context.Context) (V, error)) (V, error) {
	r.mu.Lock()
	if r.next == nil {
		r.next = &round[V]{done: make(chan struct{})}
	}
	rd := r.next
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
func (r *rounds[V]) run(fetch func(context.Context) (V, error)) {
	for {
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
		rd.val, rd.err = runRound(fetch)
		close(rd.done)
	}
}

// fetches returns how many rounds have started.
func (r *rounds[V]) fetches() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.started
}

// runRound calls fetch with its own deadline, turning a panic into the
// round's error so that no caller waits forever.
func runRound[V any](fetch func(context.Context) (V, error)) (v V, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("shared read panicked: %v", p)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), roundTimeout)
	defer cancel()
	return fetch(ctx)
}
