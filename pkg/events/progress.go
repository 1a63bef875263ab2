package events

import (
	"encoding/json"
	"fmt"
	"time"
)

// Progress: evidence that a store's agents are alive and working through
// their commands. The saga's deadline is extended while the agents of every
// store that has not answered show it (services/orchestrator/saga), so a
// tenant whose commands wait behind a busy agent pool, or run long, is not
// rolled back; a tenant whose agent is dead still is, at its deadline.
//
// It travels on core NATS, not JetStream: it is a signal that is worth
// something only while it is fresh, never a fact to keep. Every replica of
// a store's agent publishes an AgentProgress on ProgressSubject(store) at
// least every few seconds while its command loop is fetching or a command
// is in its hands (waiting for the tenant's lock included); a replica that
// is dead, or whose loop is stuck, publishes nothing.

const subjectProgressPrefix = "store.progress."

// SubjectAllProgress matches every store's progress subject.
const SubjectAllProgress = subjectProgressPrefix + "*"

// ProgressSubject is store.progress.<store>, where a store's agents report
// that they are alive and working. Only that store's agents may publish it.
func ProgressSubject(s Store) string { return subjectProgressPrefix + string(s) }

// MaxProgressBytes bounds one encoded AgentProgress.
const MaxProgressBytes = 4096

// AgentProgress is one agent replica's heartbeat. It names no tenant and
// holds no secret.
type AgentProgress struct {
	Store Store `json:"store"`
	// Source names the replica (its service name and a random suffix).
	Source string `json:"source"`
	// InFlight is how many commands the replica holds right now.
	InFlight int `json:"in_flight"`
	// At is the replica's clock when it sent this; receivers judge
	// freshness by their own clock at receipt.
	At time.Time `json:"at"`
}

// Validate checks the store and the bounds of the free-text fields.
func (p *AgentProgress) Validate() error {
	if !p.Store.Valid() {
		return fmt.Errorf("%w: progress: store %q", ErrUnknownStore, Truncate(string(p.Store), 64))
	}
	if len(p.Source) > 128 {
		return fmt.Errorf("%w: progress: source longer than 128 bytes", ErrInvalidPayload)
	}
	if p.InFlight < 0 {
		return fmt.Errorf("%w: progress: negative in_flight", ErrInvalidPayload)
	}
	return nil
}

// DecodeAgentProgress decodes and validates a heartbeat.
func DecodeAgentProgress(data []byte) (*AgentProgress, error) {
	if len(data) > MaxProgressBytes {
		return nil, fmt.Errorf("%w: progress of %d bytes", ErrPayloadTooLarge, len(data))
	}
	var p AgentProgress
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("%w: progress: %s", ErrInvalidPayload, Truncate(err.Error(), 200))
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}
