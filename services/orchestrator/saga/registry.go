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
		if cur == nil {
			_, err = r.kv.Create(ctx, id, data)
		} else {
			_, err = r.kv.Update(ctx, id, data, rev)
		}
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // lost the race: read again and re-apply
		}
		if err != nil {
			return cur, false, fmt.Errorf("registry write %s: %w", id, err)
		}
		return next, true, nil
	}
}

// cloneRecord deep-copies a record so a mutation that is retried starts
// from the stored value, not from a half-applied copy.
func cloneRecord(r *events.TenantRecord) *events.TenantRecord {
	if r == nil {
		return nil
	}
	c := *r
	c.Stores = make(map[events.Store]*events.StoreStatus, len(r.Stores))
	for k, v := range r.Stores {
		s := *v
		s.Resources = cloneMap(v.Resources)
		s.Warnings = append([]string(nil), v.Warnings...)
		c.Stores[k] = &s
	}
	c.Labels = cloneMap(r.Labels)
	if r.Secrets != nil {
		s := *r.Secrets
		c.Secrets = &s
	}
	return &c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
