package auditlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what the read side needs: *pgx.Conn, *pgxpool.Pool and
// pgx.Tx all satisfy it.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// TxBeginner starts transactions: *pgx.Conn and *pgxpool.Pool satisfy it.
type TxBeginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Outcome is what Append did with one entry.
type Outcome struct {
	// Seq is the entry's place in the chain: the new row's, or the
	// existing row's for a duplicate.
	Seq int64
	// Duplicate is true when a row with the same event_id already existed
	// (or came earlier in the same call); nothing was written for it.
	Duplicate bool
}

// Append writes entries to the chain in one transaction and returns one
// Outcome per entry, in order. It is idempotent on event_id: an entry
// whose event_id is already stored, or repeated within entries, is skipped
// and reported as a duplicate. When Append returns nil, the transaction has
// committed; when it returns an error, nothing was written.
//
// Appends serialise on a transaction-level advisory lock taken before the
// head is read, so any number of writers (sink replicas) keep the chain
// gapless and correctly linked; the INSERT trigger re-checks the link, so a
// writer that skipped the lock fails instead of forking the chain.
func Append(ctx context.Context, db TxBeginner, entries []*Entry) ([]Outcome, error) {
	out := make([]Outcome, len(entries))
	if len(entries) == 0 {
		return out, nil
	}
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.Event.EventID
	}
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// One round trip: lock, existing IDs, head.
		b := &pgx.Batch{}
		b.Queue(`SELECT pg_advisory_xact_lock($1, $2)`, lockClass, lockChain)
		b.Queue(`SELECT event_id, seq FROM `+Table+` WHERE event_id = ANY($1)`, ids)
		b.Queue(`SELECT seq, hash FROM ` + Table + ` ORDER BY seq DESC LIMIT 1`)
		br := tx.SendBatch(ctx, b)
		if _, err := br.Exec(); err != nil {
			br.Close()
			return fmt.Errorf("take chain lock: %w", err)
		}
		existing := map[string]int64{}
		rows, err := br.Query()
		if err != nil {
			br.Close()
			return fmt.Errorf("look up event ids: %w", err)
		}
		for rows.Next() {
			var id string
			var seq int64
			if err := rows.Scan(&id, &seq); err != nil {
				rows.Close()
				br.Close()
				return err
			}
			existing[id] = seq
		}
		if err := rows.Err(); err != nil {
			br.Close()
			return fmt.Errorf("look up event ids: %w", err)
		}
		var headSeq int64
		headHash := GenesisHash()
		if err := br.QueryRow().Scan(&headSeq, &headHash); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			br.Close()
			return fmt.Errorf("read chain head: %w", err)
		}
		if err := br.Close(); err != nil {
			return err
		}

		ins := &pgx.Batch{}
		for i, e := range entries {
			if seq, ok := existing[e.Event.EventID]; ok {
				out[i] = Outcome{Seq: seq, Duplicate: true}
				continue
			}
			headSeq++
			hash := ChainHash(headHash, e.Canonical)
			ev := &e.Event
			ins.Queue(`INSERT INTO `+Table+` (seq, event_id, type, tenant_id, generation, saga_id, store, actor,
				occurred_at, source, details, canonical, prev_hash, hash)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13, $14)`,
				headSeq, ev.EventID, string(ev.Type), ev.TenantID, int64(ev.Generation), ev.SagaID, string(ev.Store), ev.Actor,
				ev.OccurredAt, ev.Source, string(ev.Details), string(e.Canonical), headHash, hash)
			existing[ev.EventID] = headSeq
			out[i] = Outcome{Seq: headSeq}
			headHash = hash
		}
		if ins.Len() == 0 {
			return nil
		}
		if err := tx.SendBatch(ctx, ins).Close(); err != nil {
			return fmt.Errorf("insert audit events: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// IsDataError reports whether err is PostgreSQL refusing the data itself
// (SQLSTATE class 22, or a CHECK or NOT NULL violation): retrying the same
// entry can never succeed. Chain-link and unique violations are not data
// errors: they mean another writer moved the head, and a retry succeeds.
func IsDataError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch {
	case len(pgErr.Code) == 5 && pgErr.Code[:2] == "22":
		return true
	case pgErr.Code == "23514", pgErr.Code == "23502": // check_violation, not_null_violation
		return true
	}
	return false
}
