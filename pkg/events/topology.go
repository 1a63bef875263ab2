package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// JetStream names (DESIGN.md §3).
const (
	StreamTenants       = "TENANTS"
	StreamStoreCommands = "STORE_COMMANDS"
	StreamStoreEvents   = "STORE_EVENTS"
	StreamAudit         = "AUDIT"
	StreamDeadLetters   = "DEAD_LETTERS"
	KVTenants           = "tenants"
	ObjectStoreSecrets  = "tenant-secrets"
	// KVAgentLocks holds the per-tenant locks of the store agents, key
	// "<store>.<tenant_id>" (AgentLockKey): one agent replica at a time
	// works on one tenant in one store.
	KVAgentLocks = "agent-locks"
	// KVAuditAnchors holds the audit chain heads the audit sink anchors
	// outside the audit database (DESIGN.md §11); only the sink writes it.
	KVAuditAnchors = "audit-anchors"

	ConsumerOrchestratorRequests = "orchestrator-requests"
	ConsumerOrchestratorResults  = "orchestrator-results"
	ConsumerAuditSink            = "audit-sink"

	// SubjectAllDeadLetters captures messages a consumer could not accept
	// (they fail validation); kept for inspection, never redelivered.
	SubjectAllDeadLetters = "deadletter.>"
)

// AgentConsumer is the durable name of the pull consumer that every replica
// of one store's agent shares: agent-<store>.
func AgentConsumer(s Store) string { return "agent-" + string(s) }

// AgentLockKey is the key of a tenant's lock in KVAgentLocks for store s.
func AgentLockKey(s Store, tenant string) string { return string(s) + "." + tenant }

// DeadLetterSubject is deadletter.<source>, e.g. deadletter.audit.
func DeadLetterSubject(source string) string { return "deadletter." + source }

// DuplicateWindow is how long JetStream remembers a Nats-Msg-Id. It is
// longer than any saga (deadline plus compensation backoff) so a publish
// retried by a restarted process is still recognised.
const DuplicateWindow = time.Hour

// Topology holds the knobs of the JetStream topology that differ between a
// laptop and production.
type Topology struct {
	// Replicas for every stream, KV bucket and object store: 1 on a single
	// server, 3 on a production cluster.
	Replicas int
	// AuditMaxAge bounds how long audit events stay in the AUDIT stream
	// after the sink has stored them (0: one year).
	AuditMaxAge time.Duration
}

func (t Topology) replicas() int {
	if t.Replicas <= 0 {
		return 1
	}
	return t.Replicas
}

// Streams returns the configuration of every stream.
func (t Topology) Streams() []jetstream.StreamConfig {
	auditAge := t.AuditMaxAge
	if auditAge == 0 {
		auditAge = 365 * 24 * time.Hour
	}
	base := func(name, desc string, subjects []string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name:        name,
			Description: desc,
			Subjects:    subjects,
			Storage:     jetstream.FileStorage,
			Replicas:    t.replicas(),
			Duplicates:  DuplicateWindow,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxMsgSize:  1 << 20,
		}
	}
	tenants := base(StreamTenants, "tenant requests and saga outcomes", []string{SubjectAllTenants})
	tenants.MaxAge = 30 * 24 * time.Hour
	commands := base(StreamStoreCommands, "commands to store agents (work queue, one consumer per store)", []string{SubjectAllCommands})
	commands.Retention = jetstream.WorkQueuePolicy
	commands.MaxAge = 7 * 24 * time.Hour
	results := base(StreamStoreEvents, "store agents' results", []string{SubjectAllStoreEvents})
	results.MaxAge = 7 * 24 * time.Hour
	audit := base(StreamAudit, "audit events until the audit sink stores them, then kept for replay", []string{SubjectAllAudit})
	audit.MaxAge = auditAge
	dead := base(StreamDeadLetters, "messages a consumer rejected, with the reason", []string{SubjectAllDeadLetters})
	dead.MaxAge = 30 * 24 * time.Hour
	return []jetstream.StreamConfig{tenants, commands, results, audit, dead}
}

// KeyValue returns the configuration of the tenants registry.
func (t Topology) KeyValue() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:       KVTenants,
		Description:  "tenant registry: one record per tenant, compare-and-set writes",
		History:      16,
		MaxValueSize: MaxPayloadBytes,
		Storage:      jetstream.FileStorage,
		Replicas:     t.replicas(),
	}
}

// AgentLockTTL is how long a lock in KVAgentLocks lives after it was last
// written (the bucket's MaxAge): a holder refreshes its lock well within it,
// and the lock of a holder that died (SIGKILL, lost its connection) expires
// at most AgentLockTTL after its last refresh.
const AgentLockTTL = 15 * time.Second

// AgentLocks returns the configuration of the agents' per-tenant lock
// bucket: one revision per key, every entry expiring AgentLockTTL after it
// was written.
func (t Topology) AgentLocks() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      KVAgentLocks,
		Description: "store agents' per-tenant locks, <store>.<tenant_id>; an entry expires unless its holder refreshes it",
		History:     1,
		TTL:         AgentLockTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    t.replicas(),
	}
}

// ObjectStore returns the configuration of the sealed-secrets store.
func (t Topology) ObjectStore() jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      ObjectStoreSecrets,
		Description: "SOPS-encrypted tenant secrets, <id>.sops.yaml",
		Storage:     jetstream.FileStorage,
		Replicas:    t.replicas(),
	}
}

// AuditAnchors returns the configuration of the audit anchor bucket: the
// audit sink's record of the audit chain head, outside the audit database
// (DESIGN.md §11). It keeps the last 64 anchors of its one key.
func (t Topology) AuditAnchors() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:       KVAuditAnchors,
		Description:  "audit chain heads anchored by the audit sink, outside the audit database",
		History:      jetstream.KeyValueMaxHistory,
		MaxValueSize: 4096,
		Storage:      jetstream.FileStorage,
		Replicas:     t.replicas(),
	}
}

// Ensure creates or updates every stream, the KV buckets and the object
// store. It is idempotent: every service calls it at start, and any number
// of replicas may call it at once. Each request is bounded by
// ensureAttemptTimeout: a cluster whose leaders are still settling can leave
// a create unanswered, and asking again is safe where waiting out ctx is
// not. An unanswered request, or a refusal a cluster gives while it is still
// forming or a node restarts (no peer for the placement yet, JetStream
// briefly unavailable), is retried for up to ensureRetryFor.
func (t Topology) Ensure(ctx context.Context, js jetstream.JetStream) error {
	var errs []error
	ensure := func(what string, create func(context.Context) error) {
		if err := retryTransient(ctx, ensureAttemptTimeout, create); err != nil {
			errs = append(errs, fmt.Errorf("ensure %s: %w", what, err))
		}
	}
	for _, cfg := range t.Streams() {
		ensure("stream "+cfg.Name, func(ctx context.Context) error { _, err := js.CreateOrUpdateStream(ctx, cfg); return err })
	}
	for _, cfg := range []jetstream.KeyValueConfig{t.KeyValue(), t.AgentLocks()} {
		ensure("kv "+cfg.Bucket, func(ctx context.Context) error { _, err := js.CreateOrUpdateKeyValue(ctx, cfg); return err })
	}
	ensure("object store "+ObjectStoreSecrets, func(ctx context.Context) error {
		_, err := js.CreateOrUpdateObjectStore(ctx, t.ObjectStore())
		return err
	})
	for _, cfg := range []jetstream.KeyValueConfig{t.AuditAnchors(), t.Orphans(), t.DryRuns()} {
		ensure("kv "+cfg.Bucket, func(ctx context.Context) error { _, err := js.CreateOrUpdateKeyValue(ctx, cfg); return err })
	}
	return errors.Join(errs...)
}

// ensureRetryFor bounds how long Ensure retries one stream, bucket or
// object store.
const ensureRetryFor = 30 * time.Second

// ensureAttemptTimeout bounds one create-or-update request: a few times
// what a settling 3-node cluster takes to answer a healthy one (about 0.1 s
// for a stream), and the nats.go JetStream client's own default.
const ensureAttemptTimeout = 5 * time.Second

// Error codes of the JetStream API that a forming or recovering cluster
// answers and that go away by themselves.
const (
	jsErrCodeNoSuitablePeers jetstream.ErrorCode = 10005 // "no suitable peers for placement"
	jsErrCodeTempUnavailable jetstream.ErrorCode = 10008 // "JetStream system temporarily unavailable"
)

// retryTransient calls create, each call bounded by attempt, until it
// succeeds, fails with an error that is not transient, ctx ends, or
// ensureRetryFor has passed. Transient: the cluster's placement and
// availability refusals above, and a call that went unanswered within its
// bound (the caller's ctx still running).
func retryTransient(ctx context.Context, attempt time.Duration, create func(context.Context) error) error {
	deadline := time.Now().Add(ensureRetryFor)
	wait := 100 * time.Millisecond
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		err := create(actx)
		cancel()
		if err == nil {
			return nil
		}
		var api *jetstream.APIError
		refused := errors.As(err, &api) && (api.ErrorCode == jsErrCodeNoSuitablePeers || api.ErrorCode == jsErrCodeTempUnavailable)
		unanswered := errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil
		if !(refused || unanswered) || time.Now().Add(wait).After(deadline) {
			if unanswered {
				err = fmt.Errorf("no answer within %s: %w", attempt, err)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// AgentConsumerConfig is the durable pull consumer shared by every replica
// of one store's agent. ackWait must exceed the longest a command can take
// between InProgress signals; maxAckPending bounds in-flight commands across
// all replicas.
func AgentConsumerConfig(s Store, ackWait time.Duration, maxAckPending int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       AgentConsumer(s),
		Description:   "commands for the " + string(s) + " agent, shared by all its replicas",
		FilterSubject: CommandFilter(s),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: maxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// OrchestratorRequestsConfig is the durable consumer of tenant.requested,
// tenant.deprovision.requested and the lifecycle requests (DESIGN.md §10),
// shared by orchestrator replicas.
func OrchestratorRequestsConfig(ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        ConsumerOrchestratorRequests,
		Description:    "tenant requests for the orchestrator",
		FilterSubjects: []string{SubjectTenantRequested, SubjectTenantDeprovisionRequested, SubjectTenantRotateRequested, SubjectTenantSuspendRequested, SubjectTenantResumeRequested, SubjectTenantRestoreRequested, SubjectTenantUpdateRequested},
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        ackWait,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
}

// OrchestratorResultsConfig is the durable consumer of every store agent's
// results, shared by orchestrator replicas.
func OrchestratorResultsConfig(ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerOrchestratorResults,
		Description:   "store agents' results for the orchestrator",
		FilterSubject: SubjectAllStoreEvents,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// AuditSinkConfig is the durable consumer of the AUDIT stream shared by
// audit-sink replicas.
func AuditSinkConfig(ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerAuditSink,
		Description:   "audit events for the audit sink",
		FilterSubject: SubjectAllAudit,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}
