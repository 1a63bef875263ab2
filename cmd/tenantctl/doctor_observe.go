package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// doctor's part of issue 14: on-demand observation (--observe) and the
// orphan sweep's list.

// observeStatus is the outcome of doctor --observe.
type observeStatus struct {
	RequestedAt time.Time `json:"requested_at"`
	// Observed holds, per store, the time of its fresh observation.
	Observed map[events.Store]time.Time `json:"observed,omitempty"`
	// Missing names the provisioned stores with no fresh observation
	// within --observe-timeout.
	Missing []events.Store `json:"missing,omitempty"`
	// Skipped says why nothing was asked (the tenant is not observable).
	Skipped string `json:"skipped,omitempty"`
}

// observeNow asks the orchestrator to observe tenant now and waits until
// each store the tenant is provisioned in has an observation newer than the
// request, or wait has passed.
func observeNow(ctx context.Context, c *conn, tenant string, wait time.Duration) (*observeStatus, error) {
	rec, _, err := c.record(ctx, tenant)
	if err != nil {
		return nil, err
	}
	st := &observeStatus{RequestedAt: time.Now().UTC(), Observed: map[events.Store]time.Time{}}
	if rec.State != events.TenantActive && rec.State != events.TenantSuspended && rec.State != events.TenantRetained {
		st.Skipped = "tenant is " + string(rec.State) + ": only active, suspended and retained tenants are observed"
		return st, nil
	}
	req, err := events.Encode(&events.LifecycleRequested{TenantID: tenant, RequestedBy: requester()})
	if err != nil {
		return nil, fail(exitFailed, "%v", err)
	}
	if _, err := c.js.Publish(ctx, events.SubjectTenantObserveRequested, req); err != nil {
		return nil, fail(exitUnavailable, "publish %s: %v", events.SubjectTenantObserveRequested, err)
	}
	deadline := time.Now().Add(wait)
	for {
		rec, _, err = c.record(ctx, tenant)
		if err != nil {
			return nil, err
		}
		st.Missing = nil
		for _, s := range events.Stores() {
			ss := rec.Stores[s]
			if ss == nil || ss.State != events.StoreProvisioned {
				continue
			}
			if o := ss.Observation; o != nil && !o.At.Before(st.RequestedAt) {
				st.Observed[s] = o.At
			} else {
				st.Missing = append(st.Missing, s)
			}
		}
		if len(st.Missing) == 0 || time.Now().After(deadline) {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, nil
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// loadOrphans reads the orphan sweep's bucket (absent before the first
// orchestrator with the sweep ran: no orphans).
func loadOrphans(ctx context.Context, c *conn, tenant string) ([]events.Orphan, error) {
	kv, err := c.js.KeyValue(ctx, events.KVOrphans)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []events.Orphan
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var o events.Orphan
		if json.Unmarshal(e.Value(), &o) != nil || (tenant != "" && o.TenantID != tenant) {
			continue
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].TenantID+"."+string(out[i].Store) < out[j].TenantID+"."+string(out[j].Store)
	})
	return out, nil
}

// printSweep prints the orphan sweep's list and what --observe got.
func printSweep(w io.Writer, r doctorReport) {
	for _, o := range r.Orphans {
		what := "removal pending (grace)"
		switch {
		case o.Foreign:
			what = "foreign: reported only"
		case o.RemovedAt != nil:
			what = "removed " + o.RemovedAt.UTC().Format(time.RFC3339)
		case o.RemovalSentAt != nil:
			what = "removal sent " + o.RemovalSentAt.UTC().Format(time.RFC3339)
		}
		if o.Error != "" {
			what += "; " + o.Error
		}
		fmt.Fprintf(w, "orphan sweep: %s %s g%d first seen %s: %s [%s]\n", o.Store, o.TenantID, o.Generation, o.FirstSeen.UTC().Format(time.RFC3339), what, strings.Join(o.Items, ", "))
	}
	if o := r.Observation; o != nil {
		switch {
		case o.Skipped != "":
			fmt.Fprintf(w, "observe: skipped: %s\n", o.Skipped)
		case len(o.Missing) > 0:
			fmt.Fprintf(w, "observe: no fresh observation from %v\n", o.Missing)
		default:
			fmt.Fprintf(w, "observe: %d store(s) observed now\n", len(o.Observed))
		}
	}
}
