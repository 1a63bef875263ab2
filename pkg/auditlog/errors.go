package auditlog

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns for one of these
// conditions matches the sentinel with errors.Is.
var (
	// ErrUnstorable reports an audit event that passed events.Validate but
	// cannot be recorded faithfully: a string holding NUL or invalid UTF-8
	// (PostgreSQL text and jsonb refuse both), a generation beyond 2^53-1
	// (not exact in the canonical JSON number form), or details whose
	// numbers do not fit an IEEE-754 double. Such an event is dead-lettered,
	// never retried.
	ErrUnstorable = errors.New("audit event cannot be stored")
	// ErrSchemaNotReady reports a database whose audit schema is missing or
	// older than this code needs; run the migrations (AUDIT_PG_ADMIN_URL).
	ErrSchemaNotReady = errors.New("audit schema not ready")
	// ErrWriterPrivileges reports a writer role that is not safe or not able
	// to write the audit log: it could alter history (superuser, owner or
	// member of the owner, UPDATE/DELETE/TRUNCATE granted) or it lacks
	// INSERT or SELECT.
	ErrWriterPrivileges = errors.New("audit writer role has the wrong privileges")
	// ErrMigrationChanged reports an applied migration whose embedded text
	// no longer matches the checksum recorded when it ran: migrations are
	// immutable once released; add a new one instead.
	ErrMigrationChanged = errors.New("applied audit migration was changed")
	// ErrChainBroken reports a chain that failed verification; the
	// *ChainBreak says where and how.
	ErrChainBroken = errors.New("audit chain broken")
	// ErrAnchorMismatch reports a chain head anchored outside the database
	// (events.KVAuditAnchors) that the database contradicts: the anchored
	// row is gone (rows cut from the end) or has another hash (the chain
	// was recomputed); or an anchor that was deleted or is unreadable. The
	// *AnchorMismatch says which.
	ErrAnchorMismatch = errors.New("audit chain contradicts its anchor")
	// ErrOwnerPrivileges reports a migration run as a superuser: the owner
	// of the audit log must be an ordinary role, so that the roles that
	// can disable its triggers are few and known (package doc).
	ErrOwnerPrivileges = errors.New("audit owner role has the wrong privileges")
)

// Problem names what is wrong with a row of the chain.
type Problem string

// Chain problems, in the order Verify checks them on each row.
const (
	// ProblemGap: the row's seq is not the previous row's seq + 1 (or the
	// first row is not seq 1): rows were deleted.
	ProblemGap Problem = "gap"
	// ProblemPrevHash: prev_hash differs from the previous row's hash (the
	// previous row's hash was rewritten, or rows were replaced).
	ProblemPrevHash Problem = "prev_hash_mismatch"
	// ProblemHash: hash differs from sha256(prev_hash ‖ canonical): the
	// canonical text or the hash was rewritten.
	ProblemHash Problem = "hash_mismatch"
	// ProblemContent: the row's columns no longer produce its canonical
	// text: a column (details, tenant_id, …) was rewritten after hashing.
	ProblemContent Problem = "content_mismatch"
	// ProblemTruncated: a row anchored outside the database is missing:
	// rows were cut from the end of the chain.
	ProblemTruncated Problem = "anchored_row_missing"
	// ProblemAnchorHash: a row anchored outside the database has another
	// hash or event: the chain was rewritten and recomputed.
	ProblemAnchorHash Problem = "anchored_hash_mismatch"
)

// ChainBreak is the first broken row Verify found. It matches
// ErrChainBroken with errors.Is.
type ChainBreak struct {
	Seq     int64   // seq of the broken row
	EventID string  // event_id of the broken row
	Problem Problem // what is wrong
	Detail  string  // for people: expected and found values
}

func (b *ChainBreak) Error() string {
	return fmt.Sprintf("audit chain broken at seq %d (event %q): %s: %s", b.Seq, b.EventID, b.Problem, b.Detail)
}

// Is reports whether target is ErrChainBroken.
func (b *ChainBreak) Is(target error) bool { return target == ErrChainBroken }

// unstorable wraps ErrUnstorable with the field at fault.
func unstorable(field, reason string) error {
	return fmt.Errorf("%w: field %s: %s", ErrUnstorable, field, reason)
}
