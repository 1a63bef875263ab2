package busauth

import (
	"fmt"
	"sort"
	"strings"

	"github.com/nats-io/jwt/v2"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Role is what an identity is for. A service's role is its service name.
type Role string

// The roles (DESIGN.md §11).
const (
	// RoleOrchestrator runs the saga, owns the registry and the sealed
	// secrets, and creates the JetStream topology.
	RoleOrchestrator Role = "orchestrator"
	RoleMinIOAgent   Role = "minio-agent"
	RolePGAgent      Role = "pg-agent"
	RoleQdrantAgent  Role = "qdrant-agent"
	RoleRedisAgent   Role = "redis-agent"
	// RoleAuditSink stores audit events and anchors the chain head.
	RoleAuditSink Role = "audit-sink"
	// RoleOperator is a person with tenantctl or the nats CLI: requests
	// tenants and reads everything, writes nothing else.
	RoleOperator Role = "operator"
	// RoleRequester is an upstream system: it may only publish the request
	// subjects, and reads nothing.
	RoleRequester Role = "requester"
	// RoleObserver reads the registry, the streams' state and the events
	// (dashboards, on-call); it publishes nothing.
	RoleObserver Role = "observer"
)

// Roles returns every role in a fixed order; the slice is fresh.
func Roles() []Role {
	return []Role{RoleOrchestrator, RoleMinIOAgent, RolePGAgent, RoleQdrantAgent, RoleRedisAgent,
		RoleAuditSink, RoleOperator, RoleRequester, RoleObserver}
}

// ServiceRoles returns the roles of the six services.
func ServiceRoles() []Role {
	return []Role{RoleOrchestrator, RoleMinIOAgent, RolePGAgent, RoleQdrantAgent, RoleRedisAgent, RoleAuditSink}
}

// ParseRole returns the Role named s, or an error matching ErrUnknownRole.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles() {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("%w %q (want one of %v)", ErrUnknownRole, events.Truncate(s, 64), Roles())
}

// AgentRole is the role of store s's agent.
func AgentRole(s events.Store) Role {
	switch s {
	case events.StoreMinIO:
		return RoleMinIOAgent
	case events.StorePostgres:
		return RolePGAgent
	case events.StoreQdrant:
		return RoleQdrantAgent
	case events.StoreRedis:
		return RoleRedisAgent
	}
	return ""
}

// Store is the store an agent role works on, or "" for other roles.
func (r Role) Store() events.Store {
	for _, s := range events.Stores() {
		if AgentRole(s) == r {
			return s
		}
	}
	return ""
}

// InboxPrefix is the reply-inbox prefix an identity of role r must use
// (nats.CustomInboxPrefix): _INBOX_<role> for services, the
// client default _INBOX for the human roles and the requesters (who live in
// their own account; see the package doc).
func (r Role) InboxPrefix() string {
	if r == RoleOperator || r == RoleObserver || r == RoleRequester {
		return "_INBOX"
	}
	return "_INBOX_" + string(r)
}

// JetStream names the permissions refer to. A KV bucket B is stream KV_B
// with subjects $KV.B.<key>; an object store O is stream OBJ_O with subjects
// $O.O.>.
func kvStream(bucket string) string  { return "KV_" + bucket }
func objStream(bucket string) string { return "OBJ_" + bucket }

const api = "$JS.API."

// perms collects the allowed subjects of one role.
type perms struct {
	pub, pubDeny, sub []string
	// answers: the role may answer requests it receives (NATS
	// allow_responses), up to that many messages per request.
	answers int
}

func (p *perms) publish(s ...string)   { p.pub = append(p.pub, s...) }
func (p *perms) subscribe(s ...string) { p.sub = append(p.sub, s...) }

// bindStream is what looking up an existing stream needs.
func (p *perms) bindStream(stream string) { p.publish(api + "STREAM.INFO." + stream) }

// durable is creating (or re-asserting) a named consumer and pulling from
// it: create, info, next message, ack/nak/in-progress.
func (p *perms) durable(stream, consumer string) {
	p.bindStream(stream)
	p.publish(
		api+"CONSUMER.CREATE."+stream+"."+consumer,
		api+"CONSUMER.CREATE."+stream+"."+consumer+".>",
		api+"CONSUMER.INFO."+stream+"."+consumer,
		api+"CONSUMER.MSG.NEXT."+stream+"."+consumer,
		"$JS.ACK."+stream+"."+consumer+".>",
	)
}

// orderedReader is reading a stream through ephemeral ordered consumers
// (KV watch and keys, object get): create with a generated name, flow
// control, and delete when done. Only streams with no service durables get
// this, so the worst a reader can delete is another reader's ephemeral
// consumer (an ordered consumer recreates itself).
func (p *perms) orderedReader(stream string) {
	p.publish(
		api+"CONSUMER.CREATE."+stream,
		api+"CONSUMER.CREATE."+stream+".>",
		api+"CONSUMER.DELETE."+stream+".*",
		"$JS.FC."+stream+".>",
	)
}

// kvRead is get, watch and keys on bucket, restricted to keys under
// keyPrefix ("" for the whole bucket; otherwise direct gets are limited to
// $KV.<bucket>.<keyPrefix>>).
func (p *perms) kvRead(bucket, keyPrefix string) {
	st := kvStream(bucket)
	p.bindStream(st)
	p.publish(api + "DIRECT.GET." + st + ".$KV." + bucket + "." + keyPrefix + ">")
	if keyPrefix == "" {
		p.publish(api+"DIRECT.GET."+st, api+"STREAM.MSG.GET."+st)
		p.orderedReader(st)
	}
}

// kvWrite is put, create, update (CAS), delete and purge of the keys under
// keyPrefix in bucket.
func (p *perms) kvWrite(bucket, keyPrefix string) {
	p.kvRead(bucket, keyPrefix)
	p.publish("$KV." + bucket + "." + keyPrefix + ">")
}

// objRead is get, info, list and watch of the object store.
func (p *perms) objRead(bucket string) {
	st := objStream(bucket)
	p.bindStream(st)
	p.publish(api+"DIRECT.GET."+st, api+"DIRECT.GET."+st+".>", api+"STREAM.MSG.GET."+st)
	p.orderedReader(st)
}

// objWrite is put and delete in the object store (chunks, metadata, and the
// purge of a replaced object's old chunks).
func (p *perms) objWrite(bucket string) {
	p.objRead(bucket)
	p.publish("$O."+bucket+".>", api+"STREAM.PURGE."+objStream(bucket))
}

// inspect is read-only JetStream introspection (stream and consumer lists
// and info), as `nats stream ls`, `nats consumer info` and tenantctl use.
func (p *perms) inspect() {
	p.publish(api+"INFO", api+"STREAM.NAMES", api+"STREAM.LIST", api+"STREAM.INFO.*",
		api+"CONSUMER.NAMES.*", api+"CONSUMER.LIST.*", api+"CONSUMER.INFO.*.*")
}

// watchOutcomes is what people may subscribe to besides their inbox: the
// saga outcomes and the dead letters — never a subject a service consumes
// (requests, commands, results, audit, $KV, $O). That is deliberate: a
// push consumer delivers to its deliver subject only while someone has a
// core subscription there, and the server lets any consumer creator name
// any deliver subject; with no such subscription allowed to anyone, a
// reader's watch consumer cannot be pointed at tenant.deprovision.requested
// or store.evt.postgres.provisioned to inject messages into a stream.
func (p *perms) watchOutcomes() { p.subscribe(outcomeSubjects()...) }

// outcomeSubjects are the saga outcomes and the dead letters.
func outcomeSubjects() []string {
	return append(events.TenantOutcomeSubjects(), events.SubjectAllDeadLetters)
}

// observerAPI is the read-only JetStream API an observer may call:
// account, stream and consumer state, and direct gets of the registry and
// the audit anchors.
func observerAPI() []string {
	return []string{api + "INFO", api + "STREAM.NAMES", api + "STREAM.LIST", api + "STREAM.INFO.*",
		api + "CONSUMER.NAMES.*", api + "CONSUMER.LIST.*", api + "CONSUMER.INFO.*.*",
		api + "DIRECT.GET." + kvStream(events.KVTenants) + ".>", api + "DIRECT.GET." + kvStream(events.KVAuditAnchors) + ".>"}
}

// requestSubjects are the subjects upstream systems and operators publish
// (tenant.requested, tenant.<verb>.requested).
func requestSubjects() []string { return []string{events.SubjectTenantRequested, "tenant.*.requested"} }

func (p *perms) requests() { p.publish(requestSubjects()...) }

// topologyStreams are every stream, KV bucket and object store the
// orchestrator creates (TopologyStreams).
func topologyStreams() []string {
	var names []string
	for _, s := range (events.Topology{}).Streams() {
		names = append(names, s.Name)
	}
	return append(names, kvStream(events.KVTenants), objStream(events.ObjectStoreSecrets),
		kvStream(events.KVAgentLocks), kvStream(events.KVAuditAnchors), kvStream(events.KVOrphans),
		kvStream(events.KVDryRuns))
}

func rolePerms(r Role) (perms, error) {
	var p perms
	p.subscribe(r.InboxPrefix() + ".>")
	if r != RoleRequester {
		// Account limits and usage: the client libraries ask before
		// creating a KV bucket or object store; it reveals no data.
		p.publish(api + "INFO")
	}
	switch r {
	case RoleOrchestrator:
		for _, st := range topologyStreams() {
			p.publish(api+"STREAM.CREATE."+st, api+"STREAM.UPDATE."+st, api+"STREAM.INFO."+st)
		}
		p.durable(events.StreamTenants, events.ConsumerOrchestratorRequests)
		p.durable(events.StreamStoreEvents, events.ConsumerOrchestratorResults)
		// Observation requests (tenantctl doctor), and the orphan sweep:
		// every store's inventory, and its findings in the orphans bucket.
		p.durable(events.StreamTenants, events.ConsumerOrchestratorObserve)
		p.publish(events.SubjectAllInventory)
		p.kvWrite(events.KVOrphans, "")
		// Dry runs: each store's answer until all four are in.
		p.kvWrite(events.KVDryRuns, "")
		// Sealing re-reads each store's result by sequence.
		p.publish(api+"STREAM.MSG.GET."+events.StreamStoreEvents, api+"DIRECT.GET."+events.StreamStoreEvents,
			api+"DIRECT.GET."+events.StreamStoreEvents+".>")
		// Outcomes tenant.<outcome>, never a request.
		p.publish("tenant.*")
		p.pubDeny = append(p.pubDeny, events.SubjectTenantRequested, "tenant.*.requested")
		p.publish(events.SubjectAllCommands, events.SubjectAllAudit, events.DeadLetterSubject(string(r)))
		p.kvWrite(events.KVTenants, "")
		p.objWrite(events.ObjectStoreSecrets)
		// The agents' heartbeats, which extend a busy saga's deadline.
		p.subscribe(events.SubjectAllProgress)
	case RoleMinIOAgent, RolePGAgent, RoleQdrantAgent, RoleRedisAgent:
		s := r.Store()
		p.durable(events.StreamStoreCommands, events.AgentConsumer(s))
		// Inventory requests for its own store, answered in chunks to the
		// requester's reply subject only (pkg/agent ServeInventory).
		p.subscribe(events.InventorySubject(s))
		p.answers = events.MaxInventoryChunks
		p.publish("store.evt."+string(s)+".>", events.ProgressSubject(s), events.SubjectAllAudit,
			events.DeadLetterSubject(string(r)), events.DeadLetterSubject(string(s)))
		// Every lock is readable (and watchable); only its own store's keys
		// <store>.<tenant> are writable.
		p.kvRead(events.KVAgentLocks, "")
		p.kvWrite(events.KVAgentLocks, string(s)+".")
	case RoleAuditSink:
		p.durable(events.StreamAudit, events.ConsumerAuditSink)
		p.publish(events.DeadLetterSubject("audit"))
		p.kvWrite(events.KVAuditAnchors, "")
	case RoleOperator:
		p.requests()
		p.publish(events.SubjectAllInventory) // tenantctl doctor
		p.inspect()
		p.kvRead(events.KVTenants, "")
		p.kvRead(events.KVAuditAnchors, "")
		p.kvRead(events.KVOrphans, "") // tenantctl doctor
		p.objRead(events.ObjectStoreSecrets)
		p.watchOutcomes()
	case RoleObserver:
		// Exactly what the OBSERVERS account imports (no consumers, so no
		// watch: a push consumer cannot deliver across accounts here).
		p.publish(observerAPI()...)
		p.watchOutcomes()
	case RoleRequester:
		p.requests()
	default:
		return perms{}, fmt.Errorf("%w %q", ErrUnknownRole, r)
	}
	return p, nil
}

// Permissions returns the publish and subscribe permissions of role r, as
// put into its user JWT. Everything not listed is refused by the server.
func Permissions(r Role) (jwt.Permissions, error) {
	p, err := rolePerms(r)
	if err != nil {
		return jwt.Permissions{}, err
	}
	var out jwt.Permissions
	out.Pub.Allow.Add(dedup(p.pub)...)
	out.Pub.Deny.Add(dedup(p.pubDeny)...)
	out.Sub.Allow.Add(dedup(p.sub)...)
	if p.answers > 0 {
		out.Resp = &jwt.ResponsePermission{MaxMsgs: p.answers, Expires: events.InventoryAnswerWindow}
	}
	return out, nil
}

func dedup(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// BoundStreams lists the streams (KV and object-store streams included)
// role r may look up, that is, the part of the topology it works with: a
// service checks at start that exactly these exist.
func BoundStreams(r Role) ([]string, error) {
	p, err := rolePerms(r)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range dedup(p.pub) {
		if name, ok := strings.CutPrefix(s, api+"STREAM.INFO."); ok && !strings.ContainsAny(name, "*>") {
			out = append(out, name)
		}
	}
	return out, nil
}
