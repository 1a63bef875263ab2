package events

import "time"

// The registry's view of the lifecycle after provisioning (DESIGN.md §10):
// the operation in flight, each store's lifecycle command, and the steps
// scheduled for later.

// LifecycleKind names a lifecycle operation on a tenant.
type LifecycleKind string

// Lifecycle operations.
const (
	LifecycleRotate  LifecycleKind = "rotate"  // new credentials, old ones kept for the grace
	LifecycleRetire  LifecycleKind = "retire"  // the grace ended: revoke the old credentials
	LifecycleSuspend LifecycleKind = "suspend" // credentials refused, data kept
	LifecycleResume  LifecycleKind = "resume"  // the same credentials work again
	LifecycleRetain  LifecycleKind = "retain"  // deprovision with retention: suspend, keep the data
	LifecycleRestore LifecycleKind = "restore" // a retained tenant back: resume, rotate, retire
	LifecyclePurge   LifecycleKind = "purge"   // a retained tenant's data removed (deprovisioning)
)

// LifecycleOp is the lifecycle operation in flight on a tenant. Its phases
// are store actions run on every store concerned in turn; Phase indexes the
// one running.
type LifecycleOp struct {
	// ID tells apart the operations of one generation (audit event and
	// outcome IDs carry it).
	ID          string        `json:"id"`
	Kind        LifecycleKind `json:"kind"`
	Phases      []Action      `json:"phases,omitempty"`
	Phase       int           `json:"phase"`
	Stores      []Store       `json:"stores,omitempty"`
	RequestID   string        `json:"request_id,omitempty"`
	RequestedBy string        `json:"requested_by,omitempty"`
	// GraceSeconds is how long a rotation keeps the old credentials;
	// RetainSeconds how long a retention keeps the data.
	GraceSeconds  int64     `json:"grace_seconds,omitempty"`
	RetainSeconds int64     `json:"retain_seconds,omitempty"`
	StartedAt     time.Time `json:"started_at"`
	// Sealing is set while a rotation waits for its new sealed file.
	Sealing bool `json:"sealing,omitempty"`
	// Rotated and Failed are what a rotation phase came to: the stores on
	// a new credential, and the stores that kept theirs (with the reason).
	Rotated []Store          `json:"rotated,omitempty"`
	Failed  map[Store]string `json:"failed,omitempty"`
	// Retire are the stores a retire phase revokes the old credentials of.
	Retire []Store `json:"retire,omitempty"`
	// Plan is the plan an update (LifecyclePlan) applies.
	Plan string `json:"plan,omitempty"`
}

// StoreStep is one store's last lifecycle command and its result. Attempt
// numbers the lifecycle commands sent to the store in this generation, so
// every command (and its message ID) is distinct.
type StoreStep struct {
	Action   Action     `json:"action"`
	Attempt  int        `json:"attempt"`
	State    string     `json:"state"` // StepSent, StepDone, StepFailed
	SentAt   *time.Time `json:"sent_at,omitempty"`
	Deadline *time.Time `json:"deadline,omitempty"`
	// Round is the attempt that began this step: a success of any attempt
	// from Round on completes it (a retry does not discard a slow success
	// of the attempt before it). Retries counts the re-sent commands (the
	// backoff).
	Round   int `json:"round,omitempty"`
	Retries int `json:"retries,omitempty"`
	// Version is the credential version a rotate creates, or a retire
	// keeps.
	Version int `json:"version,omitempty"`
	// ResultAttempt, Run and ResultSeq identify the result applied.
	ResultAttempt int    `json:"result_attempt,omitempty"`
	Run           uint64 `json:"run,omitempty"`
	ResultSeq     uint64 `json:"result_seq,omitempty"`
	Reason        string `json:"reason,omitempty"`
	Error         string `json:"error,omitempty"`
	// Prev is the credential a rotation replaced (to fall back to if the
	// new one cannot be sealed).
	Prev *SealedResult `json:"prev,omitempty"`
}

// Store step states.
const (
	StepSent   = "sent"
	StepDone   = "done"
	StepFailed = "failed"
)

// ScheduledStep is a step due at a time, kept in the record.
type ScheduledStep struct {
	Kind  LifecycleKind `json:"kind"` // LifecycleRetire or LifecyclePurge
	DueAt time.Time     `json:"due_at"`
	// Stores are the stores a retire concerns.
	Stores []Store `json:"stores,omitempty"`
	// Op is the operation that scheduled it.
	Op string `json:"op,omitempty"`
}
