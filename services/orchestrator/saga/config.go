package saga

import (
	"errors"
	"fmt"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Config is the saga's configuration (environment variables in tags).
type Config struct {
	// SagaTimeout is how long provisioning may take before it is rolled
	// back. The deadline is stored in the registry, so a restarted
	// orchestrator keeps it.
	SagaTimeout time.Duration `env:"SAGA_TIMEOUT" envDefault:"60s"`
	// MaxTimeout is the hard cap: past SagaTimeout the deadline is
	// extended while the agents of every store that has not answered show
	// they are alive and working (their heartbeats, events.AgentProgress),
	// up to MaxTimeout, which is also the deadline the provision commands
	// carry. A burst of sign-ups queued behind busy agents, or an agent
	// restarting after a crash, then delays a tenant instead of failing
	// it; a dead agent still fails it at SagaTimeout. Zero (or a value not
	// above SagaTimeout) disables extension.
	MaxTimeout time.Duration `env:"SAGA_MAX_TIMEOUT" envDefault:"10m"`
	// ProgressWindow is how recent a store's last heartbeat must be for
	// its agents to count as working, and how far one extension moves the
	// deadline. Agents beat every few seconds (AGENT_ACK_WAIT/4, 2.5 s by
	// default); 15 s covers an agent restarting after a SIGKILL and a NATS
	// node failing over, and still notices a dead agent within 15 s of
	// the deadline. Zero disables extension.
	ProgressWindow time.Duration `env:"SAGA_PROGRESS_WINDOW" envDefault:"15s"`
	// ReconcileInterval is how often every replica re-drives in-flight
	// sagas from the registry: deadlines, compensation retries, work a
	// crashed replica left half done.
	ReconcileInterval time.Duration `env:"RECONCILE_INTERVAL" envDefault:"2s"`
	// RetryMin and RetryMax bound the exponential backoff between
	// compensation attempts for one store.
	RetryMin time.Duration `env:"COMPENSATION_BACKOFF_MIN" envDefault:"5s"`
	RetryMax time.Duration `env:"COMPENSATION_BACKOFF_MAX" envDefault:"2m"`
	// StuckAfter is how long a record's outbox may hold effects before the
	// reconciler executes them for a replica that died (or failed) doing
	// it. Executing an effect twice is harmless, so it can be short.
	StuckAfter time.Duration `env:"SAGA_STUCK_AFTER" envDefault:"5s"`
	// IdentityFile holds the control-plane age identity
	// (AGE-SECRET-KEY-1…) that opens the agents' credentials.
	IdentityFile string `env:"CONTROL_PLANE_IDENTITY_FILE"`
	// OperatorRecipients are age recipients (comma-separated) that can also
	// decrypt every tenant's secrets file.
	OperatorRecipients string `env:"OPERATOR_RECIPIENTS"`
	// Workers bounds concurrently handled messages per consumer.
	Workers int `env:"ORCHESTRATOR_WORKERS" envDefault:"16"`
	// AckWait is the redelivery timeout of the orchestrator's consumers:
	// how long a message a dead replica held waits before another replica
	// gets it. A replica handling a message longer tells the server it is
	// still at it (every AckWait/3), so this stays short.
	AckWait time.Duration `env:"ORCHESTRATOR_ACK_WAIT" envDefault:"5s"`
	// RotateGraceDefault is how long a rotation keeps the old credentials
	// working when the request names no grace; RotateGraceMax is the
	// longest grace a request may ask for (0 retires at once).
	RotateGraceDefault time.Duration `env:"ROTATE_GRACE_DEFAULT" envDefault:"24h"`
	RotateGraceMax     time.Duration `env:"ROTATE_GRACE_MAX" envDefault:"168h"`
	// RetainMax is the longest retention a deprovision may ask for.
	RetainMax time.Duration `env:"RETAIN_MAX" envDefault:"2160h"`
	// PlansFile is the YAML file of named plans (events.ParsePlans); empty:
	// one built-in "default" plan that limits nothing. An invalid file
	// stops the service at start.
	PlansFile string `env:"PLANS_FILE"`
}

// Lifecycle defaults, for a Config built in code that leaves them zero.
const (
	defaultRotateGrace    = 24 * time.Hour
	defaultRotateGraceMax = 168 * time.Hour
	defaultRetainMax      = 2160 * time.Hour
)

// lifecyclePolicy is the lifecycle's bounds, zero values meaning the
// defaults (both grace settings zero: the default grace and maximum).
func (c *Config) lifecyclePolicy() LifecyclePolicy {
	p := LifecyclePolicy{GraceDefault: c.RotateGraceDefault, GraceMax: c.RotateGraceMax, RetainMax: c.RetainMax}
	if p.GraceDefault == 0 && p.GraceMax == 0 {
		p.GraceDefault, p.GraceMax = defaultRotateGrace, defaultRotateGraceMax
	}
	if p.RetainMax == 0 {
		p.RetainMax = defaultRetainMax
	}
	return p
}

// Validate reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	positive := map[string]time.Duration{
		"SAGA_TIMEOUT": c.SagaTimeout, "RECONCILE_INTERVAL": c.ReconcileInterval,
		"COMPENSATION_BACKOFF_MIN": c.RetryMin, "COMPENSATION_BACKOFF_MAX": c.RetryMax,
		"SAGA_STUCK_AFTER": c.StuckAfter, "ORCHESTRATOR_ACK_WAIT": c.AckWait,
	}
	for _, name := range []string{"SAGA_TIMEOUT", "RECONCILE_INTERVAL", "COMPENSATION_BACKOFF_MIN", "COMPENSATION_BACKOFF_MAX", "SAGA_STUCK_AFTER", "ORCHESTRATOR_ACK_WAIT"} {
		if positive[name] <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive", name))
		}
	}
	if c.MaxTimeout < 0 {
		errs = append(errs, errors.New("SAGA_MAX_TIMEOUT: must not be negative"))
	}
	if c.ProgressWindow < 0 {
		errs = append(errs, errors.New("SAGA_PROGRESS_WINDOW: must not be negative"))
	}
	if c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("COMPENSATION_BACKOFF_MAX: must be >= COMPENSATION_BACKOFF_MIN"))
	}
	if c.IdentityFile == "" {
		errs = append(errs, errors.New("CONTROL_PLANE_IDENTITY_FILE: required (create one with `tenantctl keys init`)"))
	}
	if c.RotateGraceDefault < 0 || c.RotateGraceMax < c.RotateGraceDefault {
		errs = append(errs, errors.New("ROTATE_GRACE_MAX: must be >= ROTATE_GRACE_DEFAULT >= 0"))
	}
	if c.RetainMax < 0 {
		errs = append(errs, errors.New("RETAIN_MAX: must not be negative (0: the default)"))
	}
	if _, err := events.LoadPlans(c.PlansFile); err != nil {
		errs = append(errs, fmt.Errorf("PLANS_FILE: %w", err))
	}
	if c.Workers < 1 {
		errs = append(errs, errors.New("ORCHESTRATOR_WORKERS: must be >= 1"))
	}
	return errors.Join(errs...)
}
