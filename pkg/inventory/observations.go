package inventory

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Categories of the findings read from the records' observations
// (DESIGN.md §10) rather than from the inventories.
const (
	// Drift: a store's last observation of a tenant found differences that
	// are still open (not repaired: lost data, DRIFT_REPAIR=report, or a
	// repair that failed).
	Drift Category = "drift"
	// Expiring: a tenant's credential in a store expires soon or has
	// expired (Qdrant's token exp, reported by its observation).
	Expiring Category = "expiring"
	// ObserveFailed: a store could not observe a tenant's slice.
	ObserveFailed Category = "observe_failed"
)

// ExpiryDriftKinds are the drift kinds that say a credential is near or
// past its expiry rather than that the store differs.
var ExpiryDriftKinds = map[string]bool{"credential_expiring": true, "credential_expired": true}

// OpenDrift returns the drift of an observation that is still open (found
// and not repaired).
func OpenDrift(o *events.Observation) []events.Drift {
	if o == nil {
		return nil
	}
	var out []events.Drift
	for _, d := range o.Drift {
		if !slices.Contains(o.Repaired, d) {
			out = append(out, d)
		}
	}
	return out
}

// ObservationFindings reports, from each record's last observation of each
// store (tenant, if set, limits it to one), open drift, credentials near
// expiry and failed observations. Only observations of the record's
// current generation count. It does no I/O.
func ObservationFindings(records []*events.TenantRecord, tenant string) []Finding {
	var out []Finding
	for _, rec := range records {
		if rec == nil || (tenant != "" && rec.TenantID != tenant) || !LiveStates[rec.State] {
			continue
		}
		for _, st := range events.Stores() {
			s := rec.Stores[st]
			if s == nil || s.Observation == nil || s.Observation.Generation != rec.Generation {
				continue
			}
			o := s.Observation
			base := Finding{TenantID: rec.TenantID, Store: st, State: rec.State, Generation: rec.Generation}
			if o.Error != "" {
				f := base
				f.Category, f.Detail = ObserveFailed, fmt.Sprintf("observation at %s failed: %s", o.At.UTC().Format("2006-01-02T15:04:05Z"), o.Error)
				out = append(out, f)
			}
			for _, d := range OpenDrift(o) {
				f := base
				f.Category, f.Name = Drift, d.Resource
				if ExpiryDriftKinds[d.Kind] {
					f.Category = Expiring
				}
				f.Detail = d.Kind
				if d.Detail != "" {
					f.Detail += ": " + d.Detail
				}
				if d.DataLost {
					f.Detail += " (data lost: not repaired automatically)"
				}
				out = append(out, f)
			}
		}
	}
	return out
}

// Merge adds findings to the report, counts them, and keeps the report's
// order.
func (r *Report) Merge(fs []Finding) {
	if r.Counts == nil {
		r.Counts = map[Category]int{}
	}
	for _, f := range fs {
		r.Findings = append(r.Findings, f)
		r.Counts[f.Category]++
	}
	sortFindings(r.Findings)
}

func sortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		switch {
		case a.TenantID != b.TenantID:
			return a.TenantID < b.TenantID
		case a.Category != b.Category:
			return a.Category < b.Category
		case a.Store != b.Store:
			return a.Store < b.Store
		case a.Kind != b.Kind:
			return a.Kind < b.Kind
		}
		return strings.Compare(a.Name, b.Name) < 0
	})
}
