package auditlog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Record is one stored row of the audit log.
type Record struct {
	Seq        int64
	EventID    string
	Type       events.AuditType
	TenantID   string
	Generation uint64
	SagaID     string
	Store      events.Store
	Actor      string
	OccurredAt time.Time // UTC, microsecond precision
	Source     string
	Details    json.RawMessage // as PostgreSQL's jsonb renders it
	Canonical  string          // the exact text that was hashed
	PrevHash   []byte
	Hash       []byte
	RecordedAt time.Time // UTC, the database's clock at insert
}

// Event returns the audit event the row holds.
func (r *Record) Event() events.AuditEvent {
	return events.AuditEvent{
		EventID: r.EventID, Type: r.Type, TenantID: r.TenantID, Generation: r.Generation,
		SagaID: r.SagaID, Store: r.Store, Actor: r.Actor, OccurredAt: r.OccurredAt,
		Source: r.Source, Details: r.Details,
	}
}

// CheckContent reports whether the row's columns still produce its
// canonical text (nil when they do).
func (r *Record) CheckContent() error {
	ev := r.Event()
	c, err := Canonical(&ev)
	if err != nil {
		return fmt.Errorf("columns do not form a storable event: %w", err)
	}
	if !bytes.Equal(c, []byte(r.Canonical)) {
		return fmt.Errorf("columns give canonical %s, stored canonical is %s", events.Truncate(string(c), 300), events.Truncate(r.Canonical, 300))
	}
	return nil
}

// recordColumns is the select list scanRecord reads, in order.
const recordColumns = `seq, event_id, type, tenant_id, generation, saga_id, store, actor,
	occurred_at, source, details::text, canonical, prev_hash, hash, recorded_at`

func scanRecord(rows pgx.Rows) (Record, error) {
	var r Record
	var typ, store, details string
	var gen int64
	err := rows.Scan(&r.Seq, &r.EventID, &typ, &r.TenantID, &gen, &r.SagaID, &store, &r.Actor,
		&r.OccurredAt, &r.Source, &details, &r.Canonical, &r.PrevHash, &r.Hash, &r.RecordedAt)
	if err != nil {
		return r, fmt.Errorf("scan audit row: %w", err)
	}
	r.Type, r.Store, r.Details = events.AuditType(typ), events.Store(store), json.RawMessage(details)
	r.Generation = uint64(max(gen, 0))
	r.OccurredAt, r.RecordedAt = r.OccurredAt.UTC(), r.RecordedAt.UTC()
	return r, nil
}
