package main

import (
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/tenantprov/tenantprov/pkg/auditlog"
)

// The JSON tenantctl audit prints: auditlog's types carry no json tags, so
// these views give them the snake_case names every other command uses
// (hashes in hex).

// auditRow is one audit record in `audit -o json`.
type auditRow struct {
	Seq        int64           `json:"seq"`
	EventID    string          `json:"event_id"`
	Type       string          `json:"type"`
	TenantID   string          `json:"tenant_id"`
	Generation uint64          `json:"generation"`
	SagaID     string          `json:"saga_id,omitempty"`
	Store      string          `json:"store,omitempty"`
	Actor      string          `json:"actor"`
	OccurredAt time.Time       `json:"occurred_at"`
	Source     string          `json:"source,omitempty"`
	Details    json.RawMessage `json:"details,omitempty"`
	PrevHash   string          `json:"prev_hash"`
	Hash       string          `json:"hash"`
	RecordedAt time.Time       `json:"recorded_at"`
}

func auditRows(recs []auditlog.Record) []auditRow {
	out := make([]auditRow, 0, len(recs))
	for _, r := range recs {
		out = append(out, auditRow{Seq: r.Seq, EventID: r.EventID, Type: string(r.Type), TenantID: r.TenantID, Generation: r.Generation,
			SagaID: r.SagaID, Store: string(r.Store), Actor: r.Actor, OccurredAt: r.OccurredAt, Source: r.Source, Details: r.Details,
			PrevHash: hex.EncodeToString(r.PrevHash), Hash: hex.EncodeToString(r.Hash), RecordedAt: r.RecordedAt})
	}
	return out
}

// auditVerification is what `audit --verify -o json` prints.
type auditVerification struct {
	OK      bool          `json:"ok"`
	Chain   chainReport   `json:"chain"`
	Anchors *anchorReport `json:"anchors,omitempty"`
	Problem string        `json:"problem,omitempty"`
}

type chainReport struct {
	Rows     int64       `json:"rows"`
	HeadSeq  int64       `json:"head_seq"`
	HeadHash string      `json:"head_hash"`
	Break    *chainBreak `json:"break,omitempty"`
}

type chainBreak struct {
	Seq     int64  `json:"seq"`
	EventID string `json:"event_id"`
	Problem string `json:"problem"`
	Detail  string `json:"detail"`
}

type anchorReport struct {
	Checked    int              `json:"checked"`
	Latest     *auditlog.Anchor `json:"latest,omitempty"`
	HeadSeq    int64            `json:"head_seq"`
	Unanchored int64            `json:"unanchored"`
	Mismatches []anchorMismatch `json:"mismatches"`
}

type anchorMismatch struct {
	Anchor  auditlog.Anchor `json:"anchor"`
	Problem string          `json:"problem"`
	Detail  string          `json:"detail"`
}

func newChainReport(r auditlog.VerifyReport) chainReport {
	c := chainReport{Rows: r.Rows, HeadSeq: r.HeadSeq, HeadHash: hex.EncodeToString(r.HeadHash)}
	if b := r.Break; b != nil {
		c.Break = &chainBreak{Seq: b.Seq, EventID: b.EventID, Problem: string(b.Problem), Detail: b.Detail}
	}
	return c
}

func newAnchorReport(r auditlog.AnchorReport) *anchorReport {
	a := &anchorReport{Checked: r.Checked, Latest: r.Latest, HeadSeq: r.HeadSeq, Unanchored: r.Unanchored(), Mismatches: []anchorMismatch{}}
	for _, m := range r.Mismatches {
		a.Mismatches = append(a.Mismatches, anchorMismatch{Anchor: m.Anchor, Problem: string(m.Problem), Detail: m.Detail})
	}
	return a
}
