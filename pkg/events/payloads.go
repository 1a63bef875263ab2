package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxPayloadBytes caps every payload this package decodes or encodes. A
// request that large is an attack or a bug; rejecting it early keeps a
// hostile publisher from making a replica allocate without bound.
const MaxPayloadBytes = 64 << 10

// Field limits.
const (
	maxRequestIDLen = 128
	maxActorLen     = 256
	maxLabels       = 64
	maxLabelValue   = 256
	maxReasonLen    = 1024
	maxSagaIDLen    = 128
	maxEventIDLen   = 256
)

var (
	labelKeyPattern  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)
	auditTypePattern = regexp.MustCompile(`^[A-Z][A-Z0-9_]{2,63}$`)
)

// Payload is implemented by every message type of the contract. Validate
// reports the first field that breaks the contract as a *PayloadError.
type Payload interface {
	Validate() error
}

// Encode validates p and marshals it. Nothing invalid is ever published.
func Encode(p Payload) ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	data, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", p, err)
	}
	if len(data) > MaxPayloadBytes {
		return nil, &PayloadError{Type: typeName(p), Reason: fmt.Sprintf("%d bytes exceeds the %d-byte limit", len(data), MaxPayloadBytes), Err: ErrPayloadTooLarge}
	}
	return data, nil
}

// decode is the one JSON decoder behind every Decode function: size cap
// first, then a JSON object (unknown fields tolerated), then Validate.
func decode[T any, P interface {
	*T
	Payload
}](data []byte) (*T, error) {
	var v T
	name := typeName(P(&v))
	if len(data) > MaxPayloadBytes {
		return nil, &PayloadError{Type: name, Reason: fmt.Sprintf("%d bytes exceeds the %d-byte limit", len(data), MaxPayloadBytes), Err: ErrPayloadTooLarge}
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, &PayloadError{Type: name, Reason: "not a JSON object"}
	}
	if err := json.Unmarshal(trimmed, &v); err != nil {
		return nil, &PayloadError{Type: name, Reason: "malformed JSON: " + Truncate(err.Error(), 200), Err: err}
	}
	if err := P(&v).Validate(); err != nil {
		return nil, err
	}
	return &v, nil
}

func typeName(p Payload) string {
	switch p.(type) {
	case *TenantRequested:
		return "TenantRequested"
	case *DeprovisionRequested:
		return "DeprovisionRequested"
	case *TenantOutcomeEvent:
		return "TenantOutcomeEvent"
	case *StoreCommand:
		return "StoreCommand"
	case *StoreResult:
		return "StoreResult"
	case *AuditEvent:
		return "AuditEvent"
	case *TenantRecord:
		return "TenantRecord"
	}
	return fmt.Sprintf("%T", p)
}

func fieldErr(p Payload, field, reason string, err error) error {
	return &PayloadError{Type: typeName(p), Field: field, Reason: reason, Err: err}
}

func checkTenant(p Payload, id string) error {
	if _, err := ParseTenantID(id); err != nil {
		return fieldErr(p, "tenant_id", err.Error(), err)
	}
	return nil
}

// checkText accepts printable UTF-8 without control characters, up to max
// bytes.
func checkText(p Payload, field, s string, max int) error {
	if len(s) > max {
		return fieldErr(p, field, fmt.Sprintf("longer than %d bytes", max), nil)
	}
	if !utf8.ValidString(s) {
		return fieldErr(p, field, "not valid UTF-8", nil)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fieldErr(p, field, "contains control characters", nil)
		}
	}
	return nil
}

// TenantRequested is the payload of tenant.requested. Only tenant_id is
// required: `nats pub tenant.requested '{"tenant_id":"acme"}'` is a complete
// request.
type TenantRequested struct {
	TenantID    string            `json:"tenant_id"`
	RequestID   string            `json:"request_id,omitempty"`
	RequestedBy string            `json:"requested_by,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	// Plan names the tenant's plan (plan.go; "" is DefaultPlanName).
	// DryRun asks every agent what a provision with the plan would do,
	// changing nothing (answered tenant.planned).
	Plan   string `json:"plan,omitempty"`
	DryRun bool   `json:"dry_run,omitempty"`
}

// Validate checks the tenant ID and the optional fields' limits.
func (m *TenantRequested) Validate() error {
	if err := checkTenant(m, m.TenantID); err != nil {
		return err
	}
	if err := checkPlanName(m, m.Plan); err != nil {
		return err
	}
	if err := checkText(m, "request_id", m.RequestID, maxRequestIDLen); err != nil {
		return err
	}
	if err := checkText(m, "requested_by", m.RequestedBy, maxActorLen); err != nil {
		return err
	}
	if len(m.Labels) > maxLabels {
		return fieldErr(m, "labels", fmt.Sprintf("more than %d labels", maxLabels), nil)
	}
	for k, v := range m.Labels {
		if !labelKeyPattern.MatchString(k) {
			return fieldErr(m, "labels", fmt.Sprintf("label key %q must match %s", Truncate(k, 64), labelKeyPattern), nil)
		}
		if err := checkText(m, "labels."+k, v, maxLabelValue); err != nil {
			return err
		}
	}
	return nil
}

// DecodeTenantRequested decodes and validates a tenant.requested payload.
func DecodeTenantRequested(data []byte) (*TenantRequested, error) {
	return decode[TenantRequested](data)
}

// DeprovisionRequested is the payload of tenant.deprovision.requested.
type DeprovisionRequested struct {
	TenantID    string `json:"tenant_id"`
	RequestID   string `json:"request_id,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
	// Retain keeps the tenant's data for this long (a Go duration,
	// "168h") with its credentials revoked, restorable with
	// tenant.restore.requested; then it is purged (DESIGN.md §10). Empty:
	// deprovision now. The orchestrator's bounds apply.
	Retain string `json:"retain,omitempty"`
}

// Validate checks the tenant ID, the retention's syntax and the optional
// fields' limits.
func (m *DeprovisionRequested) Validate() error {
	if err := checkTenant(m, m.TenantID); err != nil {
		return err
	}
	if _, err := ParseRequestDuration(m.Retain); err != nil {
		return fieldErr(m, "retain", err.Error(), nil)
	}
	if err := checkText(m, "request_id", m.RequestID, maxRequestIDLen); err != nil {
		return err
	}
	return checkText(m, "requested_by", m.RequestedBy, maxActorLen)
}

// DecodeDeprovisionRequested decodes and validates a
// tenant.deprovision.requested payload.
func DecodeDeprovisionRequested(data []byte) (*DeprovisionRequested, error) {
	return decode[DeprovisionRequested](data)
}

// TenantOutcomeEvent is the payload of tenant.provisioned,
// tenant.provision_failed, tenant.deprovisioned and tenant.rejected. For a
// rejection TenantID is whatever the request carried (possibly invalid or
// empty, truncated) and Reason says why.
type TenantOutcomeEvent struct {
	Outcome       Outcome   `json:"outcome"`
	TenantID      string    `json:"tenant_id"`
	Generation    uint64    `json:"generation,omitempty"`
	SagaID        string    `json:"saga_id,omitempty"`
	RequestID     string    `json:"request_id,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	SecretsRef    string    `json:"secrets_ref,omitempty"`
	SecretsSHA256 string    `json:"secrets_sha256,omitempty"`
	OccurredAt    time.Time `json:"occurred_at"`
	// Plan is the plan applied (plan_applied) or tried (planned); DryRun
	// is every store's answer to a dry run (planned), Failed the stores
	// that could not answer it and why (plan_orch.go).
	Plan   string            `json:"plan,omitempty"`
	DryRun map[Store]*DryRun `json:"dry_run,omitempty"`
	Failed map[Store]string  `json:"failed,omitempty"`
}

// Validate checks the outcome and that a rejection or failure says why.
func (m *TenantOutcomeEvent) Validate() error {
	switch m.Outcome {
	case TenantOutcomeProvisioned, TenantOutcomeDeprovisioned, TenantOutcomeRotated, TenantOutcomeRetired,
		TenantOutcomeSuspended, TenantOutcomeResumed, TenantOutcomeRetained, TenantOutcomeRestored:
		if err := checkTenant(m, m.TenantID); err != nil {
			return err
		}
		if m.Generation == 0 {
			return fieldErr(m, "generation", "required", nil)
		}
	case TenantOutcomeProvisionFailed, TenantOutcomeRotationFailed, TenantOutcomePlanFailed:
		if err := checkTenant(m, m.TenantID); err != nil {
			return err
		}
		if m.Reason == "" {
			return fieldErr(m, "reason", "required for "+string(m.Outcome), nil)
		}
	case TenantOutcomePlanApplied, TenantOutcomePlanned:
		if err := checkTenant(m, m.TenantID); err != nil {
			return err
		}
	case TenantOutcomeRejected:
		if m.Reason == "" {
			return fieldErr(m, "reason", "required for rejected", nil)
		}
		if len(m.TenantID) > 64 {
			return fieldErr(m, "tenant_id", "longer than 64 bytes", nil)
		}
	default:
		return fieldErr(m, "outcome", fmt.Sprintf("unknown outcome %q", Truncate(string(m.Outcome), 64)), nil)
	}
	if m.OccurredAt.IsZero() {
		return fieldErr(m, "occurred_at", "required", nil)
	}
	return checkText(m, "reason", m.Reason, maxReasonLen)
}

// DecodeTenantOutcomeEvent decodes and validates a tenant outcome payload.
func DecodeTenantOutcomeEvent(data []byte) (*TenantOutcomeEvent, error) {
	return decode[TenantOutcomeEvent](data)
}

// StoreCommand is the payload of store.cmd.<store>.<action>: what the
// orchestrator asks one agent to do for one generation of one tenant.
type StoreCommand struct {
	TenantID   string    `json:"tenant_id"`
	Generation uint64    `json:"generation"`
	SagaID     string    `json:"saga_id"`
	Store      Store     `json:"store"`
	Action     Action    `json:"action"`
	Attempt    int       `json:"attempt,omitempty"`
	IssuedAt   time.Time `json:"issued_at"`
	// Deadline is when the orchestrator stops waiting. An agent that
	// receives a provision command after its deadline answers
	// provision_failed (reason "expired") without touching the store.
	Deadline time.Time `json:"deadline"`

	// Lifecycle actions (DESIGN.md §10). CredentialVersion is the
	// credential version in use (rotate), to keep (retire) or expected
	// current (observe); Version is the new one (rotate).
	CredentialVersion int `json:"credential_version,omitempty"`
	Version           int `json:"version,omitempty"`
	// GraceSeconds is how long the old credential is meant to keep
	// working after a rotate (stores with their own expiry use it).
	GraceSeconds int64 `json:"grace_seconds,omitempty"`
	// Repair asks an observe to repair grants and markers.
	Repair bool `json:"repair,omitempty"`

	// Plan is the tenant's plan, only this store's section (plan.go):
	// required for apply_plan, optional for provision and plan (dry run).
	Plan *Plan `json:"plan,omitempty"`
}

// Validate checks every field; all are required except Attempt.
func (m *StoreCommand) Validate() error {
	if err := checkTenant(m, m.TenantID); err != nil {
		return err
	}
	if m.Generation == 0 {
		return fieldErr(m, "generation", "required (>= 1)", nil)
	}
	if m.SagaID == "" {
		return fieldErr(m, "saga_id", "required", nil)
	}
	if err := checkText(m, "saga_id", m.SagaID, maxSagaIDLen); err != nil {
		return err
	}
	if !m.Store.Valid() {
		return fieldErr(m, "store", fmt.Sprintf("unknown store %q", Truncate(string(m.Store), 64)), ErrUnknownStore)
	}
	if !m.Action.Valid() {
		return fieldErr(m, "action", fmt.Sprintf("unknown action %q", Truncate(string(m.Action), 64)), nil)
	}
	if m.Attempt < 0 {
		return fieldErr(m, "attempt", "negative", nil)
	}
	if m.IssuedAt.IsZero() {
		return fieldErr(m, "issued_at", "required", nil)
	}
	if m.Deadline.IsZero() {
		return fieldErr(m, "deadline", "required", nil)
	}
	switch m.Action {
	case ActionRotate:
		if m.CredentialVersion < 1 || m.Version <= m.CredentialVersion {
			return fieldErr(m, "version", fmt.Sprintf("rotate needs credential_version >= 1 and version > credential_version (got %d, %d)", m.CredentialVersion, m.Version), nil)
		}
	case ActionRetire:
		if m.CredentialVersion < 1 {
			return fieldErr(m, "credential_version", "retire needs the version to keep (>= 1)", nil)
		}
	}
	if m.CredentialVersion < 0 || m.Version < 0 || m.GraceSeconds < 0 {
		return fieldErr(m, "credential_version", "negative", nil)
	}
	return m.validatePlanCommand()
}

// DecodeStoreCommand decodes and validates a store command.
func DecodeStoreCommand(data []byte) (*StoreCommand, error) {
	return decode[StoreCommand](data)
}

// Failure reasons a store agent reports in StoreResult.Reason.
const (
	ReasonExpired      = "expired"             // the command arrived after its deadline; the store was not touched
	ReasonConflict     = "conflict"            // a resource with the tenant's name exists and is not ours
	ReasonInvalid      = "invalid"             // the command itself is invalid
	ReasonStoreError   = "store_error"         // the store refused or failed
	ReasonVerifyFailed = "verification_failed" // isolation checks did not pass
	ReasonUnsupported  = "unsupported"         // the store cannot give the isolation we promise (e.g. Qdrant without JWT RBAC)
)

// Check is one isolation check an agent ran before replying (DESIGN.md §4
// step 8): own access works, the canary and admin operations are denied, a
// wrong password is refused.
type Check struct {
	Name   string `json:"name"`
	Passed bool   `json:"passed"`
	Detail string `json:"detail,omitempty"`
}

// Verification is the result of an agent's isolation checks.
type Verification struct {
	Passed bool    `json:"passed"`
	Checks []Check `json:"checks"`
}

// StoreResult is the payload of store.evt.<store>.<outcome>: an agent's
// reply to one command. Credential is the only place a tenant secret
// travels, and only as an ASCII-armored age ciphertext to the control-plane
// recipient; its plaintext is the store's section of the secrets file
// (DESIGN.md §6) as a JSON object.
type StoreResult struct {
	TenantID   string  `json:"tenant_id"`
	Generation uint64  `json:"generation"`
	SagaID     string  `json:"saga_id"`
	Store      Store   `json:"store"`
	Outcome    Outcome `json:"outcome"`
	Attempt    int     `json:"attempt,omitempty"`
	// Run numbers the executions of one command: the agent sets it to the
	// JetStream delivery count of the command message it executed. An
	// agent executes one tenant's commands one at a time (a per-tenant
	// lock across replicas), so of two results of the same command the one
	// with the higher Run ran later and describes what the store holds.
	Run        uint64            `json:"run,omitempty"`
	Resources  map[string]string `json:"resources,omitempty"`
	Credential string            `json:"credential,omitempty"`
	// CredentialID is a random, non-secret identifier of this credential.
	// A redelivered provision command resets the tenant's credential, so
	// two provisioned results of one generation may carry different
	// credentials; the later one is what the store holds. CredentialID
	// keeps their message IDs apart and lets the orchestrator tell them
	// apart (and re-seal).
	CredentialID string        `json:"credential_id,omitempty"`
	Verification *Verification `json:"verification,omitempty"`
	// IsolationMode says how isolation is enforced where a store has more
	// than one way (Qdrant: "jwt_rbac" or "application").
	IsolationMode string    `json:"isolation_mode,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	Error         string    `json:"error,omitempty"`
	Warnings      []string  `json:"warnings,omitempty"`
	DurationMS    int64     `json:"duration_ms"`
	CompletedAt   time.Time `json:"completed_at"`

	// Lifecycle results (DESIGN.md §10). CredentialVersion is the version
	// of Credential (rotated) or the version kept (retired); Retired lists
	// the versions a retire revoked and confirmed refused; Drift and
	// Repaired are what an observe found and repaired.
	CredentialVersion int     `json:"credential_version,omitempty"`
	Retired           []int   `json:"retired,omitempty"`
	Drift             []Drift `json:"drift,omitempty"`
	Repaired          []Drift `json:"repaired,omitempty"`

	// Plans (plan.go): Limits is the plan section read back from the
	// store after apply_plan (or a provision with a plan); DryRun is a
	// plan command's answer.
	Limits *Plan   `json:"limits,omitempty"`
	DryRun *DryRun `json:"dry_run,omitempty"`
	// Usage is what the tenant uses of what a plan limits, as the store
	// reported it with the limits (keys in plan.go: UsageDatabaseBytes, …).
	Usage map[string]int64 `json:"usage,omitempty"`
	// TimingsMS breaks DurationMS down by step (optional, diagnostics
	// only): StepQueue, StepLock, StepProvision, StepVerify, StepSeal,
	// StepDeprovision, in milliseconds.
	TimingsMS map[string]float64 `json:"timings_ms,omitempty"`
}

// Validate checks identity fields, that a success carries what the
// orchestrator needs, and that a failure says why.
func (m *StoreResult) Validate() error {
	if err := checkTenant(m, m.TenantID); err != nil {
		return err
	}
	if m.Generation == 0 {
		return fieldErr(m, "generation", "required (>= 1)", nil)
	}
	if m.SagaID == "" {
		return fieldErr(m, "saga_id", "required", nil)
	}
	if !m.Store.Valid() {
		return fieldErr(m, "store", fmt.Sprintf("unknown store %q", Truncate(string(m.Store), 64)), ErrUnknownStore)
	}
	if !m.Outcome.Valid() {
		return fieldErr(m, "outcome", fmt.Sprintf("unknown outcome %q", Truncate(string(m.Outcome), 64)), nil)
	}
	switch m.Outcome {
	case OutcomeProvisioned, OutcomeRotated:
		if m.Outcome == OutcomeRotated && m.CredentialVersion < 2 {
			return fieldErr(m, "credential_version", "required for rotated (>= 2)", nil)
		}
		if m.Credential == "" {
			return fieldErr(m, "credential", "required for "+string(m.Outcome), nil)
		}
		if !bytes.HasPrefix([]byte(m.Credential), []byte("-----BEGIN AGE ENCRYPTED FILE-----")) {
			return fieldErr(m, "credential", "must be an armored age ciphertext", nil)
		}
		if m.Verification == nil {
			return fieldErr(m, "verification", "required for "+string(m.Outcome), nil)
		}
		if m.CredentialID == "" {
			return fieldErr(m, "credential_id", "required for "+string(m.Outcome), nil)
		}
		if err := checkText(m, "credential_id", m.CredentialID, 64); err != nil {
			return err
		}
	case OutcomeProvisionFailed, OutcomeDeprovisionFailed, OutcomeRotateFailed, OutcomeRetireFailed,
		OutcomeSuspendFailed, OutcomeResumeFailed, OutcomeObserveFailed:
		if m.Reason == "" {
			return fieldErr(m, "reason", "required for a failure", nil)
		}
	}
	if err := m.validatePlanResult(); err != nil {
		return err
	}
	if m.CompletedAt.IsZero() {
		return fieldErr(m, "completed_at", "required", nil)
	}
	return checkText(m, "error", m.Error, maxReasonLen)
}

// DecodeStoreResult decodes and validates a store agent's reply.
func DecodeStoreResult(data []byte) (*StoreResult, error) {
	return decode[StoreResult](data)
}
