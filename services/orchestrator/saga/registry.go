package saga

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Registry is the tenants KV bucket. Every write is a compare-and-set on the
// key's revision, so concurrent replicas never overwrite each other.
type Registry struct {
	kv jetstream.KeyValue
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
	for {
		cur, rev, err := r.Get(ctx, id)
		if err != nil {
			return nil, false, err
		}
		next, err := mutate(cloneRecord(cur))
		if errors.Is(err, errNoChange) {
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
		if cur == nil {
			_, err = r.kv.Create(wctx, id, data)
		} else {
			_, err = r.kv.Update(wctx, id, data, rev)
		}
		cancel()
		if isConflict(err) {
			continue // lost the race: read again and re-apply
		}
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			// The write or its answer was lost (a cluster leader
			// moving): read again; if it landed, the step finds it
			// applied.
			continue
		}
		if err != nil {
			return cur, false, fmt.Errorf("registry write %s: %w", id, err)
		}
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
