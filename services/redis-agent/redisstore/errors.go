package redisstore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// ErrNoACLFile reports that the server keeps ACL users in memory only: it was
// started without an aclfile, so ACL SAVE cannot persist them. Provision
// turns it into a warning, never into a failure.
var ErrNoACLFile = errors.New("redis has no aclfile")

// ErrStaleGeneration reports a command for an older generation of a tenant
// than the one tenantprov's record holds. It is permanent: the newer
// generation's user is left untouched.
var ErrStaleGeneration = errors.New("command is for an older generation than the managed record")

// ErrNotRemoved reports a deprovision that found the tenant's ACL user or
// keys still there after removing them. It is transient: the runtime retries
// it, and the deprovision is not reported done until nothing is left.
var ErrNotRemoved = errors.New("tenant's user or keys remain after deprovision")

// ErrRecordLost reports an ACL user with the tenant's name and exactly
// tenantprov's rules but no record of tenantprov's: the record was evicted
// (maxmemory-policy allkeys-*) or deleted by hand. Deprovision leaves the
// user and fails (transient, so retried and surfaced) until an operator
// deletes the user or restores the record.
var ErrRecordLost = errors.New("tenantprov's record of the user is missing")

// permanentPrefixes are Redis error replies that retrying cannot fix: the
// admin credential lacks a permission, is wrong, or the server does not
// understand a command or ACL rule (a server older than Redis 7).
var permanentPrefixes = []string{
	"NOPERM", "WRONGPASS", "NOAUTH",
	"Error in ACL SETUSER", // go-redis strips the leading "ERR "
	"unknown command", "unknown subcommand", "Unknown subcommand",
}

// storeError wraps err from operation op with context, removes every given
// secret from its text, and marks it permanent (events.ReasonStoreError) when
// Redis refused for a reason retrying cannot fix. Network, timeout and other
// errors stay transient.
func storeError(op string, err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	redacted := false
	for _, s := range secrets {
		if s != "" && strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, secret.Redacted)
			redacted = true
		}
	}
	var cause error = err
	if redacted {
		// Drop the original error: its text (and maybe fields) held a secret.
		cause = errors.New(msg)
	}
	wrapped := fmt.Errorf("redis: %s: %w", op, cause)
	if isRedisReply(err) {
		for _, p := range permanentPrefixes {
			if redis.HasErrorPrefix(err, p) {
				return agent.Permanent(events.ReasonStoreError, wrapped)
			}
		}
	}
	return wrapped
}

// isRedisReply reports whether err is an error reply from the server (as
// opposed to a network, timeout or client error).
func isRedisReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}
