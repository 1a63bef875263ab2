package saga

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Registry is the tenants KV bucket. Every write is a compare-and-set on the
// key's revision, so concurrent replicas never overwrite each other.
type Registry struct {
	kv jetstream.KeyValue

	// last is what this process last wrote or read of each unsettled
	// tenant, with its revision: Update tries its compare-and-set on it
	// without reading first, and reads only when the write is refused
	// (another writer got there first). It is only ever a guess — the
	// compare-and-set decides — and holds unsettled records only, so it
	// is O(in-flight).
	mu   sync.Mutex
	last map[string]knownRecord
	// writing serialises this process's writes of one tenant: the
	// handlers of its four results arrive together, and taking turns
	// here costs less than losing compare-and-set races to each other
	// (each loss is another read and write).
	writing map[string]*turn
}

type turn struct {
	sync.Mutex
	waiters int
}

// take waits for id's turn; the returned func ends it.
func (r *Registry) take(id string) func() {
	r.mu.Lock()
	if r.writing == nil {
		r.writing = map[string]*turn{}
	}
	t := r.writing[id]
	if t == nil {
		t = &turn{}
		r.writing[id] = t
	}
	t.waiters++
	r.mu.Unlock()
	t.Lock()
	return func() {
		t.Unlock()
		r.mu.Lock()
		if t.waiters--; t.waiters == 0 {
			delete(r.writing, id)
		}
		r.mu.Unlock()
	}
}

type knownRecord struct {
	rec *events.TenantRecord // never modified once stored here
	rev uint64
}

func (r *Registry) known(id string) (knownRecord, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k, ok := r.last[id]
	return k, ok
}

// remember keeps rec at rev as the guess for id's next write, or forgets
// id when rec is nil or settled.
func (r *Registry) remember(id string, rec *events.TenantRecord, rev uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec == nil || !unsettled(rec) {
		delete(r.last, id)
		return
	}
	if r.last == nil {
		r.last = map[string]knownRecord{}
	}
	r.last[id] = knownRecord{rec: rec, rev: rev}
}

func (r *Registry) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.last, id)
}

// errNoChange tells Update that the mutation left the record as it was.
var errNoChange = errors.New("no change")

// Get returns the record of tenant id, or (nil, 0, nil) if there is none.
func (r *Registry) Get(ctx context.Context, id string) (*events.TenantRecord, uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	e, err := r.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("registry get %s: %w", id, err)
	}
	rec, err := events.DecodeTenantRecord(e.Value())
	if err != nil {
		return nil, 0, fmt.Errorf("registry record %s: %w", id, err)
	}
	return rec, e.Revision(), nil
}

// Update reads the record of tenant id (nil when absent), applies mutate, and
// writes the result with compare-and-set, retrying from a fresh read when
// another writer got there first. mutate returns errNoChange to write
// nothing; any other error aborts. It returns the record as stored after
// the call and whether this call changed it.
func (r *Registry) Update(ctx context.Context, id string, mutate func(rec *events.TenantRecord) (*events.TenantRecord, error)) (*events.TenantRecord, bool, error) {
	defer r.take(id)()
	guessed := false
	for {
		var (
			cur *events.TenantRecord
			rev uint64
			err error
		)
		if k, ok := r.known(id); ok && !guessed {
			cur, rev, guessed = k.rec, k.rev, true
		} else {
			r.forget(id)
			guessed = true // read from now on
			if cur, rev, err = r.Get(ctx, id); err != nil {
				return nil, false, err
			}
		}
		next, err := mutate(cloneRecord(cur))
		if errors.Is(err, errNoChange) {
			if k, ok := r.known(id); ok && k.rev == rev && rev != 0 {
				// Decided on the guess: confirm it is current before
				// answering "nothing to do" (a reader acts on that).
				_, frev, gerr := r.Get(ctx, id)
				if gerr != nil {
					return nil, false, gerr
				}
				if frev != rev {
					r.forget(id)
					continue
				}
			}
			return cur, false, nil
		}
		if err != nil {
			return cur, false, err
		}
		next.UpdatedAt = time.Now().UTC()
		data, err := events.Encode(next)
		if err != nil {
			return cur, false, fmt.Errorf("registry encode %s: %w", id, err)
		}
		// Indented, so that `nats kv get tenants <id> --raw` reads well.
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, data, "", "  "); err == nil {
			data = pretty.Bytes()
		}
		wctx, cancel := context.WithTimeout(ctx, opTimeout)
		var newRev uint64
		if cur == nil {
			newRev, err = r.kv.Create(wctx, id, data)
		} else {
			newRev, err = r.kv.Update(wctx, id, data, rev)
		}
		cancel()
		if isConflict(err) {
			r.forget(id)
			continue // lost the race (or the guess was stale): read again and re-apply
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// The write or its answer was lost (a cluster leader
			// moving): read again; if it landed, the step finds it
			// applied.
			r.forget(id)
			continue
		}
		if err != nil {
			r.forget(id)
			return cur, false, fmt.Errorf("registry write %s: %w", id, err)
		}
		r.remember(id, cloneRecord(next), newRev)
		return next, true, nil
	}
}

// isConflict reports whether a KV write lost a compare-and-set race. One
// server answers code 10071 (ErrKeyExists); replicated storage answers
// 10164 ("wrong last sequence", ErrKeyRevisionMismatch). Both mean: read
// again and retry.
func isConflict(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}
