package busauth_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/busauth"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

// bus is a real nats-server running the configuration busauth.Init
// generates, with the creds of every role.
type bus struct {
	t    *testing.T
	dir  string
	srv  *testkit.NATS
	auth *busauth.Authority
}

func startBus(t *testing.T) *bus {
	t.Helper()
	dir := t.TempDir()
	a, err := busauth.Init(dir)
	if err != nil {
		t.Fatalf("busauth.Init: %v", err)
	}
	n := testkit.StartNATS(t, testkit.NATSConfigFile(filepath.Join(dir, busauth.ServerConfigFile)))
	return &bus{t: t, dir: dir, srv: n, auth: a}
}

// client is one identity's connection; violations collects the server's
// permission errors for it.
type client struct {
	role busauth.Role
	nc   *nats.Conn
	js   jetstream.JetStream

	mu         sync.Mutex
	violations []string
}

func (c *client) sawViolation(substr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.violations {
		if strings.Contains(v, substr) {
			return true
		}
	}
	return false
}

func (b *bus) as(r busauth.Role) *client {
	b.t.Helper()
	c := &client{role: r}
	c.nc = b.srv.Connect(b.t,
		nats.UserCredentials(busauth.CredsPath(b.dir, r)),
		nats.CustomInboxPrefix(r.InboxPrefix()),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(err.Error(), "Permissions Violation") {
				c.mu.Lock()
				c.violations = append(c.violations, err.Error())
				c.mu.Unlock()
			}
		}))
	js, err := jetstream.New(c.nc)
	if err != nil {
		b.t.Fatal(err)
	}
	c.js = js
	return c
}

// admin is an unrestricted connection (busauth.IssueAdmin) for checking
// state the roles may not read.
func (b *bus) admin() jetstream.JetStream {
	b.t.Helper()
	creds, err := b.auth.IssueAdmin("test-admin", time.Hour)
	if err != nil {
		b.t.Fatal(err)
	}
	p := filepath.Join(b.t.TempDir(), "admin.creds")
	if err := os.WriteFile(p, creds, 0o600); err != nil {
		b.t.Fatal(err)
	}
	js, err := jetstream.New(b.srv.Connect(b.t, nats.UserCredentials(p)))
	if err != nil {
		b.t.Fatal(err)
	}
	return js
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// setUp creates the topology as the orchestrator (the only identity allowed
// to) and returns it.
func setUp(t *testing.T) (*bus, *client) {
	b := startBus(t)
	orch := b.as(busauth.RoleOrchestrator)
	ctx := ctxT(t, 15*time.Second)
	if err := (events.Topology{Replicas: 1}).Ensure(ctx, orch.js); err != nil {
		t.Fatalf("orchestrator ensures the topology: %v (violations: %v)", err, orch.violations)
	}
	for _, bucket := range []string{events.KVAgentLocks, events.KVAuditAnchors} {
		if _, err := orch.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket}); err != nil {
			t.Fatalf("orchestrator creates kv %s: %v", bucket, err)
		}
	}
	return b, orch
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestEveryRoleDoesItsJob runs each role's whole job against the server:
// nothing a role needs is refused.
func TestEveryRoleDoesItsJob(t *testing.T) {
	b, orch := setUp(t)
	ctx := ctxT(t, 3*time.Minute)

	// Operator and requester: requests, core and JetStream.
	op := b.as(busauth.RoleOperator)
	must(t, "operator nats pub tenant.requested", op.nc.Publish(events.SubjectTenantRequested, []byte(`{"tenant_id":"acme"}`)))
	_, err := op.js.Publish(ctx, events.SubjectTenantRequested, []byte(`{"tenant_id":"acme"}`))
	must(t, "operator js publish tenant.requested", err)
	req := b.as(busauth.RoleRequester)
	must(t, "requester pub tenant.requested", req.nc.Publish(events.SubjectTenantRequested, []byte(`{"tenant_id":"beta"}`)))
	_, err = req.js.Publish(ctx, events.SubjectTenantDeprovisionRequested, []byte(`{"tenant_id":"beta"}`))
	must(t, "requester js publish tenant.deprovision.requested", err)
	must(t, "requester flush", req.nc.FlushTimeout(5*time.Second))

	// Orchestrator: its consumers, registry, secrets, commands, outcomes, audit.
	reqCons, err := orch.js.CreateOrUpdateConsumer(ctx, events.StreamTenants, events.OrchestratorRequestsConfig(30*time.Second))
	must(t, "orchestrator creates its requests consumer", err)
	batch, err := reqCons.Fetch(4, jetstream.FetchMaxWait(5*time.Second))
	must(t, "orchestrator fetches requests", err)
	n := 0
	for m := range batch.Messages() {
		must(t, "orchestrator acks a request", m.Ack())
		n++
	}
	if n != 4 {
		t.Fatalf("orchestrator got %d requests, want 4 (operator and requester, core and JetStream)", n)
	}
	kv, err := orch.js.KeyValue(ctx, events.KVTenants)
	must(t, "orchestrator binds registry", err)
	rev, err := kv.Create(ctx, "acme", []byte(`{"tenant_id":"acme","state":"provisioning"}`))
	must(t, "orchestrator creates a record", err)
	_, err = kv.Update(ctx, "acme", []byte(`{"tenant_id":"acme","state":"active"}`), rev)
	must(t, "orchestrator CAS-updates a record", err)
	w, err := kv.WatchAll(ctx)
	must(t, "orchestrator watches the registry", err)
	select {
	case e := <-w.Updates():
		if e == nil || e.Key() != "acme" {
			t.Fatalf("watch: first entry %v, want acme", e)
		}
	case <-ctx.Done():
		t.Fatal("watch: no entry")
	}
	_ = w.Stop()
	obj, err := orch.js.ObjectStore(ctx, events.ObjectStoreSecrets)
	must(t, "orchestrator binds secrets store", err)
	_, err = obj.PutBytes(ctx, "acme.sops.yaml", []byte("sealed: v1"))
	must(t, "orchestrator puts a sealed file", err)
	_, err = obj.PutBytes(ctx, "acme.sops.yaml", []byte("sealed: v2"))
	must(t, "orchestrator replaces a sealed file", err)
	got, err := obj.GetBytes(ctx, "acme.sops.yaml")
	must(t, "orchestrator reads a sealed file", err)
	if string(got) != "sealed: v2" {
		t.Fatalf("sealed file %q", got)
	}
	for _, s := range events.Stores() {
		_, err = orch.js.Publish(ctx, events.CommandSubject(s, events.ActionProvision), []byte(`{"tenant_id":"acme"}`))
		must(t, "orchestrator publishes a command", err)
	}
	_, err = orch.js.Publish(ctx, events.TenantOutcomeSubject(events.TenantOutcomeProvisioned), []byte(`{}`))
	must(t, "orchestrator publishes an outcome", err)
	_, err = orch.js.Publish(ctx, events.AuditSubject("TENANT_PROVISIONED"), []byte(`{}`))
	must(t, "orchestrator publishes audit", err)

	// Each agent: its own commands, results, audit, locks.
	var resultSeq uint64
	for _, s := range events.Stores() {
		ag := b.as(busauth.AgentRole(s))
		cons, err := ag.js.CreateOrUpdateConsumer(ctx, events.StreamStoreCommands, events.AgentConsumerConfig(s, 30*time.Second, 8))
		must(t, string(ag.role)+" creates its consumer", err)
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		must(t, string(ag.role)+" fetches", err)
		var m jetstream.Msg
		for m = range batch.Messages() {
		}
		if m == nil || m.Subject() != events.CommandSubject(s, events.ActionProvision) {
			t.Fatalf("%s: got %v, want its provision command", ag.role, m)
		}
		must(t, string(ag.role)+" signals in progress", m.InProgress())
		must(t, string(ag.role)+" acks", m.DoubleAck(ctx))
		ack, err := ag.js.Publish(ctx, events.EventSubject(s, events.OutcomeProvisioned), []byte(`{}`))
		must(t, string(ag.role)+" publishes its result", err)
		resultSeq = ack.Sequence
		_, err = ag.js.Publish(ctx, events.AuditSubject("STORE_PROVISIONED"), []byte(`{}`))
		must(t, string(ag.role)+" publishes audit", err)
		locks, err := ag.js.KeyValue(ctx, events.KVAgentLocks)
		must(t, string(ag.role)+" binds agent-locks", err)
		key := events.AgentLockKey(s, "acme")
		lrev, err := locks.Create(ctx, key, []byte("holder"))
		must(t, string(ag.role)+" takes its lock", err)
		_, err = locks.Get(ctx, key)
		must(t, string(ag.role)+" reads its lock", err)
		_, err = locks.Update(ctx, key, []byte("holder2"), lrev)
		must(t, string(ag.role)+" renews its lock", err)
		must(t, string(ag.role)+" releases its lock", locks.Delete(ctx, key))
		lw, err := locks.WatchAll(ctx)
		must(t, string(ag.role)+" watches the locks", err)
		_ = lw.Stop()
	}

	// Orchestrator: its results consumer, and a result by sequence.
	resCons, err := orch.js.CreateOrUpdateConsumer(ctx, events.StreamStoreEvents, events.OrchestratorResultsConfig(30*time.Second))
	must(t, "orchestrator creates its results consumer", err)
	rb, err := resCons.Fetch(4, jetstream.FetchMaxWait(5*time.Second))
	must(t, "orchestrator fetches results", err)
	n = 0
	for m := range rb.Messages() {
		must(t, "orchestrator acks a result", m.Ack())
		n++
	}
	if n != 4 {
		t.Fatalf("orchestrator got %d results, want 4", n)
	}
	results, err := orch.js.Stream(ctx, events.StreamStoreEvents)
	must(t, "orchestrator binds STORE_EVENTS", err)
	_, err = results.GetMsg(ctx, resultSeq)
	must(t, "orchestrator reads a result by sequence", err)

	// Audit sink: audit events, dead letters, anchors.
	sink := b.as(busauth.RoleAuditSink)
	ac, err := sink.js.CreateOrUpdateConsumer(ctx, events.StreamAudit, events.AuditSinkConfig(30*time.Second))
	must(t, "audit-sink creates its consumer", err)
	ab, err := ac.Fetch(5, jetstream.FetchMaxWait(5*time.Second))
	must(t, "audit-sink fetches", err)
	n = 0
	for m := range ab.Messages() {
		must(t, "audit-sink acks", m.Ack())
		n++
	}
	if n != 5 {
		t.Fatalf("audit-sink got %d events, want 5", n)
	}
	_, err = sink.js.Publish(ctx, events.DeadLetterSubject("audit"), []byte(`{}`))
	must(t, "audit-sink dead-letters", err)
	anchors, err := sink.js.KeyValue(ctx, events.KVAuditAnchors)
	must(t, "audit-sink binds audit-anchors", err)
	_, err = anchors.Put(ctx, "head", []byte(`{"seq":5}`))
	must(t, "audit-sink anchors the chain head", err)

	// Operator and observer read: registry, anchors, streams; the operator
	// also the sealed files.
	for _, r := range []busauth.Role{busauth.RoleOperator, busauth.RoleObserver} {
		c := b.as(r)
		kv, err := c.js.KeyValue(ctx, events.KVTenants)
		must(t, string(r)+" binds registry", err)
		e, err := kv.Get(ctx, "acme")
		must(t, string(r)+" reads a record", err)
		if !bytes.Contains(e.Value(), []byte("active")) {
			t.Fatalf("%s read %q", r, e.Value())
		}
		if r == busauth.RoleOperator {
			w, err := kv.Watch(ctx, "acme")
			must(t, string(r)+" watches a record", err)
			<-w.Updates()
			_ = w.Stop()
		}
		an, err := c.js.KeyValue(ctx, events.KVAuditAnchors)
		must(t, string(r)+" binds audit-anchors", err)
		_, err = an.Get(ctx, "head")
		must(t, string(r)+" reads the anchor", err)
		names := c.js.StreamNames(ctx)
		for range names.Name() {
		}
		must(t, string(r)+" lists streams", names.Err())
		_, err = c.js.Consumer(ctx, events.StreamTenants, events.ConsumerOrchestratorRequests)
		must(t, string(r)+" reads consumer info", err)
		sub, err := c.nc.SubscribeSync(events.SubjectTenantRejected)
		must(t, string(r)+" subscribes tenant.rejected", err)
		_ = sub.Unsubscribe()
		must(t, string(r)+" flush", c.nc.FlushTimeout(5*time.Second))
		if c.sawViolation("") {
			t.Fatalf("%s: permission violations: %v", r, c.violations)
		}
	}
	obs, err := op.js.ObjectStore(ctx, events.ObjectStoreSecrets)
	must(t, "operator binds secrets store", err)
	got, err = obs.GetBytes(ctx, "acme.sops.yaml")
	must(t, "operator reads a sealed file", err)
	if string(got) != "sealed: v2" {
		t.Fatalf("operator read %q", got)
	}
	for _, c := range []*client{op, req, orch, sink} {
		must(t, "flush", c.nc.FlushTimeout(5*time.Second))
		if c.sawViolation("") {
			t.Fatalf("%s: permission violations: %v", c.role, c.violations)
		}
	}
}
