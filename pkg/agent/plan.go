package agent

import (
	"context"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Plans and dry run (DESIGN.md §10) as optional interfaces a Store
// implements next to Store. Like Store's methods they are safe to call
// concurrently for different tenants (the runtime holds the tenant's lock
// around each call) and report transient errors unless wrapped with
// Permanent or matching ErrConflict. Nothing they return carries a secret.

// PlanApplier applies a plan's limits to a provisioned tenant.
type PlanApplier interface {
	// ApplyPlan sets every limit of req.Plan's section for this store on
	// the tenant's resources, removes the limits a previous plan set that
	// this one leaves unset, reads the limits back from the store and
	// returns what it read, with an error if they differ from the plan.
	// Idempotent. A limit the store cannot enforce, or a change the store
	// cannot make in place (Qdrant's vector size), is a permanent error
	// (reason "unsupported"), and nothing is changed.
	ApplyPlan(ctx context.Context, req PlanRequest) (PlanResponse, error)
}

// DryRunner reports what a provision with a plan would do, changing
// nothing.
type DryRunner interface {
	// DryRun returns, for a provision of req.Tenant at req.Generation with
	// req.Plan (nil: no plan), the exact statements and admin calls it
	// would run (secrets replaced by "<redacted>"), the names the tenant
	// would get, and every conflict: a foreign resource holding a name, a
	// plan limit this server cannot enforce. It must leave the store
	// exactly as it was (read-only calls only).
	DryRun(ctx context.Context, req PlanRequest) (events.DryRun, error)
}

// PlanRequest names the tenant and the plan (only this store's section
// is read; nil means no plan).
type PlanRequest struct {
	Tenant     events.TenantID
	Generation uint64
	Plan       *events.Plan
}

// PlanResponse is what ApplyPlan read back from the store.
type PlanResponse struct {
	// Limits is the plan section as the store now enforces it.
	Limits *events.Plan
	// Usage is what the tenant uses of what the plan limits, where the
	// store can tell (events.UsageDatabaseBytes, events.UsagePoints).
	Usage    map[string]int64
	Warnings []string
}
