package events

import "time"

// Step names used in the per-step timings of store results
// (StoreResult.TimingsMS, StoreStatus.TimingsMS) and sagas
// (SagaTimings.MS). Values are milliseconds.
const (
	// Agent side.
	StepQueue       = "queue"       // message stored in its stream → picked up by its consumer
	StepLock        = "lock"        // waiting for the tenant's lock in the agent
	StepProvision   = "provision"   // Store.Provision
	StepVerify      = "verify"      // Store.Verify
	StepSeal        = "seal"        // encrypting the credential (agent) or the secrets file (orchestrator)
	StepDeprovision = "deprovision" // Store.Deprovision
	StepResult      = "result"      // agent's completion → orchestrator applied the result

	// Orchestrator side (SagaTimings.MS).
	StepRegistry       = "registry"        // registry reads and compare-and-set writes
	StepRegistryWrites = "registry_writes" // how many writes (a count, not ms)
	StepCommands       = "commands"        // publishing store commands
	StepOutcome        = "outcome"         // publishing tenant.<outcome>
	StepAudit          = "audit"           // publishing audit events
	StepObject         = "object"          // putting/deleting and observing the sealed secrets object
	StepStores         = "stores"          // first command published → last store result applied
	StepTotal          = "total"           // request stored → the saga settled (state written)
)

// SagaTimings is the per-step breakdown of one saga (a provisioning or a
// deprovisioning of one generation), kept compactly in the tenant record.
// The orchestrator adds each step's time at its next registry write, so
// the time of the very last write (and what follows it) is not included.
type SagaTimings struct {
	Saga        string             `json:"saga"` // provision or deprovision
	RequestedAt time.Time          `json:"requested_at"`
	MS          map[string]float64 `json:"ms,omitempty"`
}

// RoundMS is d in milliseconds to 0.1 ms, as the timings keep it.
func RoundMS(d time.Duration) float64 {
	return float64(d.Round(100*time.Microsecond).Microseconds()) / 1000
}
