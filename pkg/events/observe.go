package events

import (
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Observation on demand and the orphan sweep (DESIGN.md §10).

// SubjectTenantObserveRequested asks the orchestrator to observe a tenant's
// slices now (payload LifecycleRequested): it sends observe to every store
// the tenant is provisioned in; the observations land in the record
// (StoreStatus.Observation). `tenantctl doctor <id>` publishes it.
const SubjectTenantObserveRequested = "tenant.observe.requested"

// ConsumerOrchestratorObserve is the durable consumer of
// tenant.observe.requested, shared by orchestrator replicas.
const ConsumerOrchestratorObserve = "orchestrator-observe"

// OrchestratorObserveConfig is the durable consumer of observation
// requests.
func OrchestratorObserveConfig(ackWait time.Duration) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerOrchestratorObserve,
		Description:   "observation requests (tenantctl doctor) for the orchestrator",
		FilterSubject: SubjectTenantObserveRequested,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
}

// KVOrphans holds what the orphan sweep found, one key per orphan
// (OrphanKey): when it was first seen, whether it was reported and when its
// removal was asked for. The first-seen time survives restarts, so the
// grace period is measured from the first sighting by any replica.
const KVOrphans = "orphans"

// Orphans returns the configuration of the orphan sweep's bucket.
func (t Topology) Orphans() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:       KVOrphans,
		Description:  "orphan sweep: resources with no live registry record, first-seen time and removal",
		History:      4,
		MaxValueSize: MaxPayloadBytes,
		Storage:      jetstream.FileStorage,
		Replicas:     t.replicas(),
	}
}

// Orphan is the value of one key of KVOrphans. It never holds a secret.
type Orphan struct {
	Store    Store  `json:"store"`
	TenantID string `json:"tenant_id"`
	// Generation is the generation tenantprov's marker records (0 for a
	// foreign look-alike).
	Generation uint64 `json:"generation,omitempty"`
	// Foreign: the resources have a tenant's name but no marker of ours;
	// they are reported, never touched.
	Foreign bool `json:"foreign,omitempty"`
	// Items names the resources (kind/name).
	Items     []string  `json:"items"`
	Detail    string    `json:"detail,omitempty"`
	FirstSeen time.Time `json:"first_seen"`
	// Reported is set once ORPHAN_FOUND was published.
	Reported bool      `json:"reported,omitempty"`
	LastSeen time.Time `json:"last_seen"`
	// RemovalSagaID is the saga ID of the deprovision sent to remove it
	// (set when the grace ended); RemovalSentAt when it was last sent.
	RemovalSagaID string     `json:"removal_saga_id,omitempty"`
	RemovalSentAt *time.Time `json:"removal_sent_at,omitempty"`
	RemovalTries  int        `json:"removal_tries,omitempty"`
	// RemovedAt is when the store confirmed the removal.
	RemovedAt *time.Time `json:"removed_at,omitempty"`
	// Error is the last removal failure the store reported.
	Error string `json:"error,omitempty"`
}

// OrphanKey is the key of an orphan in KVOrphans:
// <store>.<tenant>.g<generation>, or <store>.<tenant>.foreign.
func OrphanKey(s Store, tenant string, generation uint64, foreign bool) string {
	if foreign {
		return string(s) + "." + tenant + ".foreign"
	}
	return string(s) + "." + tenant + ".g" + strconv.FormatUint(generation, 10)
}
