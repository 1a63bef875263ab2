package events

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Sentinel errors. Every error returned by this package matches one of them
// with errors.Is.
var (
	// ErrInvalidTenantID reports a tenant ID that breaks the rules of
	// DESIGN.md §2.
	ErrInvalidTenantID = errors.New("invalid tenant id")
	// ErrInvalidPayload reports a payload that is not valid JSON, lacks a
	// required field or carries a field with an invalid value.
	ErrInvalidPayload = errors.New("invalid payload")
	// ErrPayloadTooLarge reports a payload over MaxPayloadBytes.
	ErrPayloadTooLarge = errors.New("payload too large")
	// ErrUnknownStore reports a store name that is not one of Stores().
	ErrUnknownStore = errors.New("unknown store")
)

// TenantIDError explains why a tenant ID was rejected. The offending value is
// kept quoted and truncated so that hostile input cannot flood a log line.
type TenantIDError struct {
	ID     string // the rejected value, truncated to 64 bytes
	Reason string // why it was rejected, for people
}

func (e *TenantIDError) Error() string {
	return fmt.Sprintf("invalid tenant id %q: %s", e.ID, e.Reason)
}

// Is reports whether target is ErrInvalidTenantID.
func (e *TenantIDError) Is(target error) bool { return target == ErrInvalidTenantID }

// PayloadError explains why a payload was rejected: which message type and,
// where one field is at fault, which field.
type PayloadError struct {
	Type   string // payload type, e.g. "TenantRequested"
	Field  string // JSON field at fault, empty when the whole payload is
	Reason string
	Err    error // underlying cause (ErrInvalidTenantID, ErrPayloadTooLarge, a JSON error), may be nil
}

func (e *PayloadError) Error() string {
	msg := "decode " + e.Type
	if e.Field != "" {
		msg += ": field " + e.Field
	}
	msg += ": " + e.Reason
	return msg
}

// Is reports whether target is ErrInvalidPayload; ErrPayloadTooLarge and
// ErrInvalidTenantID are reached through Unwrap.
func (e *PayloadError) Is(target error) bool { return target == ErrInvalidPayload }

// Unwrap returns the underlying cause.
func (e *PayloadError) Unwrap() error { return e.Err }

// Truncate cuts s to at most n bytes, ending in "…" when it cut, without
// splitting a UTF-8 sequence. Every service uses it to bound text taken from
// errors or payloads before it goes into a log, an event or a record.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	if cut < 0 {
		cut = 0
	}
	return s[:cut] + "…"
}
