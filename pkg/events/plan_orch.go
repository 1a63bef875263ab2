package events

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Plans and dry-run, orchestrator side (DESIGN.md §10): the update
// request, its state, operation and outcomes, and the bucket in which the
// orchestrator gathers a dry run's four answers (never the registry: a dry
// run changes nothing there).

// SubjectTenantUpdateRequested asks for a new plan for an active tenant.
const SubjectTenantUpdateRequested = "tenant.update.requested"

// TenantUpdating is the state of a tenant while its new plan is applied.
const TenantUpdating TenantState = "updating"

// LifecyclePlan is the operation applying a new plan (apply_plan on every
// store).
const LifecyclePlan LifecycleKind = "plan"

// Plan tenant outcomes: the plan applied (by an update), and a dry run's
// answer.
const (
	TenantOutcomePlanApplied Outcome = "plan_applied"
	TenantOutcomePlanned     Outcome = "planned"
	// TenantOutcomePlanFailed: a store refused the new plan for good (a
	// limit it cannot enforce, an immutable setting); the tenant stays
	// active on its previous plan (stores that applied the new one keep
	// it: a plan is never rolled back), Reason says which and why.
	TenantOutcomePlanFailed Outcome = "plan_failed"
)

// UpdateRequested is the payload of tenant.update.requested.
type UpdateRequested struct {
	TenantID    string `json:"tenant_id"`
	Plan        string `json:"plan"`
	RequestID   string `json:"request_id,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
}

// Validate checks the tenant, the plan name and the optional fields.
func (m *UpdateRequested) Validate() error {
	if err := checkTenant(m, m.TenantID); err != nil {
		return err
	}
	if m.Plan == "" {
		return fieldErr(m, "plan", "required", nil)
	}
	if err := checkPlanName(m, m.Plan); err != nil {
		return err
	}
	if err := checkText(m, "request_id", m.RequestID, maxRequestIDLen); err != nil {
		return err
	}
	return checkText(m, "requested_by", m.RequestedBy, maxActorLen)
}

// DecodeUpdateRequested decodes and validates tenant.update.requested.
func DecodeUpdateRequested(data []byte) (*UpdateRequested, error) {
	return decode[UpdateRequested](data)
}

// checkPlanName checks an optional plan name's syntax (whether it exists
// is the orchestrator's configuration).
func checkPlanName(m Payload, name string) error {
	if name != "" && !planNamePattern.MatchString(name) {
		return fieldErr(m, "plan", fmt.Sprintf("%q is not a plan name (%s)", Truncate(name, 64), planNamePattern), ErrUnknownPlan)
	}
	return nil
}

// KVDryRuns holds the dry runs in flight, one key per dry run (its saga
// ID): the request and each store's answer, until the orchestrator has all
// four and answers tenant.planned. Keys expire after DryRunTTL.
const KVDryRuns = "dry-runs"

// DryRunTTL is how long a dry run's answers are kept.
const DryRunTTL = time.Hour

// DryRunSagaPrefix begins the saga ID of every dry run's commands: their
// results are gathered in KVDryRuns, never applied to a tenant record.
const DryRunSagaPrefix = "dry-run-"

// DryRuns returns the configuration of the dry runs' bucket.
func (t Topology) DryRuns() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:       KVDryRuns,
		Description:  "dry runs in flight: each store's answer until all are in",
		History:      1,
		TTL:          DryRunTTL,
		MaxValueSize: MaxPayloadBytes,
		Storage:      jetstream.FileStorage,
		Replicas:     t.replicas(),
	}
}
