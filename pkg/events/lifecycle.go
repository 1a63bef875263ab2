package events

import (
	"fmt"
	"time"
)

// The lifecycle after provisioning (DESIGN.md §10): requests, store
// actions and outcomes, tenant states and audit types. Every request
// accepts request_id and requested_by, is idempotent, and is answered with
// tenant.rejected when the tenant's state does not allow it.

// Lifecycle request subjects (tenant.<verb>.requested).
const (
	SubjectTenantRotateRequested  = "tenant.rotate.requested"
	SubjectTenantSuspendRequested = "tenant.suspend.requested"
	SubjectTenantResumeRequested  = "tenant.resume.requested"
	SubjectTenantRestoreRequested = "tenant.restore.requested"
)

// Lifecycle store actions (store.cmd.<store>.<action>).
const (
	// ActionRotate gives the tenant a new credential (StoreCommand.Version)
	// next to the current one (StoreCommand.CredentialVersion); both work
	// until ActionRetire.
	ActionRotate Action = "rotate"
	// ActionRetire revokes every credential of the tenant except
	// StoreCommand.CredentialVersion and confirms they are refused.
	ActionRetire Action = "retire"
	// ActionSuspend refuses every credential of the tenant and ends its
	// sessions; data untouched. ActionResume undoes it.
	ActionSuspend Action = "suspend"
	ActionResume  Action = "resume"
	// ActionObserve compares the tenant's slice with what was provisioned
	// and, with StoreCommand.Repair, repairs grants and markers.
	ActionObserve Action = "observe"
)

// Lifecycle store outcomes (store.evt.<store>.<outcome>).
const (
	OutcomeRotated       Outcome = "rotated"
	OutcomeRotateFailed  Outcome = "rotate_failed"
	OutcomeRetired       Outcome = "retired"
	OutcomeRetireFailed  Outcome = "retire_failed"
	OutcomeSuspended     Outcome = "suspended"
	OutcomeSuspendFailed Outcome = "suspend_failed"
	OutcomeResumed       Outcome = "resumed"
	OutcomeResumeFailed  Outcome = "resume_failed"
	OutcomeObserved      Outcome = "observed"
	OutcomeObserveFailed Outcome = "observe_failed"
)

// Lifecycle tenant outcomes (tenant.<outcome>), published by the
// orchestrator.
const (
	TenantOutcomeRotated        Outcome = "rotated"
	TenantOutcomeRotationFailed Outcome = "rotation_failed"
	TenantOutcomeRetired        Outcome = "retired"
	TenantOutcomeSuspended      Outcome = "suspended"
	TenantOutcomeResumed        Outcome = "resumed"
	TenantOutcomeRetained       Outcome = "retained"
	TenantOutcomeRestored       Outcome = "restored"
)

// Lifecycle tenant states. rotating, suspending, resuming, retaining and
// restoring are in flight (a step waits for the agents); suspended and
// retained are settled. A retained tenant's purge runs as deprovisioning.
const (
	TenantRotating   TenantState = "rotating"
	TenantSuspending TenantState = "suspending"
	TenantSuspended  TenantState = "suspended"
	TenantResuming   TenantState = "resuming"
	TenantRetaining  TenantState = "retaining"
	TenantRetained   TenantState = "retained"
	TenantRestoring  TenantState = "restoring"
)

// Lifecycle audit types.
const (
	AuditCredentialsRotated        AuditType = "CREDENTIALS_ROTATED"
	AuditCredentialsRetired        AuditType = "CREDENTIALS_RETIRED"
	AuditCredentialsRotationFailed AuditType = "CREDENTIALS_ROTATION_FAILED"
	AuditTenantSuspended           AuditType = "TENANT_SUSPENDED"
	AuditTenantResumed             AuditType = "TENANT_RESUMED"
	AuditTenantRetained            AuditType = "TENANT_RETAINED"
	AuditTenantRestored            AuditType = "TENANT_RESTORED"
	AuditTenantPurged              AuditType = "TENANT_PURGED"
	AuditDriftDetected             AuditType = "DRIFT_DETECTED"
	AuditDriftRepaired             AuditType = "DRIFT_REPAIRED"
	AuditOrphanFound               AuditType = "ORPHAN_FOUND"
	AuditOrphanRemoved             AuditType = "ORPHAN_REMOVED"
)

// Drift is one difference between a store and what tenantprov provisioned
// there. It never holds a secret.
type Drift struct {
	// Kind is a stable, store-defined code, e.g. "grant_added",
	// "marker_missing", "resource_missing", "credential_refused".
	Kind string `json:"kind"`
	// Resource names the resource concerned (database, bucket, user, …).
	Resource string `json:"resource"`
	// Detail says what differs, for a person.
	Detail string `json:"detail,omitempty"`
	// DataLost is true when repairing would mean recreating data that is
	// gone; such drift is reported, never repaired automatically.
	DataLost bool `json:"data_lost,omitempty"`
}

// Observation is the last observation of one store's slice of a tenant,
// kept in the tenant's record.
type Observation struct {
	At         time.Time `json:"at"`
	Generation uint64    `json:"generation"`
	// Drift is what differed (open drift unless also in Repaired).
	Drift    []Drift `json:"drift,omitempty"`
	Repaired []Drift `json:"repaired,omitempty"`
	Error    string  `json:"error,omitempty"`
}

// RotateRequested is the payload of tenant.rotate.requested.
type RotateRequested struct {
	TenantID string `json:"tenant_id"`
	// Stores limits the rotation to these stores (all when empty).
	Stores []Store `json:"stores,omitempty"`
	// Grace is how long the old credential keeps working (a Go duration,
	// "24h"); the orchestrator's default and bounds apply.
	Grace       string `json:"grace,omitempty"`
	RequestID   string `json:"request_id,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
}

// Validate checks the tenant, the stores and the grace's syntax.
func (m *RotateRequested) Validate() error {
	if err := checkTenant(m, m.TenantID); err != nil {
		return err
	}
	for _, s := range m.Stores {
		if !s.Valid() {
			return fieldErr(m, "stores", fmt.Sprintf("unknown store %q", Truncate(string(s), 64)), ErrUnknownStore)
		}
	}
	if _, err := ParseRequestDuration(m.Grace); err != nil {
		return fieldErr(m, "grace", err.Error(), nil)
	}
	if err := checkText(m, "request_id", m.RequestID, maxRequestIDLen); err != nil {
		return err
	}
	return checkText(m, "requested_by", m.RequestedBy, maxActorLen)
}

// DecodeRotateRequested decodes and validates tenant.rotate.requested.
func DecodeRotateRequested(data []byte) (*RotateRequested, error) {
	return decode[RotateRequested](data)
}

// LifecycleRequested is the payload of tenant.suspend.requested,
// tenant.resume.requested and tenant.restore.requested.
type LifecycleRequested struct {
	TenantID    string `json:"tenant_id"`
	RequestID   string `json:"request_id,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
}

// Validate checks the tenant ID and the optional fields' limits.
func (m *LifecycleRequested) Validate() error {
	if err := checkTenant(m, m.TenantID); err != nil {
		return err
	}
	if err := checkText(m, "request_id", m.RequestID, maxRequestIDLen); err != nil {
		return err
	}
	return checkText(m, "requested_by", m.RequestedBy, maxActorLen)
}

// DecodeLifecycleRequested decodes and validates a suspend, resume or
// restore request.
func DecodeLifecycleRequested(data []byte) (*LifecycleRequested, error) {
	return decode[LifecycleRequested](data)
}

// ParseRequestDuration parses an optional duration field of a request
// ("" is zero): a Go duration, not negative. Bounds are the
// orchestrator's configuration.
func ParseRequestDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if len(s) > 32 {
		return 0, fmt.Errorf("longer than 32 bytes")
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("not a duration (want e.g. \"24h\"): %q", Truncate(s, 32))
	}
	if d < 0 {
		return 0, fmt.Errorf("negative")
	}
	return d, nil
}

// lifecycleActions pairs each lifecycle action with its success and
// failure outcomes.
var lifecycleActions = map[Action][2]Outcome{
	ActionRotate:  {OutcomeRotated, OutcomeRotateFailed},
	ActionRetire:  {OutcomeRetired, OutcomeRetireFailed},
	ActionSuspend: {OutcomeSuspended, OutcomeSuspendFailed},
	ActionResume:  {OutcomeResumed, OutcomeResumeFailed},
	ActionObserve: {OutcomeObserved, OutcomeObserveFailed},
	// plans and dry run (plan.go)
	ActionApplyPlan: {OutcomePlanApplied, OutcomeApplyPlanFailed},
	ActionPlan:      {OutcomePlanned, OutcomePlanFailed},
}

// Lifecycle reports whether a is one of the lifecycle actions (not
// provision or deprovision).
func (a Action) Lifecycle() bool { _, ok := lifecycleActions[a]; return ok }

// SuccessOutcome and FailureOutcome are the outcomes answering a.
func (a Action) SuccessOutcome() Outcome {
	switch a {
	case ActionProvision:
		return OutcomeProvisioned
	case ActionDeprovision:
		return OutcomeDeprovisioned
	}
	return lifecycleActions[a][0]
}

// FailureOutcome is the failure outcome answering a.
func (a Action) FailureOutcome() Outcome {
	switch a {
	case ActionProvision:
		return OutcomeProvisionFailed
	case ActionDeprovision:
		return OutcomeDeprovisionFailed
	}
	return lifecycleActions[a][1]
}

// TenantOutcomeSubjects are every tenant.<outcome> the orchestrator
// publishes: the saga's outcomes, the rejection, and the lifecycle's.
func TenantOutcomeSubjects() []string {
	var out []string
	for _, o := range []Outcome{TenantOutcomeProvisioned, TenantOutcomeProvisionFailed, TenantOutcomeDeprovisioned, TenantOutcomeRejected,
		TenantOutcomeRotated, TenantOutcomeRotationFailed, TenantOutcomeRetired, TenantOutcomeSuspended, TenantOutcomeResumed,
		TenantOutcomeRetained, TenantOutcomeRestored, TenantOutcomePlanApplied, TenantOutcomePlanned, TenantOutcomePlanFailed} {
		out = append(out, TenantOutcomeSubject(o))
	}
	return out
}
