package qdrantstore

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors. They reach the agent runtime wrapped in
// agent.Permanent with the reason given.
var (
	// ErrRBACNotEnforced reports a Qdrant server that does not confine a
	// JWT to what it grants (no API key, API key without JWT RBAC, or a
	// server accepting forged tokens). Reason "unsupported" unless the agent
	// is configured for application-level isolation.
	ErrRBACNotEnforced = errors.New("qdrant does not enforce JWT RBAC")
	// ErrAdminKeyRefused reports that the server refused the configured
	// API key; retrying cannot help until an operator fixes QDRANT_API_KEY.
	// Reason "store_error".
	ErrAdminKeyRefused = errors.New("qdrant refused the admin API key (QDRANT_API_KEY)")
	// ErrSuperseded reports a command for an older generation than the one
	// whose resources exist; the store is left untouched. Reason "expired".
	ErrSuperseded = errors.New("command superseded by a newer generation")
)

// code returns the gRPC status code inside err (the go-client wraps it),
// codes.OK for nil and codes.Unknown for a non-gRPC error.
func code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return se.GRPCStatus().Code()
	}
	return status.Code(err)
}

// isNotFound reports a collection (or point set) that does not exist.
func isNotFound(err error) bool { return code(err) == codes.NotFound }

// refused reports an authentication or authorisation refusal.
func refused(err error) bool {
	c := code(err)
	return c == codes.Unauthenticated || c == codes.PermissionDenied
}

// unreachable reports an error that says nothing about authorisation: the
// server did not answer or the call ran out of time.
func unreachable(err error) bool {
	switch code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.ResourceExhausted, codes.Aborted:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}
