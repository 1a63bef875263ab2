package auditlog

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// AnchorKey is the key in the JetStream KV bucket events.KVAuditAnchors
// under which the audit sink records the chain head. The bucket keeps the
// last AnchorHistory values of the key, so past anchors stay checkable.
const AnchorKey = "head"

// AnchorHistory is how many past anchors the bucket keeps (JetStream's
// maximum per key).
const AnchorHistory = jetstream.KeyValueMaxHistory

// Anchor is a chain head recorded outside the audit database (DESIGN.md
// §11). Whoever can rewrite the database (its owner, a superuser) cannot
// rewrite the anchor, so a later Verify that finds the anchored row
// missing, or with another hash, proves that rows were cut from the end or
// the chain was recomputed.
type Anchor struct {
	Seq        int64     `json:"seq"`         // the head row's seq
	Hash       string    `json:"hash"`        // its hash, hex
	EventID    string    `json:"event_id"`    // its event_id
	Rows       int64     `json:"rows"`        // rows in the chain up to it (seq is gapless from 1)
	RecordedAt time.Time `json:"recorded_at"` // its recorded_at (the database's clock)
	AnchoredAt time.Time `json:"anchored_at"` // when the anchor was written (the sink's clock)
	AnchoredBy string    `json:"anchored_by"` // which sink wrote it
	// Revision is the anchor's revision in the KV bucket (not stored).
	Revision uint64 `json:"-"`
}

// DecodeAnchor parses an anchor as stored in the bucket.
func DecodeAnchor(data []byte) (Anchor, error) {
	var a Anchor
	if err := json.Unmarshal(data, &a); err != nil {
		return a, fmt.Errorf("decode audit anchor: %w", err)
	}
	if h, err := hex.DecodeString(a.Hash); err != nil || len(h) != HashSize || a.Seq < 1 {
		return a, fmt.Errorf("decode audit anchor: seq %d hash %q is not a chain head", a.Seq, a.Hash)
	}
	return a, nil
}

// OpenAnchors opens the anchor bucket, which events.Topology.Ensure
// creates.
func OpenAnchors(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, events.KVAuditAnchors)
	if err != nil {
		return nil, fmt.Errorf("open kv %s: %w", events.KVAuditAnchors, err)
	}
	return kv, nil
}

// ReadAnchors returns every anchor the bucket still holds, oldest first;
// none (and no error) when nothing was ever anchored.
func ReadAnchors(ctx context.Context, kv jetstream.KeyValue) ([]Anchor, error) {
	hist, err := kv.History(ctx, AnchorKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", events.KVAuditAnchors, AnchorKey, err)
	}
	var out []Anchor
	for _, e := range hist {
		if e.Operation() != jetstream.KeyValuePut {
			// A deleted or purged anchor is itself a sign of tampering
			// (only the audit sink may write the bucket), reported as
			// an anchor that cannot be read.
			return out, fmt.Errorf("%w: the anchor history holds a %s at revision %d; anchors are only ever put, by the audit sink", ErrAnchorMismatch, e.Operation(), e.Revision())
		}
		a, err := DecodeAnchor(e.Value())
		if err != nil {
			return out, fmt.Errorf("%w: revision %d: %v", ErrAnchorMismatch, e.Revision(), err)
		}
		a.Revision = e.Revision()
		out = append(out, a)
	}
	return out, nil
}

// AnchorMismatch is an anchor that the database no longer agrees with. It
// matches ErrAnchorMismatch with errors.Is.
type AnchorMismatch struct {
	Anchor  Anchor
	Problem Problem // ProblemTruncated or ProblemAnchorHash
	Detail  string
}

func (m *AnchorMismatch) Error() string {
	return fmt.Sprintf("audit anchor seq %d (anchored %s by %s) contradicts the database: %s: %s",
		m.Anchor.Seq, m.Anchor.AnchoredAt.Format(time.RFC3339), m.Anchor.AnchoredBy, m.Problem, m.Detail)
}

// Is reports whether target is ErrAnchorMismatch.
func (m *AnchorMismatch) Is(target error) bool { return target == ErrAnchorMismatch }

// AnchorReport is what CheckAnchors found.
type AnchorReport struct {
	Checked    int              // anchors compared with the database
	Latest     *Anchor          // the highest anchored head, nil when none
	HeadSeq    int64            // the database's head when checked
	Mismatches []AnchorMismatch // anchors the database contradicts
}

// OK reports whether every anchor agrees with the database.
func (r AnchorReport) OK() bool { return len(r.Mismatches) == 0 }

// Unanchored is how many rows follow the latest anchor: rows that the
// anchors cannot vouch for yet (cut from the end, they would go unnoticed).
func (r AnchorReport) Unanchored() int64 {
	if r.Latest == nil {
		return r.HeadSeq
	}
	return max(r.HeadSeq-r.Latest.Seq, 0)
}

// CheckAnchors compares anchors with the database: each anchored row must
// still exist with the anchored hash and event_id. An anchored row that
// is missing means rows were cut from the end of the chain
// (ProblemTruncated); a different hash means the chain was recomputed
// from that row or earlier (ProblemAnchorHash). Read the anchors before
// walking the chain with Verify, so that every anchor names a row that
// existed when the walk began.
func CheckAnchors(ctx context.Context, db Querier, anchors []Anchor) (AnchorReport, error) {
	rep := AnchorReport{Checked: len(anchors)}
	headSeq, _, err := Head(ctx, db)
	if err != nil {
		return rep, err
	}
	rep.HeadSeq = headSeq
	if len(anchors) == 0 {
		return rep, nil
	}
	seqs := make([]int64, 0, len(anchors))
	for i := range anchors {
		seqs = append(seqs, anchors[i].Seq)
		if rep.Latest == nil || anchors[i].Seq > rep.Latest.Seq {
			rep.Latest = &anchors[i]
		}
	}
	rows, err := db.Query(ctx, `SELECT seq, hash, event_id FROM `+Table+` WHERE seq = ANY($1)`, seqs)
	if err != nil {
		return rep, fmt.Errorf("read anchored rows: %w", err)
	}
	type row struct {
		hash    []byte
		eventID string
	}
	found := map[int64]row{}
	for rows.Next() {
		var seq int64
		var r row
		if err := rows.Scan(&seq, &r.hash, &r.eventID); err != nil {
			rows.Close()
			return rep, fmt.Errorf("read anchored rows: %w", err)
		}
		found[seq] = r
	}
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("read anchored rows: %w", err)
	}
	for _, a := range anchors {
		if m := compareAnchor(a, found[a.Seq].hash, found[a.Seq].eventID, headSeq); m != nil {
			rep.Mismatches = append(rep.Mismatches, *m)
		}
	}
	return rep, nil
}

// compareAnchor checks one anchor against the row at its seq (hash nil
// when there is none).
func compareAnchor(a Anchor, hash []byte, eventID string, headSeq int64) *AnchorMismatch {
	if hash == nil {
		return &AnchorMismatch{Anchor: a, Problem: ProblemTruncated,
			Detail: fmt.Sprintf("anchored row %d (event %q) is not in the database, whose head is seq %d: rows were cut from the end of the chain", a.Seq, a.EventID, headSeq)}
	}
	if want, _ := hex.DecodeString(a.Hash); !bytes.Equal(hash, want) || eventID != a.EventID {
		return &AnchorMismatch{Anchor: a, Problem: ProblemAnchorHash,
			Detail: fmt.Sprintf("row %d has hash %s (event %q), anchored %s (event %q): the row was replaced (the chain was rewritten and recomputed, or cut and refilled)", a.Seq, hx(hash), eventID, a.Hash, a.EventID)}
	}
	return nil
}

// Anchorer records the chain head in the anchor bucket. Any number of sink
// replicas may anchor at once: writes are compare-and-set, and an anchor
// never moves backwards.
type Anchorer struct {
	kv jetstream.KeyValue
	db Querier
	by string
}

// NewAnchorer returns an Anchorer that reads the head from db and writes
// it to kv, naming itself by (e.g. "audit-sink@host").
func NewAnchorer(kv jetstream.KeyValue, db Querier, by string) *Anchorer {
	return &Anchorer{kv: kv, db: db, by: by}
}

// AnchorResult says what Anchor did.
type AnchorResult struct {
	Anchor  Anchor // the latest anchor after the call (zero when none)
	Written bool   // this call wrote it
}

// Anchor records the database's current head unless it is already
// anchored. Before it moves the anchor forward it checks that the
// database still holds the previously anchored row with its hash; if not,
// it returns an *AnchorMismatch (ErrAnchorMismatch) and writes nothing, so
// that the evidence of tampering is never overwritten by a head that
// agrees with the tampered database.
func (a *Anchorer) Anchor(ctx context.Context) (AnchorResult, error) {
	var res AnchorResult
	var rev uint64
	e, err := a.kv.Get(ctx, AnchorKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return res, fmt.Errorf("read %s/%s: %w", events.KVAuditAnchors, AnchorKey, err)
	default:
		prev, err := DecodeAnchor(e.Value())
		if err != nil {
			return res, fmt.Errorf("%w: %v", ErrAnchorMismatch, err)
		}
		prev.Revision, rev = e.Revision(), e.Revision()
		res.Anchor = prev
		var hash []byte
		var eventID string
		err = a.db.QueryRow(ctx, `SELECT hash, event_id FROM `+Table+` WHERE seq = $1`, prev.Seq).Scan(&hash, &eventID)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return res, fmt.Errorf("read anchored row %d: %w", prev.Seq, err)
		}
		headSeq, _, err := Head(ctx, a.db)
		if err != nil {
			return res, err
		}
		if m := compareAnchor(prev, hash, eventID, headSeq); m != nil {
			return res, m
		}
	}
	var next Anchor
	var headHash []byte
	err = a.db.QueryRow(ctx, `SELECT seq, hash, event_id, recorded_at FROM `+Table+` ORDER BY seq DESC LIMIT 1`).
		Scan(&next.Seq, &headHash, &next.EventID, &next.RecordedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("read chain head: %w", err)
	}
	if rev != 0 && next.Seq <= res.Anchor.Seq {
		return res, nil // already anchored (perhaps by another replica)
	}
	next.Hash = hex.EncodeToString(headHash)
	next.Rows, next.RecordedAt, next.AnchoredAt, next.AnchoredBy = next.Seq, next.RecordedAt.UTC(), time.Now().UTC(), a.by
	data, err := json.Marshal(next)
	if err != nil {
		return res, err
	}
	if rev == 0 {
		next.Revision, err = a.kv.Create(ctx, AnchorKey, data)
	} else {
		next.Revision, err = a.kv.Update(ctx, AnchorKey, data, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return res, nil // another replica anchored first; the next call catches up
	}
	if err != nil {
		return res, fmt.Errorf("write %s/%s: %w", events.KVAuditAnchors, AnchorKey, err)
	}
	return AnchorResult{Anchor: next, Written: true}, nil
}
