package agent

import (
	"errors"
	"fmt"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// ErrConflict reports that a resource with the tenant's name exists and was
// not created by tenantprov. It is permanent: provisioning fails with reason
// "conflict" and the resource is never adopted or changed.
var ErrConflict = errors.New("resource exists and is not managed by tenantprov")

// PermanentError marks an error that retrying cannot fix. The runtime replies
// *_failed with Reason and terminates the message.
type PermanentError struct {
	Reason string // one of the events.Reason* codes
	Err    error
}

func (e *PermanentError) Error() string { return e.Reason + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent marks err as permanent with a reason code (events.Reason*).
func Permanent(reason string, err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Reason: reason, Err: err}
}

// Conflict returns a permanent error matching ErrConflict that names the
// foreign resource.
func Conflict(resource string) error {
	return &PermanentError{Reason: events.ReasonConflict, Err: fmt.Errorf("%s: %w", resource, ErrConflict)}
}

// Classify returns whether err is permanent and its reason code. ErrConflict
// is always permanent with reason "conflict"; other errors not wrapped by
// Permanent are transient ("store_error").
func Classify(err error) (permanent bool, reason string) {
	var pe *PermanentError
	if errors.As(err, &pe) {
		return true, pe.Reason
	}
	if errors.Is(err, ErrConflict) {
		return true, events.ReasonConflict
	}
	return false, events.ReasonStoreError
}
