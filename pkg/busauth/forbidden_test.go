package busauth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/busauth"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

// kvPut binds bucket and puts key as c.
func kvPut(bucket, key string) func(context.Context, *client) error {
	return func(ctx context.Context, c *client) error {
		kv, err := c.js.KeyValue(ctx, bucket)
		if err != nil {
			return err
		}
		_, err = kv.Put(ctx, key, []byte(`{"forged":true}`))
		return err
	}
}

func jsPublish(subject string) func(context.Context, *client) error {
	return func(ctx context.Context, c *client) error {
		_, err := c.js.Publish(ctx, subject, []byte(`{"tenant_id":"acme","generation":1}`))
		return err
	}
}

func corePublish(subject string) func(context.Context, *client) error {
	return func(_ context.Context, c *client) error {
		if err := c.nc.Publish(subject, []byte(`{"tenant_id":"acme"}`)); err != nil {
			return err
		}
		return c.nc.Flush()
	}
}

func subscribe(subject string) func(context.Context, *client) error {
	return func(_ context.Context, c *client) error {
		if _, err := c.nc.SubscribeSync(subject); err != nil {
			return err
		}
		return c.nc.Flush()
	}
}

// TestForbiddenActionsAreRefusedByTheServer: each case is an identity
// trying something outside its role; the server must refuse it (a
// permissions violation naming the subject), and where the action would
// change state, the state is checked unchanged afterwards.
func TestForbiddenActionsAreRefusedByTheServer(t *testing.T) {
	b, orch := setUp(t)
	ctx := ctxT(t, 10*time.Minute)
	// Legitimate state the forbidden actions aim at.
	kv, err := orch.js.KeyValue(ctx, events.KVTenants)
	must(t, "bind registry", err)
	_, err = kv.Put(ctx, "acme", []byte(`{"tenant_id":"acme","state":"active"}`))
	must(t, "orchestrator writes registry", err)
	obj, err := orch.js.ObjectStore(ctx, events.ObjectStoreSecrets)
	must(t, "bind secrets", err)
	_, err = obj.PutBytes(ctx, "acme.sops.yaml", []byte("sealed"))
	must(t, "orchestrator puts secrets", err)
	pg := b.as(busauth.RolePGAgent)
	_, err = pg.js.CreateOrUpdateConsumer(ctx, events.StreamStoreCommands, events.AgentConsumerConfig(events.StorePostgres, 30*time.Second, 8))
	must(t, "pg-agent creates its consumer", err)
	_, err = orch.js.Publish(ctx, events.CommandSubject(events.StorePostgres, events.ActionProvision), []byte(`{"tenant_id":"acme"}`))
	must(t, "orchestrator sends a postgres command", err)

	forged := events.EventSubject(events.StorePostgres, events.OutcomeProvisioned)
	cases := []struct {
		name    string
		role    busauth.Role
		subject string // what the server's refusal names
		act     func(context.Context, *client) error
	}{
		{"requester publishes a store result", busauth.RoleRequester, forged, jsPublish(forged)},
		{"operator publishes a store result", busauth.RoleOperator, forged, corePublish(forged)},
		{"orchestrator forges a store result", busauth.RoleOrchestrator, forged, jsPublish(forged)},
		{"minio agent publishes the postgres result", busauth.RoleMinIOAgent, forged, jsPublish(forged)},
		{"agent publishes a tenant request", busauth.RoleRedisAgent, events.SubjectTenantRequested, corePublish(events.SubjectTenantRequested)},
		{"agent publishes a deprovision request", busauth.RolePGAgent, events.SubjectTenantDeprovisionRequested, jsPublish(events.SubjectTenantDeprovisionRequested)},
		{"agent publishes a command", busauth.RolePGAgent, "store.cmd.postgres.deprovision", jsPublish(events.CommandSubject(events.StorePostgres, events.ActionDeprovision))},
		{"requester publishes a command", busauth.RoleRequester, "store.cmd.minio.deprovision", corePublish(events.CommandSubject(events.StoreMinIO, events.ActionDeprovision))},
		{"requester reads the registry", busauth.RoleRequester, "$JS.API.STREAM.INFO.KV_tenants", func(ctx context.Context, c *client) error {
			_, err := c.js.KeyValue(ctx, events.KVTenants)
			return err
		}},
		{"requester gets a registry record directly", busauth.RoleRequester, "$JS.API.DIRECT.GET.KV_tenants", func(ctx context.Context, c *client) error {
			_, err := c.nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_tenants.$KV.tenants.acme", nil)
			return err
		}},
		{"requester reads the secrets object store", busauth.RoleRequester, "$JS.API.STREAM.INFO.OBJ_tenant-secrets", func(ctx context.Context, c *client) error {
			_, err := c.js.ObjectStore(ctx, events.ObjectStoreSecrets)
			return err
		}},
		{"requester subscribes to tenant events", busauth.RoleRequester, "tenant.>", subscribe("tenant.>")},
		{"observer reads the secrets object store", busauth.RoleObserver, "$JS.API.DIRECT.GET.OBJ_tenant-secrets", func(ctx context.Context, c *client) error {
			o, err := c.js.ObjectStore(ctx, events.ObjectStoreSecrets)
			if err != nil {
				return err
			}
			_, err = o.GetBytes(ctx, "acme.sops.yaml")
			return err
		}},
		{"operator writes the registry", busauth.RoleOperator, "$KV.tenants.acme", kvPut(events.KVTenants, "acme")},
		{"observer writes the registry", busauth.RoleObserver, "$KV.tenants.acme", kvPut(events.KVTenants, "acme")},
		{"agent writes the registry", busauth.RolePGAgent, "$JS.API.STREAM.INFO.KV_tenants", kvPut(events.KVTenants, "acme")},
		{"audit sink writes the registry", busauth.RoleAuditSink, "$JS.API.STREAM.INFO.KV_tenants", kvPut(events.KVTenants, "acme")},
		{"operator puts a secrets object", busauth.RoleOperator, "$O.tenant-secrets.", func(ctx context.Context, c *client) error {
			o, err := c.js.ObjectStore(ctx, events.ObjectStoreSecrets)
			if err != nil {
				return err
			}
			_, err = o.PutBytes(ctx, "acme.sops.yaml", []byte("attacker"))
			return err
		}},
		{"operator deletes a secrets object", busauth.RoleOperator, "$O.tenant-secrets.", func(ctx context.Context, c *client) error {
			o, err := c.js.ObjectStore(ctx, events.ObjectStoreSecrets)
			if err != nil {
				return err
			}
			return o.Delete(ctx, "acme.sops.yaml")
		}},
		{"agent puts a secrets object", busauth.RoleMinIOAgent, "$O.tenant-secrets.", corePublish("$O.tenant-secrets.C.forged")},
		{"observer publishes a request", busauth.RoleObserver, events.SubjectTenantRequested, corePublish(events.SubjectTenantRequested)},
		{"observer publishes an outcome", busauth.RoleObserver, "tenant.provisioned", corePublish("tenant.provisioned")},
		{"requester publishes audit", busauth.RoleRequester, "audit.TENANT_PROVISIONED", corePublish("audit.TENANT_PROVISIONED")},
		{"operator publishes audit", busauth.RoleOperator, "audit.TENANT_PROVISIONED", jsPublish("audit.TENANT_PROVISIONED")},
		{"observer publishes audit", busauth.RoleObserver, "audit.TENANT_PROVISIONED", corePublish("audit.TENANT_PROVISIONED")},
		{"audit sink publishes audit", busauth.RoleAuditSink, "audit.TENANT_PROVISIONED", jsPublish("audit.TENANT_PROVISIONED")},
		{"agent creates a stream", busauth.RoleMinIOAgent, "$JS.API.STREAM.CREATE.EVIL", func(ctx context.Context, c *client) error {
			_, err := c.js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}})
			return err
		}},
		{"agent deletes a stream", busauth.RolePGAgent, "$JS.API.STREAM.DELETE.STORE_COMMANDS", func(ctx context.Context, c *client) error {
			return c.js.DeleteStream(ctx, events.StreamStoreCommands)
		}},
		{"operator purges a stream", busauth.RoleOperator, "$JS.API.STREAM.PURGE.AUDIT", func(ctx context.Context, c *client) error {
			_, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE.AUDIT", nil)
			return err
		}},
		{"agent binds another store's consumer", busauth.RoleMinIOAgent, "$JS.API.CONSUMER.INFO.STORE_COMMANDS.agent-postgres", func(ctx context.Context, c *client) error {
			_, err := c.js.Consumer(ctx, events.StreamStoreCommands, events.AgentConsumer(events.StorePostgres))
			return err
		}},
		{"agent pulls another store's commands", busauth.RoleMinIOAgent, "$JS.API.CONSUMER.MSG.NEXT.STORE_COMMANDS.agent-postgres", func(ctx context.Context, c *client) error {
			_, err := c.nc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT.STORE_COMMANDS.agent-postgres", []byte(`{"batch":1,"expires":1000000000}`))
			return err
		}},
		{"agent writes another store's lock", busauth.RolePGAgent, "$KV.agent-locks.minio.acme", kvPut(events.KVAgentLocks, events.AgentLockKey(events.StoreMinIO, "acme"))},
		{"agent writes the audit anchors", busauth.RolePGAgent, "$JS.API.STREAM.INFO.KV_audit-anchors", kvPut(events.KVAuditAnchors, "head")},
		{"orchestrator writes the audit anchors", busauth.RoleOrchestrator, "$KV.audit-anchors.head", corePublish("$KV.audit-anchors.head")},
		{"operator writes the audit anchors", busauth.RoleOperator, "$KV.audit-anchors.head", kvPut(events.KVAuditAnchors, "head")},
		{"operator reads the orchestrator's replies", busauth.RoleOperator, "_INBOX_orchestrator.>", subscribe("_INBOX_orchestrator.>")},
		{"agent subscribes to other stores' commands", busauth.RoleMinIOAgent, "store.cmd.>", subscribe("store.cmd.>")},
		{"operator deletes an agent's consumer", busauth.RoleOperator, "$JS.API.CONSUMER.DELETE.STORE_COMMANDS.agent-postgres", func(ctx context.Context, c *client) error {
			return c.js.DeleteConsumer(ctx, events.StreamStoreCommands, events.AgentConsumer(events.StorePostgres))
		}},
		{"observer subscribes to all tenant subjects", busauth.RoleObserver, "tenant.>", subscribe("tenant.>")},
		{"operator subscribes to the deprovision requests", busauth.RoleOperator, events.SubjectTenantDeprovisionRequested, subscribe(events.SubjectTenantDeprovisionRequested)},
		{"operator subscribes to store results", busauth.RoleOperator, "store.evt.>", subscribe("store.evt.>")},
		{"observer subscribes to registry writes", busauth.RoleObserver, "$KV.tenants.>", subscribe("$KV.tenants.>")},
		{"requester uses the JetStream API", busauth.RoleRequester, "$JS.API.STREAM.NAMES", func(ctx context.Context, c *client) error {
			_, err := c.nc.RequestWithContext(ctx, "$JS.API.STREAM.NAMES", nil)
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := b.as(tc.role)
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := tc.act(actx, c)
			cancel()
			deadline := time.Now().Add(10 * time.Second)
			for !c.sawViolation(tc.subject) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if !c.sawViolation(tc.subject) {
				t.Fatalf("%s: not refused by the server (action error: %v; violations: %v)", tc.role, err, c.violations)
			}
		})
	}

	// Nothing forbidden took effect.
	ctx = ctxT(t, time.Minute)
	observer := b.as(busauth.RoleObserver)
	results, err := orch.js.Stream(ctx, events.StreamStoreEvents)
	must(t, "bind STORE_EVENTS", err)
	if m, err := results.GetLastMsgForSubject(ctx, forged); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("forged %s is in STORE_EVENTS (msg %v, err %v)", forged, m, err)
	}
	e, err := kv.Get(ctx, "acme")
	must(t, "read registry", err)
	if string(e.Value()) != `{"tenant_id":"acme","state":"active"}` || e.Revision() != 1 {
		t.Errorf("registry record changed: rev %d %s", e.Revision(), e.Value())
	}
	got, err := obj.GetBytes(ctx, "acme.sops.yaml")
	if err != nil || string(got) != "sealed" {
		t.Errorf("sealed file changed: %q, %v", got, err)
	}
	if _, err := observer.js.Stream(ctx, "EVIL"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("stream EVIL exists: %v", err)
	}
	if _, err := observer.js.Stream(ctx, events.StreamStoreCommands); err != nil {
		t.Errorf("STORE_COMMANDS: %v", err)
	}
	audit, err := orch.js.Stream(ctx, events.StreamAudit)
	must(t, "bind AUDIT", err)
	if info, err := audit.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Errorf("AUDIT holds %v messages (err %v), want 0", info, err)
	}
	// The postgres command is still there for the postgres agent.
	cons, err := pg.js.Consumer(ctx, events.StreamStoreCommands, events.AgentConsumer(events.StorePostgres))
	must(t, "pg-agent binds its consumer", err)
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	must(t, "pg-agent gets its command", err)
	if m.Subject() != events.CommandSubject(events.StorePostgres, events.ActionProvision) {
		t.Errorf("pg-agent got %s", m.Subject())
	}
}

// TestForgedStoreResult is the server half of issue 11's forged-result
// scenario: a store.evt.postgres.provisioned published by anyone but the
// postgres agent. On the old, unauthenticated bus it lands in STORE_EVENTS
// (where the orchestrator would consume it); on the generated
// configuration the server refuses it and only the postgres agent's own
// result gets in.
func TestForgedStoreResult(t *testing.T) {
	forged := events.EventSubject(events.StorePostgres, events.OutcomeProvisioned)
	payload := []byte(`{"tenant_id":"acme","generation":1,"credential_id":"attacker"}`)

	t.Run("unauthenticated bus accepts it", func(t *testing.T) {
		n := testkit.StartNATS(t)
		js, err := jetstream.New(n.Connect(t))
		must(t, "jetstream", err)
		ctx := ctxT(t, time.Minute)
		must(t, "topology", (events.Topology{}).Ensure(ctx, js))
		_, err = js.Publish(ctx, forged, payload)
		must(t, "anyone publishes a postgres result", err)
	})

	t.Run("authenticated bus refuses it", func(t *testing.T) {
		b, orch := setUp(t)
		ctx := ctxT(t, 2*time.Minute)
		for _, r := range []busauth.Role{busauth.RoleRequester, busauth.RoleOperator, busauth.RoleObserver,
			busauth.RoleMinIOAgent, busauth.RoleQdrantAgent, busauth.RoleRedisAgent, busauth.RoleAuditSink, busauth.RoleOrchestrator} {
			c := b.as(r)
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := c.js.Publish(pctx, forged, payload)
			cancel()
			if err == nil {
				t.Errorf("%s published a postgres result", r)
			}
			deadline := time.Now().Add(10 * time.Second)
			for !c.sawViolation(forged) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if !c.sawViolation(forged) {
				t.Errorf("%s: no permissions violation for %s (%v)", r, forged, err)
			}
		}
		results, err := orch.js.Stream(ctx, events.StreamStoreEvents)
		must(t, "bind STORE_EVENTS", err)
		if _, err := results.GetLastMsgForSubject(ctx, forged); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatalf("a forged %s reached STORE_EVENTS (%v)", forged, err)
		}
		pg := b.as(busauth.RolePGAgent)
		_, err = pg.js.Publish(ctx, forged, []byte(`{"tenant_id":"acme","generation":1}`))
		must(t, "the postgres agent publishes its result", err)
		if _, err := results.GetLastMsgForSubject(ctx, forged); err != nil {
			t.Fatalf("the postgres agent's result is not in STORE_EVENTS: %v", err)
		}
	})
}

// TestReaderCannotRedirectAWatchIntoARequest: the server lets whoever
// creates a push consumer name any deliver subject, and delivers there as
// soon as someone subscribes to it. An operator's watch on the registry
// pointed at tenant.deprovision.requested would deprovision every tenant
// whose record it replays — unless nobody may subscribe there. Nobody may.
func TestReaderCannotRedirectAWatchIntoARequest(t *testing.T) {
	b, orch := setUp(t)
	ctx := ctxT(t, 2*time.Minute)
	kv, err := orch.js.KeyValue(ctx, events.KVTenants)
	must(t, "bind registry", err)
	_, err = kv.Put(ctx, "acme", []byte(`{"tenant_id":"acme","state":"active"}`))
	must(t, "orchestrator writes registry", err)
	for _, r := range []busauth.Role{busauth.RoleOperator} {
		c := b.as(r)
		for _, subj := range []string{events.SubjectTenantDeprovisionRequested, "tenant.>", ">"} {
			_, _ = c.nc.SubscribeSync(subj)
		}
		_ = c.nc.Flush()
		_, err := c.js.CreateConsumer(ctx, "KV_"+events.KVTenants, jetstream.ConsumerConfig{DeliverSubject: events.SubjectTenantDeprovisionRequested})
		must(t, string(r)+" creates a push consumer (the server allows it)", err)
	}
	time.Sleep(2 * time.Second) // give a delivery, if any were possible, time to land
	st, err := b.admin().Stream(ctx, events.StreamTenants)
	must(t, "bind TENANTS", err)
	if info, err := st.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("registry records reached TENANTS (as deprovision requests): %v %v", info.State, err)
	}
}

// TestRequesterCannotAimAnAcknowledgementAtTheRegistry: the server does not
// authorize reply subjects, and JetStream acknowledges a publish on its
// reply subject. A requester in the TENANTPROV account publishing
// tenant.requested with reply "$KV.tenants.acme" would overwrite acme's
// record with the acknowledgement. Requesters live in their own account,
// where every reply is private.
func TestRequesterCannotAimAnAcknowledgementAtTheRegistry(t *testing.T) {
	b, orch := setUp(t)
	ctx := ctxT(t, time.Minute)
	kv, err := orch.js.KeyValue(ctx, events.KVTenants)
	must(t, "bind registry", err)
	_, err = kv.Put(ctx, "acme", []byte(`{"tenant_id":"acme","state":"active"}`))
	must(t, "orchestrator writes registry", err)
	req := b.as(busauth.RoleRequester)
	for _, reply := range []string{"$KV.tenants.acme", events.SubjectTenantDeprovisionRequested, "$O.tenant-secrets.M.YWNtZS5zb3BzLnlhbWw="} {
		must(t, "publish with reply "+reply, req.nc.PublishRequest(events.SubjectTenantRequested, reply, []byte(`{"tenant_id":"zeta"}`)))
	}
	must(t, "flush", req.nc.FlushTimeout(5*time.Second))
	admin := b.admin()
	tenants, err := admin.Stream(ctx, events.StreamTenants)
	must(t, "bind TENANTS", err)
	deadline := time.Now().Add(10 * time.Second)
	for { // the three requests themselves arrive
		info, err := tenants.Info(ctx)
		must(t, "info", err)
		if info.State.Msgs >= 3 {
			if info.State.Msgs != 3 {
				t.Errorf("TENANTS holds %d messages, want the 3 requests only", info.State.Msgs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests not in TENANTS: %d", info.State.Msgs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // an acknowledgement aimed elsewhere would have landed by now
	e, err := kv.Get(ctx, "acme")
	must(t, "read registry", err)
	if e.Revision() != 1 || string(e.Value()) != `{"tenant_id":"acme","state":"active"}` {
		t.Fatalf("acme's record was overwritten: rev %d %s", e.Revision(), e.Value())
	}
	if _, err := tenants.GetLastMsgForSubject(ctx, events.SubjectTenantDeprovisionRequested); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("an acknowledgement reached TENANTS as a deprovision request: %v", err)
	}
	// The requester still gets its own acknowledgements.
	if _, err := req.js.Publish(ctx, events.SubjectTenantRequested, []byte(`{"tenant_id":"eta"}`)); err != nil {
		t.Fatalf("requester's JetStream publish: %v", err)
	}
}

// TestObserverCannotAimAnAnswerAtAStream: a direct get answers with the
// stored message itself, on the reply subject the caller chose. An
// observer in the TENANTPROV account could aim acme's registry record at
// tenant.deprovision.requested (a valid request: it has tenant_id) or an
// API response at $KV.tenants.acme. Observers live in their own account,
// where every reply is private.
func TestObserverCannotAimAnAnswerAtAStream(t *testing.T) {
	b, orch := setUp(t)
	ctx := ctxT(t, time.Minute)
	kv, err := orch.js.KeyValue(ctx, events.KVTenants)
	must(t, "bind registry", err)
	_, err = kv.Put(ctx, "acme", []byte(`{"tenant_id":"acme","state":"active"}`))
	must(t, "orchestrator writes registry", err)
	obs := b.as(busauth.RoleObserver)
	must(t, "direct get aimed at a request subject", obs.nc.PublishRequest("$JS.API.DIRECT.GET.KV_tenants.$KV.tenants.acme", events.SubjectTenantDeprovisionRequested, nil))
	must(t, "stream info aimed at the registry", obs.nc.PublishRequest("$JS.API.STREAM.INFO.TENANTS", "$KV.tenants.acme", nil))
	must(t, "flush", obs.nc.FlushTimeout(5*time.Second))
	time.Sleep(time.Second) // an answer aimed at a stream would have landed by now
	tenants, err := b.admin().Stream(ctx, events.StreamTenants)
	must(t, "bind TENANTS", err)
	if info, err := tenants.Info(ctx); err != nil || info.State.Msgs != 0 {
		t.Fatalf("TENANTS holds %v (%v), want nothing", info.State, err)
	}
	e, err := kv.Get(ctx, "acme")
	must(t, "read registry", err)
	if e.Revision() != 1 {
		t.Fatalf("acme's record was overwritten: rev %d %s", e.Revision(), e.Value())
	}
	// The observer still reads.
	okv, err := obs.js.KeyValue(ctx, events.KVTenants)
	must(t, "observer binds registry", err)
	if _, err := okv.Get(ctx, "acme"); err != nil {
		t.Fatalf("observer reads acme: %v", err)
	}
}
