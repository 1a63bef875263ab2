package events

import (
	"strconv"
	"strings"
)

// Message headers. HeaderMsgID is JetStream's de-duplication header; the
// others let a consumer route or trace a message without decoding it.
const (
	HeaderMsgID      = "Nats-Msg-Id"
	HeaderTenantID   = "Tenantprov-Tenant-Id"
	HeaderGeneration = "Tenantprov-Generation"
	HeaderSagaID     = "Tenantprov-Saga-Id"
	HeaderSource     = "Tenantprov-Source"
	// HeaderTraceparent and HeaderTracestate are the W3C trace context
	// (pkg/telemetry): optional on every message, so that one tenant's
	// saga is one trace.
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// MsgID is the deterministic Nats-Msg-Id of a publish, built only from
// stable parts so that a retried publish of the same fact is dropped by
// JetStream as a duplicate (DESIGN.md §3). Attempt distinguishes deliberate
// retries of one step (a compensation sent again after a failure), so that
// they are not swallowed by the de-duplication window; it must itself come
// from durable state (the registry), never from a counter in memory.
type MsgID struct {
	Kind       string // "cmd", "evt", "tenant", "audit"
	Tenant     string // tenant ID as received (may be invalid for rejections)
	Generation uint64
	Store      Store  // empty when the message is not about one store
	Step       string // action, outcome or audit type
	Attempt    int    // 0 for the first attempt; omitted from the ID when 0
	Run        uint64 // execution number of a command (StoreResult.Run); omitted when 0
}

// String renders the ID, e.g. "cmd:acme:g3:minio:provision" or
// "cmd:acme:g3:minio:deprovision:a2".
func (m MsgID) String() string {
	var b strings.Builder
	b.WriteString(m.Kind)
	b.WriteByte(':')
	b.WriteString(m.Tenant)
	b.WriteString(":g")
	b.WriteString(strconv.FormatUint(m.Generation, 10))
	if m.Store != "" {
		b.WriteByte(':')
		b.WriteString(string(m.Store))
	}
	b.WriteByte(':')
	b.WriteString(m.Step)
	if m.Attempt > 0 {
		b.WriteString(":a")
		b.WriteString(strconv.Itoa(m.Attempt))
	}
	if m.Run > 0 {
		b.WriteString(":r")
		b.WriteString(strconv.FormatUint(m.Run, 10))
	}
	return b.String()
}

// CommandMsgID is the Nats-Msg-Id of a store command.
func CommandMsgID(c *StoreCommand) string {
	return MsgID{Kind: "cmd", Tenant: c.TenantID, Generation: c.Generation, Store: c.Store, Step: string(c.Action), Attempt: c.Attempt}.String()
}

// ResultMsgID is the Nats-Msg-Id of a store agent's reply. A provisioned
// reply also carries its CredentialID, so the reply to a redelivered command
// (which reset the credential) is not mistaken for a duplicate of the first;
// an observation carries its completion time.
func ResultMsgID(r *StoreResult) string {
	step := string(r.Outcome)
	if r.Outcome == OutcomeProvisioned && r.CredentialID != "" {
		step += ":" + r.CredentialID
	}
	if r.Outcome.Action() == ActionObserve {
		// A tenant is observed again and again in one generation: each
		// observation is its own fact, named by when it completed.
		step += ":" + strconv.FormatInt(r.CompletedAt.UnixNano(), 10)
	}
	return MsgID{Kind: "evt", Tenant: r.TenantID, Generation: r.Generation, Store: r.Store, Step: step, Attempt: r.Attempt, Run: r.Run}.String()
}
