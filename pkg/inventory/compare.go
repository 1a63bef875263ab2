// Package inventory compares what the stores hold with what the registry
// says should exist (DESIGN.md §4, §10): resources no live tenant owns
// (leaked), live tenants lacking a resource (missing), look-alikes
// tenantprov did not create (foreign), sagas that stopped moving (stuck),
// and markers of another generation than the registry's. Compare is a pure
// function; Client gathers the stores' inventories over NATS and LoadRecords
// reads the registry. `tenantctl doctor`, the orphan sweep and `make chaos`
// are built on it.
package inventory

import (
	"fmt"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Category is the kind of a finding.
type Category string

// Finding categories.
const (
	// Leaked: a resource tenantprov's marker says it created, for a tenant
	// with no live record (no record, or failed, deprovisioned) — what
	// the orphan sweep (DESIGN.md §10) calls an orphan.
	Leaked Category = "leaked"
	// Missing: an active tenant lacks a resource (or its marker) in a
	// store that answered.
	Missing Category = "missing"
	// Foreign: a resource with a tenant-shaped name that tenantprov did not
	// create. Reported, never a fault of tenantprov's.
	Foreign Category = "foreign"
	// Stuck: a record in a transient state past its deadline (or, without
	// one, past Options.TransientTimeout since its last update) by more
	// than Options.Margin.
	Stuck Category = "stuck"
	// GenerationMismatch: a resource of ours whose marker records another
	// generation than the tenant's record (newer at any time; older once
	// the tenant is settled).
	GenerationMismatch Category = "generation_mismatch"
	// Unanswered: a store's agent did not answer the inventory request, so
	// nothing about that store is known.
	Unanswered Category = "unanswered"
)

// Categories returns every category in report order.
func Categories() []Category {
	return []Category{Leaked, Missing, Stuck, GenerationMismatch, Drift, Expiring, ObserveFailed, Unanswered, Foreign}
}

// Problem reports whether a finding of category c means something is wrong
// (doctor exits non-zero). Foreign resources are only reported: they are
// not tenantprov's to fix.
func (c Category) Problem() bool { return c != Foreign }

// LiveStates are the tenant states whose generation holds resources in the
// stores. Besides the states of DESIGN.md §4 they include the lifecycle
// states of §10 (retained, suspended, rotating), so that resources of such
// tenants are not mistaken for leaks once those states exist.
var LiveStates = map[events.TenantState]bool{
	events.TenantProvisioning:   true,
	events.TenantActive:         true,
	events.TenantRollingBack:    true,
	events.TenantDeprovisioning: true,
	events.TenantRetaining:      true,
	events.TenantRetained:       true,
	events.TenantSuspending:     true,
	events.TenantSuspended:      true,
	events.TenantResuming:       true,
	events.TenantRotating:       true,
	events.TenantRestoring:      true,
	events.TenantUpdating:       true,
}

// Complete are the states in which a tenant must hold every resource of
// Expected in every store.
var Complete = map[events.TenantState]bool{
	events.TenantActive:    true,
	events.TenantSuspended: true,
	events.TenantRotating:  true,
	events.TenantUpdating:  true,
}

// Expected lists, per store, the kinds of resource (each with tenantprov's
// marker) a complete tenant holds. Qdrant's token record is expected only
// when the record's isolation mode is jwt_rbac. A MinIO tenant has no
// policy of its own: its user holds the one policy every tenant shares
// (which policy_exact checks); a per-tenant policy is a legacy one.
var Expected = map[events.Store][]events.ResourceKind{
	events.StoreMinIO:    {events.KindBucket, events.KindIAMUser, events.KindMarker},
	events.StorePostgres: {events.KindDatabase, events.KindRole, events.KindMarker},
	events.StoreQdrant:   {events.KindCollection, events.KindMarker, events.KindTokenRecord},
	events.StoreRedis:    {events.KindACLUser, events.KindMarker},
}

// Finding is one thing the comparison found. It never holds a secret.
type Finding struct {
	Category Category            `json:"category"`
	TenantID string              `json:"tenant_id,omitempty"`
	Store    events.Store        `json:"store,omitempty"`
	Kind     events.ResourceKind `json:"kind,omitempty"`
	Name     string              `json:"name,omitempty"`
	// State and Generation are the tenant's record's ("" and 0: no record).
	State      events.TenantState `json:"state,omitempty"`
	Generation uint64             `json:"generation,omitempty"`
	// StoreGeneration is the generation the resource's marker records.
	StoreGeneration uint64 `json:"store_generation,omitempty"`
	Detail          string `json:"detail,omitempty"`
}

// Input is everything Compare looks at.
type Input struct {
	// Records are the registry's tenant records.
	Records []*events.TenantRecord
	// Inventories holds the items of every store that answered.
	Inventories map[events.Store][]events.InventoryItem
	// Unanswered names the stores that did not answer, with why.
	Unanswered map[events.Store]string
	// Tenant, if set, limits the comparison to one tenant.
	Tenant string
	// Now is the time deadlines are compared with.
	Now time.Time
	Options
}

// Options tune what counts as stuck.
type Options struct {
	// Margin is how far past its deadline a transient record must be to be
	// stuck (default DefaultMargin).
	Margin time.Duration
	// TransientTimeout is how long a transient record without a deadline
	// (rolling back, deprovisioning) may go without an update
	// (default DefaultTransientTimeout).
	TransientTimeout time.Duration
}

// Defaults for Options.
const (
	DefaultMargin           = 30 * time.Second
	DefaultTransientTimeout = 10 * time.Minute
)

// Report is the result of a comparison.
type Report struct {
	Findings []Finding `json:"findings"`
	// Counts holds the number of findings per category.
	Counts map[Category]int `json:"counts"`
	// Tenants is the number of records compared; Items the number of store
	// items per store that answered.
	Tenants int                  `json:"tenants"`
	Items   map[events.Store]int `json:"items"`
}

// OK reports whether no finding is a problem (see Category.Problem).
func (r Report) OK() bool {
	for c, n := range r.Counts {
		if n > 0 && c.Problem() {
			return false
		}
	}
	return true
}

// Compare compares the stores' inventories with the registry. It does no
// I/O. Findings are sorted by tenant, category, store, kind and name.
func Compare(in Input) Report {
	if in.Margin <= 0 {
		in.Margin = DefaultMargin
	}
	if in.TransientTimeout <= 0 {
		in.TransientTimeout = DefaultTransientTimeout
	}
	if in.Now.IsZero() {
		in.Now = time.Now()
	}
	rep := Report{Counts: map[Category]int{}, Items: map[events.Store]int{}}
	add := func(f Finding) {
		rep.Findings = append(rep.Findings, f)
		rep.Counts[f.Category]++
	}
	wanted := func(tenant string) bool { return in.Tenant == "" || tenant == in.Tenant }

	records := map[string]*events.TenantRecord{}
	for _, r := range in.Records {
		if r == nil || !wanted(r.TenantID) {
			continue
		}
		records[r.TenantID] = r
		rep.Tenants++
	}

	for _, st := range events.Stores() {
		if reason, ok := in.Unanswered[st]; ok {
			add(Finding{Category: Unanswered, Store: st, Detail: reason})
		}
	}

	// have[tenant][store][kind]: an item of ours exists.
	have := map[string]map[events.Store]map[events.ResourceKind]bool{}
	for st, items := range in.Inventories {
		for _, it := range items {
			if !wanted(it.TenantID) {
				continue
			}
			rep.Items[st]++
			if it.Store == "" {
				it.Store = st
			}
			rec := records[it.TenantID]
			f := Finding{TenantID: it.TenantID, Store: it.Store, Kind: it.Kind, Name: it.Name, StoreGeneration: it.Generation}
			if rec != nil {
				f.State, f.Generation = rec.State, rec.Generation
			}
			switch {
			case !it.Ours:
				f.Category, f.Detail = Foreign, "has a tenant's name but no tenantprov marker"
				add(f)
				continue
			case rec == nil || !LiveStates[rec.State]:
				f.Category = Leaked
				if rec == nil {
					f.Detail = "orphan: tenantprov's marker, and no registry record"
				} else {
					f.Detail = fmt.Sprintf("orphan: tenantprov's marker, and the tenant is %s", rec.State)
				}
				add(f)
				continue
			case it.Generation != 0 && (it.Generation > rec.Generation || it.Generation < rec.Generation && !rec.State.InFlight()):
				f.Category = GenerationMismatch
				f.Detail = fmt.Sprintf("marker records generation %d, the registry %d", it.Generation, rec.Generation)
				add(f)
			}
			if have[it.TenantID] == nil {
				have[it.TenantID] = map[events.Store]map[events.ResourceKind]bool{}
			}
			if have[it.TenantID][it.Store] == nil {
				have[it.TenantID][it.Store] = map[events.ResourceKind]bool{}
			}
			have[it.TenantID][it.Store][it.Kind] = true
		}
	}

	for id, rec := range records {
		if rec.State.InFlight() {
			if rec.State == events.TenantProvisioning && rec.Deadline != nil {
				if in.Now.After(rec.Deadline.Add(in.Margin)) {
					add(Finding{Category: Stuck, TenantID: id, State: rec.State, Generation: rec.Generation,
						Detail: fmt.Sprintf("%s past its deadline %s by %s", rec.State, rec.Deadline.UTC().Format(time.RFC3339), in.Now.Sub(*rec.Deadline).Round(time.Second))})
				}
			} else if idle := in.Now.Sub(rec.UpdatedAt); idle > in.TransientTimeout+in.Margin {
				add(Finding{Category: Stuck, TenantID: id, State: rec.State, Generation: rec.Generation,
					Detail: fmt.Sprintf("%s with no update for %s", rec.State, idle.Round(time.Second))})
			}
		}
		if !Complete[rec.State] {
			continue
		}
		for _, st := range events.Stores() {
			if _, answered := in.Inventories[st]; !answered {
				continue
			}
			for _, k := range Expected[st] {
				if k == events.KindTokenRecord && !jwtRBAC(rec) {
					continue
				}
				if !have[id][st][k] {
					add(Finding{Category: Missing, TenantID: id, Store: st, Kind: k, State: rec.State, Generation: rec.Generation,
						Detail: fmt.Sprintf("%s tenant has no %s of tenantprov's in %s", rec.State, k, st)})
				}
			}
		}
	}

	sortFindings(rep.Findings)
	return rep
}

// jwtRBAC reports whether the tenant's Qdrant slice has a token (its record
// does not say application-level isolation).
func jwtRBAC(rec *events.TenantRecord) bool {
	q := rec.Stores[events.StoreQdrant]
	return q == nil || q.IsolationMode != "application"
}
