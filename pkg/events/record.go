package events

import (
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
	return s == TenantProvisioning || s == TenantRollingBack || s == TenantDeprovisioning
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
	// ResultSeq is the STORE_EVENTS sequence of the last result applied
	// for this store, so a redelivered result is recognised. For a
	// provisioned store it is, with CredentialID, the result whose
	// (age-encrypted) credential is sealed: the orchestrator reads it back
	// from the stream at that sequence, so the registry never holds a
	// credential in any form.
	CredentialID string `json:"credential_id,omitempty"`
	ResultSeq    uint64 `json:"result_seq,omitempty"`
}

// SecretsRef points at a tenant's sealed secrets in the tenant-secrets
// object store.
type SecretsRef struct {
	Bucket string `json:"bucket"`
	Object string `json:"object"`
	SHA256 string `json:"sha256"`
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
	CreatedAt time.Time   `json:"created_at"`
	UpdatedAt time.Time   `json:"updated_at"`
}

// Validate checks the identity fields and every state value.
func (m *TenantRecord) Validate() error {
	if err := checkTenant(m, m.TenantID); err != nil {
		return err
	}
	switch m.State {
	case TenantProvisioning, TenantActive, TenantRollingBack, TenantFailed, TenantDeprovisioning, TenantDeprovisioned:
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
