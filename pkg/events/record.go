package events

import (
	"encoding/json"
	"fmt"
	"time"
)

// TenantState is the state of a tenant in the registry (DESIGN.md §4).
type TenantState string

// Tenant states: provisioning → active | rolling_back → failed;
// active → deprovisioning → deprovisioned.
const (
	TenantProvisioning   TenantState = "provisioning"
	TenantActive         TenantState = "active"
	TenantRollingBack    TenantState = "rolling_back"
	TenantFailed         TenantState = "failed"
	TenantDeprovisioning TenantState = "deprovisioning"
	TenantDeprovisioned  TenantState = "deprovisioned"
)

// InFlight reports whether a saga is running for a tenant in state s.
func (s TenantState) InFlight() bool {
	switch s {
	case TenantProvisioning, TenantRollingBack, TenantDeprovisioning,
		TenantRotating, TenantSuspending, TenantResuming, TenantRetaining, TenantRestoring, TenantUpdating:
		return true
	}
	return false
}

// Terminal reports whether s ends a generation (a new request starts a new
// one).
func (s TenantState) Terminal() bool { return s == TenantFailed || s == TenantDeprovisioned }

// StoreState is the state of one store's slice within a tenant generation.
type StoreState string

// Per-store states.
const (
	StorePending        StoreState = "pending"
	StoreProvisioned    StoreState = "provisioned"
	StoreFailed         StoreState = "failed"
	StoreDeprovisioning StoreState = "deprovisioning"
	StoreDeprovisioned  StoreState = "deprovisioned"
)

// StoreStatus is one store's part of a tenant record: what exists, since
// when, and what went wrong. It never holds a secret.
type StoreStatus struct {
	State         StoreState        `json:"state"`
	Resources     map[string]string `json:"resources,omitempty"`
	Verified      bool              `json:"verified,omitempty"`
	IsolationMode string            `json:"isolation_mode,omitempty"`
	Attempt       int               `json:"attempt,omitempty"`
	StartedAt     *time.Time        `json:"started_at,omitempty"`
	CompletedAt   *time.Time        `json:"completed_at,omitempty"`
	DurationMS    int64             `json:"duration_ms,omitempty"`
	Reason        string            `json:"reason,omitempty"`
	Error         string            `json:"error,omitempty"`
	Warnings      []string          `json:"warnings,omitempty"`
	// CommandSentAt is when the last command to this store was published;
	// with Attempt it drives the compensation backoff after a restart.
	CommandSentAt *time.Time `json:"command_sent_at,omitempty"`
	// CredentialID names the credential the store holds, and
	// CredentialSeq is the STORE_EVENTS sequence of the provisioned result
	// that carries it (age-encrypted): the orchestrator reads it back from
	// the stream to seal it, so the registry never holds a credential in
	// any form. ResultSeq is the sequence of the last provision result
	// applied, so a redelivered result is recognised.
	CredentialID  string `json:"credential_id,omitempty"`
	CredentialSeq uint64 `json:"credential_seq,omitempty"`
	ResultSeq     uint64 `json:"result_seq,omitempty"`
	// Attempt (above) numbers the deprovision commands sent to this store
	// in this generation (1 for the first); Round is the attempt that
	// began the current compensation round. A deprovisioned result of any
	// attempt from Round on completes the round: a retry after a backoff
	// does not discard a slow success of the attempt before it, while a
	// provision that ran after an earlier round starts a new one.
	Round int `json:"round,omitempty"`
	// FailedAttempt is the latest deprovision attempt answered
	// deprovision_failed. While it is below Attempt the latest command has
	// not been answered: the saga does not send another while the store's
	// agents show they are working (it waits in their queue or runs).
	FailedAttempt int `json:"failed_attempt,omitempty"`
	// ProvisionAttempt numbers the provision commands sent to this store
	// in this generation (0 for the first; a re-provision of an active
	// tenant's store after a failed re-run sends the next).
	ProvisionAttempt int `json:"provision_attempt,omitempty"`
	// ProvisionDeadline is the Deadline of the latest provision command:
	// no execution of it touches the store after that instant.
	ProvisionDeadline *time.Time `json:"provision_deadline,omitempty"`
	// ResultAttempt and Run order the provision results of this store:
	// the provision attempt and the Run (JetStream delivery count) of the
	// last one applied. A result that is not newer is never applied.
	ResultAttempt int    `json:"result_attempt,omitempty"`
	Run           uint64 `json:"run,omitempty"`
	// CredentialVersion is the version of the credential the sealed file
	// holds for this store (1 after provisioning; each rotation adds one).
	CredentialVersion int `json:"credential_version,omitempty"`
	// Observation is the last observation of this store's slice (drift).
	Observation *Observation `json:"observation,omitempty"`
	// Step is the store's last lifecycle command (rotate, retire, suspend,
	// resume) and what came of it (lifecycle_record.go).
	Step *StoreStep `json:"step,omitempty"`
	// Limits are the plan limits the store read back when it last applied
	// the tenant's plan, Usage what the tenant used of them then
	// (plan_orch.go).
	Limits *Plan            `json:"limits,omitempty"`
	Usage  map[string]int64 `json:"usage,omitempty"`
	// TimingsMS is the agent's per-step breakdown of its last applied
	// result (StoreResult.TimingsMS) plus StepResult: from the agent's
	// completion to the orchestrator applying the result. Diagnostics.
	TimingsMS map[string]float64 `json:"timings_ms,omitempty"`
}

// PastGeneration is what the registry keeps of an earlier generation of a
// tenant: enough to recognise its late results (saga ID) and to compensate
// a store that one of them says holds resources again.
type PastGeneration struct {
	Generation uint64                 `json:"generation"`
	SagaID     string                 `json:"saga_id"`
	State      TenantState            `json:"state"`
	Stores     map[Store]*StoreStatus `json:"stores"`
}

// EffectKind is what an outbox entry does.
type EffectKind string

// Outbox effect kinds.
const (
	EffectCommand       EffectKind = "command"        // publish a store command
	EffectOutcome       EffectKind = "outcome"        // publish tenant.<outcome>
	EffectAudit         EffectKind = "audit"          // publish an audit event
	EffectPutSecrets    EffectKind = "put_secrets"    // seal the credentials and put <id>.sops.yaml
	EffectDeleteSecrets EffectKind = "delete_secrets" // delete <id>.sops.yaml
)

// Effect is one pending side effect of a saga step, written into the
// record by the same compare-and-set as the step. Whoever finds it pending
// executes it (idempotently: publishes carry MsgID) and removes it with
// another compare-and-set.
type Effect struct {
	ID         string          `json:"id"`
	Kind       EffectKind      `json:"kind"`
	Generation uint64          `json:"generation"`
	Subject    string          `json:"subject,omitempty"`
	MsgID      string          `json:"msg_id,omitempty"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	// Announces is the settled state an outcome effect announces.
	Announces TenantState `json:"announces,omitempty"`
	// Seal names the provisioned results a put_secrets effect seals.
	Seal *SealSpec `json:"seal,omitempty"`
	// Trace is the W3C trace context (traceparent, tracestate) of the
	// step that decided this effect: whoever executes it — after a
	// restart, on another replica — continues that trace. Optional.
	Trace map[string]string `json:"trace,omitempty"`
}

// SealSpec is the content of a sealed secrets file by reference: for each
// store, the STORE_EVENTS sequence and credential ID of the provisioned
// result whose (age-encrypted) credential goes into the file.
type SealSpec struct {
	ID      string                 `json:"id"`
	Results map[Store]SealedResult `json:"results"`
}

// SealedResult references one provisioned (or rotated) result.
type SealedResult struct {
	Seq          uint64 `json:"seq"`
	CredentialID string `json:"credential_id"`
	// CredentialVersion is the credential's version (0 or 1: as
	// provisioned; a rotated result's version otherwise).
	CredentialVersion int `json:"credential_version,omitempty"`
}

// SecretsRef points at a tenant's sealed secrets in the tenant-secrets
// object store.
type SecretsRef struct {
	Bucket string `json:"bucket"`
	Object string `json:"object"`
	SHA256 string `json:"sha256"`
	// SealID names the seal (SealSpec.ID) the object holds; the object
	// carries it in its metadata.
	SealID string `json:"seal_id,omitempty"`
}

// TenantRecord is the value stored under the tenant ID in KV bucket
// "tenants". It is JSON a person can read with `nats kv get tenants <id>`,
// and every write of it is a compare-and-set on the KV revision.
type TenantRecord struct {
	TenantID    string                 `json:"tenant_id"`
	State       TenantState            `json:"state"`
	Generation  uint64                 `json:"generation"`
	SagaID      string                 `json:"saga_id"`
	RequestID   string                 `json:"request_id,omitempty"`
	RequestedBy string                 `json:"requested_by,omitempty"`
	Labels      map[string]string      `json:"labels,omitempty"`
	Stores      map[Store]*StoreStatus `json:"stores"`
	Secrets     *SecretsRef            `json:"secrets,omitempty"`
	Reason      string                 `json:"reason,omitempty"`
	LastError   string                 `json:"last_error,omitempty"`
	// Deadline is when the running provisioning saga gives up and rolls
	// back. It lives here, not in a timer, so any replica recomputes it
	// after a restart.
	Deadline *time.Time `json:"deadline,omitempty"`
	// Announced is the last settled state (active, failed, deprovisioned)
	// whose audit event and tenant.<outcome> were published: an outbox
	// marker, so a process that died between the state change and the
	// announcement completes it after restart.
	Announced TenantState `json:"announced,omitempty"`
	// RequestSeq is the TENANTS stream sequence of the tenant.requested
	// that started this generation; DeprovisionSeq that of the
	// tenant.deprovision.requested that started its deprovisioning. A
	// redelivered request at or below them was already handled.
	RequestSeq     uint64 `json:"request_seq,omitempty"`
	DeprovisionSeq uint64 `json:"deprovision_seq,omitempty"`
	// ObjectSeen is the modification time of the sealed secrets object
	// (or of its deletion) as last observed: observations are applied in
	// that order, so a late one never undoes a newer one.
	ObjectSeen *time.Time `json:"object_seen,omitempty"`
	// Lifecycle is the lifecycle operation in flight (rotate, retire,
	// suspend, resume, retain, restore, purge), nil when none is.
	Lifecycle *LifecycleOp `json:"lifecycle,omitempty"`
	// Scheduled is a step due at a time (retire the credentials a rotation
	// replaced, purge a retained tenant): it lives in the record, so any
	// replica executes it when due, after any restart.
	Scheduled *ScheduledStep `json:"scheduled,omitempty"`
	// LifecycleSeq is the TENANTS stream sequence of the last lifecycle
	// request (rotate, suspend, resume, restore) handled, and
	// LifecycleRequestIDs the request_ids of the last ones that started an
	// operation (a retention's too; newest last, a few): a redelivered or
	// repeated request changes nothing.
	LifecycleSeq        uint64   `json:"lifecycle_seq,omitempty"`
	LifecycleRequestIDs []string `json:"lifecycle_request_ids,omitempty"`
	// Past holds earlier generations that may still answer (newest first).
	Past []*PastGeneration `json:"past,omitempty"`
	// Outbox holds the effects of applied steps not yet executed, in
	// order; EffectSeq numbers them.
	Outbox    []*Effect `json:"outbox,omitempty"`
	EffectSeq uint64    `json:"effect_seq,omitempty"`
	// Trace is the W3C trace context (traceparent, tracestate) of the
	// request that started the running saga (provisioning with its
	// rollback, or deprovisioning): the saga's trace, which work with no
	// message of its own to follow (the reconciler's) continues. Optional.
	Trace map[string]string `json:"trace,omitempty"`
	// Timings is where the current (or last) saga's time went: see
	// SagaTimings. Diagnostics only; no decision depends on it.
	Timings   *SagaTimings `json:"timings,omitempty"`
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`
	// Plan is the tenant's plan (plan.go): set when provisioning starts
	// and when an update (tenant.update.requested) has applied a new one.
	Plan string `json:"plan,omitempty"`
}

// Validate checks the identity fields and every state value.
func (m *TenantRecord) Validate() error {
	if err := checkTenant(m, m.TenantID); err != nil {
		return err
	}
	switch m.State {
	case TenantProvisioning, TenantActive, TenantRollingBack, TenantFailed, TenantDeprovisioning, TenantDeprovisioned,
		TenantRotating, TenantSuspending, TenantSuspended, TenantResuming, TenantRetaining, TenantRetained, TenantRestoring, TenantUpdating:
	default:
		return fieldErr(m, "state", fmt.Sprintf("unknown state %q", Truncate(string(m.State), 64)), nil)
	}
	if m.Generation == 0 {
		return fieldErr(m, "generation", "required (>= 1)", nil)
	}
	for s, st := range m.Stores {
		if !s.Valid() {
			return fieldErr(m, "stores", fmt.Sprintf("unknown store %q", Truncate(string(s), 64)), ErrUnknownStore)
		}
		if st == nil {
			return fieldErr(m, "stores."+string(s), "null", nil)
		}
		switch st.State {
		case StorePending, StoreProvisioned, StoreFailed, StoreDeprovisioning, StoreDeprovisioned:
		default:
			return fieldErr(m, "stores."+string(s)+".state", fmt.Sprintf("unknown state %q", Truncate(string(st.State), 64)), nil)
		}
	}
	return nil
}

// DecodeTenantRecord decodes and validates a registry record.
func DecodeTenantRecord(data []byte) (*TenantRecord, error) {
	return decode[TenantRecord](data)
}
