package agent

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Config is the runtime's configuration, shared by every agent. Agent mains
// hold it as a field of their own configuration (for example
// `Agent agent.Config`) and load it with config.Load; the env tags give the
// variable names and defaults, DefaultConfig gives the same defaults to
// callers that do not read the environment.
type Config struct {
	// ControlPlaneRecipient is the control plane's age recipient ("age1…"),
	// or several separated by commas or spaces. Credentials leave the agent
	// only encrypted to these. Required.
	ControlPlaneRecipient string `env:"CONTROL_PLANE_RECIPIENT"`
	// MaxInFlight bounds the commands this replica works on at once. The
	// default matches the orchestrator's ORCHESTRATOR_WORKERS (16): with 8
	// a burst ran at half the store's own 16-at-once throughput, queued in
	// the slowest agent (issue 13).
	MaxInFlight int `env:"AGENT_MAX_IN_FLIGHT" envDefault:"16"`
	// AckWait is the consumer's ack wait: how long JetStream waits for an
	// ack or an InProgress signal before it redelivers a command. The
	// runtime signals InProgress every AckWait/4 while a command runs, so
	// AckWait must exceed the longest a store call can stall the process
	// (a GC pause, a stuck scheduler) — not the length of a whole command.
	// It is also how soon a command an agent was working on when it died
	// is redelivered to another replica, so it stays well below the saga's
	// deadline (SAGA_TIMEOUT).
	AckWait time.Duration `env:"AGENT_ACK_WAIT" envDefault:"10s"`
	// CommandTimeout bounds one command (provision + verify, or deprovision)
	// on one delivery. A command that runs out of time is retried like any
	// transient error. A provision is bound by its deadline as well,
	// whichever comes first.
	CommandTimeout time.Duration `env:"AGENT_COMMAND_TIMEOUT" envDefault:"90s"`
	// MaxDeliver is how many deliveries of one command the agent works on.
	// A command still failing transiently on its MaxDeliver-th delivery is
	// answered *_failed (reason store_error) and terminated; one delivered
	// more often than that (earlier deliveries ended without an answer, for
	// example because the agent crashed on it) is answered *_failed without
	// touching the store.
	MaxDeliver int `env:"AGENT_MAX_DELIVER" envDefault:"20"`
	// RetryBaseDelay is the redelivery delay after the first transient
	// failure; it doubles with every delivery up to RetryMaxDelay and is
	// jittered.
	RetryBaseDelay time.Duration `env:"AGENT_RETRY_BASE_DELAY" envDefault:"1s"`
	// RetryMaxDelay caps the redelivery delay.
	RetryMaxDelay time.Duration `env:"AGENT_RETRY_MAX_DELAY" envDefault:"30s"`
	// ShutdownTimeout bounds the agent's stop on SIGTERM: it stops
	// fetching at once, lets the commands in flight finish until shortly
	// before ShutdownTimeout, then hands the unfinished ones back (Nak) for
	// another replica. It is the service's SHUTDOWN_TIMEOUT (the same
	// variable as service.Config's), which must stay below the
	// orchestrator's grace period before SIGKILL.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"30s"`
}

// Limits the configuration is checked against.
const (
	// MinAckWait is the smallest AckWait Validate accepts: below it the
	// InProgress signal (every AckWait/4) would race ordinary network
	// latency.
	MinAckWait = time.Second
	// MaxMaxInFlight is the largest MaxInFlight Validate accepts; it stays
	// below the consumer's MaxAckPending so that one replica cannot starve
	// the others.
	MaxMaxInFlight = ConsumerMaxAckPending / 4
	// ConsumerMaxAckPending is the MaxAckPending of the shared agent
	// consumer: commands delivered to all replicas and not yet acked,
	// including those waiting out a retry delay. It is a constant so that
	// every replica asks for the same consumer configuration.
	ConsumerMaxAckPending = 1024
)

// DefaultConfig returns the defaults of every setting (the env tags'
// envDefault values); ControlPlaneRecipient has none and must be set.
func DefaultConfig() Config {
	return Config{
		MaxInFlight:     16,
		AckWait:         10 * time.Second,
		CommandTimeout:  90 * time.Second,
		MaxDeliver:      20,
		RetryBaseDelay:  time.Second,
		RetryMaxDelay:   30 * time.Second,
		ShutdownTimeout: 30 * time.Second,
	}
}

// Validate reports every problem with the configuration at once (joined
// with errors.Join), each naming the environment variable to fix.
func (c *Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.ControlPlaneRecipient) == "" {
		errs = append(errs, errors.New("CONTROL_PLANE_RECIPIENT: required (the control plane's age recipient, age1…; `tenantctl keys init` prints it)"))
	} else if _, err := secret.ParseRecipients(c.ControlPlaneRecipient); err != nil {
		errs = append(errs, fmt.Errorf("CONTROL_PLANE_RECIPIENT: %w", err))
	}
	if c.MaxInFlight < 1 || c.MaxInFlight > MaxMaxInFlight {
		errs = append(errs, fmt.Errorf("AGENT_MAX_IN_FLIGHT: %d, want 1 to %d", c.MaxInFlight, MaxMaxInFlight))
	}
	if c.AckWait < MinAckWait {
		errs = append(errs, fmt.Errorf("AGENT_ACK_WAIT: %s, want at least %s", c.AckWait, MinAckWait))
	}
	if c.CommandTimeout <= 0 {
		errs = append(errs, fmt.Errorf("AGENT_COMMAND_TIMEOUT: %s must be positive", c.CommandTimeout))
	}
	if c.MaxDeliver < 1 {
		errs = append(errs, fmt.Errorf("AGENT_MAX_DELIVER: %d, want at least 1", c.MaxDeliver))
	}
	if c.RetryBaseDelay <= 0 {
		errs = append(errs, fmt.Errorf("AGENT_RETRY_BASE_DELAY: %s must be positive", c.RetryBaseDelay))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("SHUTDOWN_TIMEOUT: %s must be positive", c.ShutdownTimeout))
	}
	if c.RetryMaxDelay < c.RetryBaseDelay {
		errs = append(errs, fmt.Errorf("AGENT_RETRY_MAX_DELAY: %s is less than AGENT_RETRY_BASE_DELAY %s", c.RetryMaxDelay, c.RetryBaseDelay))
	}
	return errors.Join(errs...)
}

// Recipients parses ControlPlaneRecipient.
func (c *Config) Recipients() ([]age.Recipient, error) {
	rs, err := secret.ParseRecipients(c.ControlPlaneRecipient)
	if err != nil {
		return nil, fmt.Errorf("CONTROL_PLANE_RECIPIENT: %w", err)
	}
	return rs, nil
}
