package auditlog

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
)

// verifyPage is how many rows Verify reads per query. Paging by seq keeps
// every statement short, so a long walk never holds one snapshot or trips
// a statement timeout, and memory stays constant.
const verifyPage = 5000

// VerifyReport is the outcome of walking the chain.
type VerifyReport struct {
	// Rows is how many rows were checked (up to and including the broken
	// one, when there is one).
	Rows int64
	// HeadSeq and HeadHash are the last row that verified. An operator who
	// recorded them earlier can check that no row was removed from the end
	// since (the one change a chain cannot reveal by itself).
	HeadSeq  int64
	HeadHash []byte
	// Break is the first broken row, nil when the whole chain verified.
	Break *ChainBreak
}

// OK reports whether the whole chain verified.
func (r VerifyReport) OK() bool { return r.Break == nil }

// Err returns Break as an error (matching ErrChainBroken), or nil.
func (r VerifyReport) Err() error {
	if r.Break == nil {
		return nil
	}
	return r.Break
}

// Verify walks the chain in seq order and stops at the first broken row.
// Each row must have seq one more than its predecessor (the first seq 1),
// prev_hash equal to its predecessor's hash (the first GenesisHash), hash
// equal to sha256(prev_hash ‖ canonical), and columns that reproduce its
// canonical text. A broken chain is reported in VerifyReport.Break with a
// nil error; the error is only for failing to read.
//
// Verify needs SELECT on the table only; rows appended while it runs are
// verified too if it reaches them.
func Verify(ctx context.Context, db Querier) (VerifyReport, error) {
	var rep VerifyReport
	prevSeq, prevHash := int64(0), GenesisHash()
	for {
		rows, err := db.Query(ctx, `SELECT `+recordColumns+` FROM `+Table+` WHERE seq > $1 ORDER BY seq LIMIT $2`, prevSeq, verifyPage)
		if err != nil {
			return rep, fmt.Errorf("read audit chain after seq %d: %w", prevSeq, err)
		}
		n := 0
		for rows.Next() {
			r, err := scanRecord(rows)
			if err != nil {
				rows.Close()
				return rep, err
			}
			n++
			rep.Rows++
			if b := checkRow(&r, prevSeq, prevHash); b != nil {
				rows.Close()
				rep.Break = b
				return rep, nil
			}
			prevSeq, prevHash = r.Seq, r.Hash
			rep.HeadSeq, rep.HeadHash = r.Seq, r.Hash
		}
		if err := rows.Err(); err != nil {
			return rep, fmt.Errorf("read audit chain after seq %d: %w", prevSeq, err)
		}
		if n < verifyPage {
			return rep, nil
		}
	}
}

// checkRow checks one row against its predecessor.
func checkRow(r *Record, prevSeq int64, prevHash []byte) *ChainBreak {
	brk := func(p Problem, format string, args ...any) *ChainBreak {
		return &ChainBreak{Seq: r.Seq, EventID: r.EventID, Problem: p, Detail: fmt.Sprintf(format, args...)}
	}
	if r.Seq != prevSeq+1 {
		missing := fmt.Sprintf("rows %d–%d are missing", prevSeq+1, r.Seq-1)
		if r.Seq == prevSeq+2 {
			missing = fmt.Sprintf("row %d is missing", prevSeq+1)
		}
		if r.Seq <= prevSeq {
			missing = "seq out of order"
		}
		if prevSeq == 0 {
			return brk(ProblemGap, "the chain starts at seq %d, want 1 (%s)", r.Seq, missing)
		}
		return brk(ProblemGap, "seq %d follows seq %d (%s)", r.Seq, prevSeq, missing)
	}
	if !bytes.Equal(r.PrevHash, prevHash) {
		return brk(ProblemPrevHash, "prev_hash %s, but the hash of seq %d is %s", hx(r.PrevHash), prevSeq, hx(prevHash))
	}
	if want := ChainHash(r.PrevHash, []byte(r.Canonical)); !bytes.Equal(r.Hash, want) {
		return brk(ProblemHash, "hash %s, sha256(prev_hash ‖ canonical) is %s", hx(r.Hash), hx(want))
	}
	if err := r.CheckContent(); err != nil {
		return brk(ProblemContent, "%v", err)
	}
	return nil
}

func hx(b []byte) string { return hex.EncodeToString(b) }
