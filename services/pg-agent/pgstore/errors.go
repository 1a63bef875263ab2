package pgstore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// ErrUnsupportedPassword reports a password this package cannot turn into a
// SCRAM verifier that every client computes the same way (it must be
// non-empty printable ASCII without spaces, as secret.Generate's are). It
// is permanent.
var ErrUnsupportedPassword = errors.New("password must be non-empty printable ASCII without spaces")

// ErrInvalidRequest reports a request the store refuses before touching
// PostgreSQL (an unvalidated tenant ID, a credential for another tenant). It
// is permanent.
var ErrInvalidRequest = errors.New("invalid request")

// ErrStaleGeneration reports a command for an older generation of a tenant
// than the one whose resources exist. Provision refuses it (permanently)
// rather than resetting the current generation's password.
var ErrStaleGeneration = errors.New("stale generation")

// invalid marks err as a permanent "invalid" failure.
func invalid(err error) error { return agent.Permanent(events.ReasonInvalid, err) }

// wrap adds what was being done to a driver error and decides whether
// retrying can help. Server errors of classes 0A (feature not supported),
// 22 (data exception) and 42 (syntax error or access rule violation — the
// admin role lacks a privilege, say) are permanent; everything else —
// connection failures, timeouts, serialisation failures, a server shutting
// down — is transient. The message never holds a password: statements carry
// only verifiers, and connection errors are stripped of the pgconn.Config
// they carry.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%s: %w", op, scrubConnectError(err))
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "42P04", pe.Code == "42710":
			// duplicate database / role: lost a race with a concurrent
			// create; the retry sees it.
			return err
		case strings.HasPrefix(pe.Code, "0A"), strings.HasPrefix(pe.Code, "22"), strings.HasPrefix(pe.Code, "42"):
			return agent.Permanent(events.ReasonStoreError, err)
		}
	}
	return err
}

// connectFailure replaces *pgconn.ConnectError, whose Config field holds the
// password of the attempted connection: errors this package returns keep
// the message and the cause (a *pgconn.PgError, a net error) but not that
// Config.
type connectFailure struct {
	msg   string
	cause error
}

func (e *connectFailure) Error() string { return e.msg }
func (e *connectFailure) Unwrap() error { return e.cause }

func scrubConnectError(err error) error {
	if ce, ok := err.(*pgconn.ConnectError); ok {
		return &connectFailure{msg: ce.Error(), cause: ce.Unwrap()}
	}
	return err
}

// sqlState returns the SQLSTATE of err, or "" if it is not a server error.
func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// ErrNotProvisioned reports a lifecycle command (rotate, retire, suspend,
// resume) for a tenant whose role and database tenantprov's record does not
// name. It is permanent.
var ErrNotProvisioned = errors.New("not provisioned")
