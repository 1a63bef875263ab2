package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// AuditType names an audit event (DESIGN.md §7). It is also the last token
// of the event's subject, audit.<type>.
type AuditType string

// Audit event types.
const (
	AuditTenantProvisioningStarted   AuditType = "TENANT_PROVISIONING_STARTED"
	AuditStoreProvisioned            AuditType = "STORE_PROVISIONED"
	AuditStoreProvisionFailed        AuditType = "STORE_PROVISION_FAILED"
	AuditStoreDeprovisioned          AuditType = "STORE_DEPROVISIONED"
	AuditStoreDeprovisionFailed      AuditType = "STORE_DEPROVISION_FAILED"
	AuditSecretsSealed               AuditType = "SECRETS_SEALED"
	AuditTenantProvisioned           AuditType = "TENANT_PROVISIONED"
	AuditTenantRollbackStarted       AuditType = "TENANT_ROLLBACK_STARTED"
	AuditTenantRolledBack            AuditType = "TENANT_ROLLED_BACK"
	AuditTenantRequestRejected       AuditType = "TENANT_REQUEST_REJECTED"
	AuditTenantDeprovisioningStarted AuditType = "TENANT_DEPROVISIONING_STARTED"
	AuditTenantDeprovisioned         AuditType = "TENANT_DEPROVISIONED"
	// AuditResultRejected records a store result the orchestrator dropped
	// because it did not belong to the saga, generation or run in flight
	// (DESIGN.md §11). Its details never hold the result's credential.
	AuditResultRejected AuditType = "RESULT_REJECTED"
)

// AuditEvent is the payload of audit.<type>. Details is a JSON object that
// never holds a secret. EventID is unique and deterministic for the fact it
// records (see AuditEventID), so a replayed transition yields the same ID and
// the audit sink stores it once.
type AuditEvent struct {
	EventID    string          `json:"event_id"`
	Type       AuditType       `json:"type"`
	TenantID   string          `json:"tenant_id,omitempty"`
	Generation uint64          `json:"generation,omitempty"`
	SagaID     string          `json:"saga_id,omitempty"`
	Store      Store           `json:"store,omitempty"`
	Actor      string          `json:"actor"`
	OccurredAt time.Time       `json:"occurred_at"`
	Source     string          `json:"source"`
	Details    json.RawMessage `json:"details,omitempty"`
}

// AuditEventID is the deterministic ID of the audit event recording one
// fact: its type, for a tenant generation, optionally for one store, with an
// optional discriminator (a request ID for rejections, an attempt number).
func AuditEventID(t AuditType, tenant string, generation uint64, store Store, discriminator string) string {
	step := string(t)
	if discriminator != "" {
		step += ":" + discriminator
	}
	return MsgID{Kind: "audit", Tenant: tenant, Generation: generation, Store: store, Step: step}.String()
}

// Validate checks required fields, the type's shape, that OccurredAt is UTC
// and that Details, when present, is a JSON object.
func (m *AuditEvent) Validate() error {
	if m.EventID == "" {
		return fieldErr(m, "event_id", "required", nil)
	}
	if err := checkText(m, "event_id", m.EventID, maxEventIDLen); err != nil {
		return err
	}
	if !auditTypePattern.MatchString(string(m.Type)) {
		return fieldErr(m, "type", fmt.Sprintf("%q must match %s", Truncate(string(m.Type), 64), auditTypePattern), nil)
	}
	if m.TenantID != "" && m.Type != AuditTenantRequestRejected {
		if err := checkTenant(m, m.TenantID); err != nil {
			return err
		}
	}
	if len(m.TenantID) > 64 {
		return fieldErr(m, "tenant_id", "longer than 64 bytes", nil)
	}
	if m.Store != "" && !m.Store.Valid() {
		return fieldErr(m, "store", fmt.Sprintf("unknown store %q", Truncate(string(m.Store), 64)), ErrUnknownStore)
	}
	if err := checkText(m, "actor", m.Actor, maxActorLen); err != nil {
		return err
	}
	if m.Actor == "" {
		return fieldErr(m, "actor", "required", nil)
	}
	if m.Source == "" {
		return fieldErr(m, "source", "required", nil)
	}
	if m.OccurredAt.IsZero() {
		return fieldErr(m, "occurred_at", "required", nil)
	}
	if m.OccurredAt.Location() != time.UTC {
		return fieldErr(m, "occurred_at", "must be UTC", nil)
	}
	if len(m.Details) > 0 {
		d := bytes.TrimSpace(m.Details)
		if len(d) == 0 || d[0] != '{' || !json.Valid(d) {
			return fieldErr(m, "details", "must be a JSON object", nil)
		}
	}
	return nil
}

// DecodeAuditEvent decodes and validates an audit event.
func DecodeAuditEvent(data []byte) (*AuditEvent, error) {
	return decode[AuditEvent](data)
}
