package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/getsops/sops/v3/cmd/sops/formats"
	"github.com/getsops/sops/v3/decrypt"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zaptest"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit"
)

// These tests exercise the saga's logic over a real JetStream with scripted
// agents: each answers commands as a test tells it to (succeed, fail, stay
// silent). The acceptance tests with the real agents and stores are in
// package main (e2e_test.go).

type behaviour func(cmd *events.StoreCommand) (outcome events.Outcome, reply bool)

type scriptedAgents struct {
	t        *testing.T
	js       jetstream.JetStream
	identity *age.X25519Identity
	mu       sync.Mutex
	behave   map[events.Store]behaviour
	seen     map[string]int // "store action" -> count
	secrets  map[string]string
	cmds     []*events.StoreCommand // every command received, in order
	byCred   map[string]string      // credential ID -> password
}

func (a *scriptedAgents) set(store events.Store, b behaviour) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.behave[store] = b
}

func (a *scriptedAgents) count(store events.Store, action events.Action) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen[string(store)+" "+string(action)]
}

func succeed(*events.StoreCommand) (events.Outcome, bool) { return "", true }

func startAgents(t *testing.T, ctx context.Context, js jetstream.JetStream, id *age.X25519Identity) *scriptedAgents {
	a := &scriptedAgents{t: t, js: js, identity: id, behave: map[events.Store]behaviour{}, seen: map[string]int{}, secrets: map[string]string{}, byCred: map[string]string{}}
	for _, store := range events.Stores() {
		a.behave[store] = succeed
		cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamStoreCommands, events.AgentConsumerConfig(store, 10*time.Second, 100))
		if err != nil {
			t.Fatal(err)
		}
		cc, err := cons.Consume(func(msg jetstream.Msg) {
			cmd, err := events.DecodeStoreCommand(msg.Data())
			if err != nil {
				_ = msg.Term()
				return
			}
			a.mu.Lock()
			a.seen[string(store)+" "+string(cmd.Action)]++
			a.cmds = append(a.cmds, cmd)
			b := a.behave[store]
			a.mu.Unlock()
			outcome, reply := b(cmd)
			if !reply {
				_ = msg.Ack() // the agent "died" with the command: it is gone
				return
			}
			if outcome == "" {
				outcome = cmd.Action.SuccessOutcome()
			}
			res := a.result(cmd, outcome)
			if meta, err := msg.Metadata(); err == nil {
				res.Run = meta.NumDelivered
			}
			if err := a.send(res); err != nil {
				_ = msg.Nak()
				return
			}
			_ = msg.Ack()
		}, jetstream.PullExpiry(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cc.Stop)
	}
	return a
}

// send publishes res as its store's agent would.
func (a *scriptedAgents) send(res *events.StoreResult) error {
	data, err := events.Encode(res)
	if err != nil {
		a.t.Errorf("encode result: %v", err)
		return err
	}
	m := nats.NewMsg(events.EventSubject(res.Store, res.Outcome))
	m.Data = data
	m.Header.Set(events.HeaderMsgID, events.ResultMsgID(res))
	_, err = a.js.PublishMsg(context.Background(), m)
	return err
}

// answer publishes a result to cmd as run run of it (a redelivery the test
// stages), edited by edit when not nil.
func (a *scriptedAgents) answer(cmd *events.StoreCommand, outcome events.Outcome, run uint64, edit func(*events.StoreResult)) *events.StoreResult {
	a.t.Helper()
	res := a.result(cmd, outcome)
	res.Run = run
	if edit != nil {
		edit(res)
	}
	if err := a.send(res); err != nil {
		a.t.Fatalf("publish result: %v", err)
	}
	return res
}

// commands returns the commands store received for action, in order.
func (a *scriptedAgents) commands(store events.Store, action events.Action) []*events.StoreCommand {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*events.StoreCommand
	for _, c := range a.cmds {
		if c.Store == store && c.Action == action {
			out = append(out, c)
		}
	}
	return out
}

func (a *scriptedAgents) result(cmd *events.StoreCommand, outcome events.Outcome) *events.StoreResult {
	res := &events.StoreResult{TenantID: cmd.TenantID, Generation: cmd.Generation, SagaID: cmd.SagaID, Store: cmd.Store,
		Outcome: outcome, Attempt: cmd.Attempt, CompletedAt: time.Now().UTC(), DurationMS: 5}
	switch outcome {
	case events.OutcomeProvisioned, events.OutcomeRotated:
		pw, _ := secret.Generate()
		a.mu.Lock()
		a.secrets[string(cmd.Store)+"/"+cmd.TenantID] = pw.Reveal()
		a.mu.Unlock()
		section := map[string]any{}
		switch cmd.Store {
		case events.StoreMinIO:
			section = map[string]any{"endpoint": "127.0.0.1:9000", "bucket": "tenant-" + cmd.TenantID, "access_key": "tenant-" + cmd.TenantID, "secret_key": pw.Reveal()}
		case events.StorePostgres:
			section = map[string]any{"host": "127.0.0.1", "port": 5432, "database": "tenant_" + cmd.TenantID, "user": "tenant_" + cmd.TenantID, "password": pw.Reveal(), "url": "postgres://u:" + pw.Reveal() + "@h/db"}
		case events.StoreQdrant:
			section = map[string]any{"host": "127.0.0.1", "grpc_port": 6334, "collection": "tenant_" + cmd.TenantID, "api_key": pw.Reveal()}
		case events.StoreRedis:
			section = map[string]any{"addr": "127.0.0.1:6379", "username": "tenant_" + cmd.TenantID, "password": pw.Reveal(), "key_prefix": "tenant:" + cmd.TenantID + ":"}
		}
		plain, _ := json.Marshal(section)
		sealed, err := secret.Seal(plain, a.identity.Recipient())
		if err != nil {
			a.t.Errorf("seal: %v", err)
		}
		res.Credential = sealed
		res.CredentialID = newSagaID("cred")
		a.mu.Lock()
		a.byCred[res.CredentialID] = pw.Reveal()
		a.mu.Unlock()
		res.Verification = &events.Verification{Passed: true, Checks: []events.Check{{Name: "own_access", Passed: true}}}
		res.Resources = map[string]string{"name": "tenant_" + cmd.TenantID}
		if cmd.Plan != nil {
			res.Limits = cmd.Plan.ForStore(cmd.Store)
		}
		if outcome == events.OutcomeRotated {
			res.CredentialVersion = cmd.Version
		}
	case events.OutcomeRetired:
		res.CredentialVersion = cmd.CredentialVersion
	case events.OutcomePlanApplied:
		res.Limits = cmd.Plan.ForStore(cmd.Store) // plans (plan_saga_test.go)
	case events.OutcomePlanned:
		res.DryRun = scriptedDryRun(cmd)
	case events.OutcomeProvisionFailed, events.OutcomeDeprovisionFailed, events.OutcomeRotateFailed, events.OutcomeRetireFailed,
		events.OutcomeSuspendFailed, events.OutcomeResumeFailed, events.OutcomeApplyPlanFailed, events.OutcomePlanFailed:
		res.Reason = events.ReasonStoreError
		res.Error = "scripted failure"
	}
	return res
}

type harness struct {
	t        *testing.T
	ctx      context.Context
	nc       *nats.Conn
	js       jetstream.JetStream
	identity *age.X25519Identity
	idFile   string
	agents   *scriptedAgents
	cfg      Config
	sagas    []*Saga
	cluster  *testkit.NATSCluster // nil on one node
}

// topology is where a saga test runs: one server with R1 storage, or the
// production topology (DESIGN.md §12), a 3-node cluster with every stream,
// the registry and the secrets store at 3 replicas.
type topology struct {
	name     string
	replicas int
}

var topologies = []topology{{"single", 1}, {"cluster3", 3}}

// eachTopology runs test on one node and on the 3-node cluster.
func eachTopology(t *testing.T, test func(t *testing.T, h *harness)) {
	for _, topo := range topologies {
		t.Run(topo.name, func(t *testing.T) { test(t, newHarnessOn(t, topo)) })
	}
}

func newHarness(t *testing.T) *harness { return newHarnessOn(t, topologies[0]) }

func newHarnessOn(t *testing.T, topo topology) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	t.Cleanup(cancel)
	var nc *nats.Conn
	var cluster *testkit.NATSCluster
	if topo.replicas > 1 {
		cluster = testkit.StartNATSCluster(t, topo.replicas)
		nc = cluster.Connect(t, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	} else {
		nc = testkit.StartNATS(t).Connect(t)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Ensure asks again when a settling cluster refuses a placement or
	// leaves a request unanswered.
	if err := (events.Topology{Replicas: topo.replicas}).Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := filepath.Join(t.TempDir(), "control-plane.agekey")
	if err := os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, ctx: ctx, nc: nc, js: js, identity: id, idFile: idFile, cluster: cluster}
	// The cluster replicates every write three times on a shared, loaded
	// machine: its saga deadline is longer so that slowness is not failure.
	h.cfg = Config{SagaTimeout: time.Duration(2*topo.replicas+1) * time.Second, ReconcileInterval: 100 * time.Millisecond, RetryMin: 300 * time.Millisecond,
		RetryMax: time.Second, StuckAfter: time.Second, IdentityFile: idFile, Workers: 8, AckWait: 2 * time.Second,
		RotateGraceDefault: 24 * time.Hour, RotateGraceMax: 168 * time.Hour, RetainMax: 720 * time.Hour}
	h.agents = startAgents(t, ctx, js, id)
	return h
}

// startSaga runs one orchestrator replica until the returned stop is called
// (or the test ends).
func (h *harness) startSaga() (stop func()) {
	h.t.Helper()
	if err := h.cfg.Validate(); err != nil {
		h.t.Fatal(err)
	}
	s, err := New(h.ctx, h.cfg, h.js, zaptest.NewLogger(h.t), nil)
	if err != nil {
		h.t.Fatal(err)
	}
	h.sagas = append(h.sagas, s)
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	h.t.Cleanup(stop)
	return stop
}

func (h *harness) publish(subject, payload string) {
	h.t.Helper()
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
		_, err := h.js.Publish(ctx, subject, []byte(payload))
		cancel()
		if err == nil {
			return
		}
		if i == 10 {
			h.t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond) // a cluster node is down: another takes the request
	}
}

func (h *harness) record(id string) *events.TenantRecord {
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	kv, err := h.js.KeyValue(ctx, events.KVTenants)
	if err != nil {
		return nil // a cluster node is down; callers poll
	}
	e, err := kv.Get(ctx, id)
	if err != nil {
		return nil
	}
	rec, err := events.DecodeTenantRecord(e.Value())
	if err != nil {
		h.t.Fatal(err)
	}
	return rec
}

func (h *harness) waitState(id string, want events.TenantState, within time.Duration) *events.TenantRecord {
	h.t.Helper()
	deadline := time.Now().Add(within)
	var rec *events.TenantRecord
	for time.Now().Before(deadline) {
		rec = h.record(id)
		if rec != nil && rec.State == want && rec.Announced == want {
			return rec
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(rec, "", "  ")
	h.t.Fatalf("tenant %s did not reach %s within %s; record:\n%s", id, want, within, b)
	return nil
}

// storedMsg is one message read back from a stream.
type storedMsg struct{ data []byte }

func (m storedMsg) Data() []byte { return m.data }

// streamMessages returns every message on subject in stream, read one by
// one by sequence (no consumer: nothing to hang on a loaded machine).
func (h *harness) streamMessages(stream, subject string) []storedMsg {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	st, err := h.js.Stream(ctx, stream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []storedMsg
	for seq := info.State.FirstSeq; seq > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			h.t.Fatal(err)
		}
		if m.Subject == subject {
			out = append(out, storedMsg{m.Data})
		}
	}
	return out
}

func (h *harness) auditCount(t events.AuditType, tenant string) int {
	n := 0
	for _, m := range h.streamMessages(events.StreamAudit, events.AuditSubject(t)) {
		ev, err := events.DecodeAuditEvent(m.Data())
		if err == nil && ev.TenantID == tenant {
			n++
		}
	}
	return n
}

func TestHappyPathSealsAndActivates(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"acme","request_id":"r1","requested_by":"signup"}`)
		rec := h.waitState("acme", events.TenantActive, 15*time.Second)
		if rec.Secrets == nil || rec.Secrets.Object != "acme.sops.yaml" || len(rec.Secrets.SHA256) != 64 {
			t.Fatalf("secrets ref = %+v", rec.Secrets)
		}
		obj, err := h.js.ObjectStore(h.ctx, events.ObjectStoreSecrets)
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := obj.GetBytes(h.ctx, "acme.sops.yaml")
		if err != nil {
			t.Fatal(err)
		}
		for store, pw := range h.agents.secrets {
			if strings.Contains(string(sealed), pw) {
				t.Fatalf("sealed file holds %s's credential in plain text", store)
			}
		}
		if !strings.Contains(string(sealed), "tenant_id: acme") || !strings.Contains(string(sealed), "bucket: tenant-acme") {
			t.Fatalf("non-secret fields are not readable:\n%s", sealed)
		}
		t.Setenv("SOPS_AGE_KEY", h.identity.String())
		plain, err := decrypt.DataWithFormat(sealed, formats.Yaml)
		if err != nil {
			t.Fatalf("sops decrypt: %v", err)
		}
		if !strings.Contains(string(plain), h.agents.secrets["postgres/acme"]) || !strings.Contains(string(plain), h.agents.secrets["redis/acme"]) {
			t.Fatalf("decrypted file lacks the credentials")
		}
		if n := h.auditCount(events.AuditTenantProvisioned, "acme"); n != 1 {
			t.Fatalf("TENANT_PROVISIONED events = %d, want 1", n)
		}
		if n := len(h.streamMessages(events.StreamTenants, events.SubjectTenantProvisioned)); n != 1 {
			t.Fatalf("tenant.provisioned events = %d, want 1", n)
		}
	})
}

func TestDuplicateRequestsProvisionOnce(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.startSaga() // a second replica
		for i := range 3 {
			h.publish(events.SubjectTenantRequested, fmt.Sprintf(`{"tenant_id":"dup","request_id":"r%d"}`, i%2))
		}
		h.waitState("dup", events.TenantActive, 15*time.Second)
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"dup","request_id":"later"}`)
		time.Sleep(500 * time.Millisecond)
		if rec := h.record("dup"); rec.Generation != 1 || rec.State != events.TenantActive {
			t.Fatalf("record after repeats: gen %d state %s", rec.Generation, rec.State)
		}
		if n := h.agents.count(events.StoreMinIO, events.ActionProvision); n != 1 {
			t.Fatalf("minio provision commands = %d, want 1", n)
		}
		if n := h.auditCount(events.AuditTenantProvisioned, "dup"); n != 1 {
			t.Fatalf("TENANT_PROVISIONED events = %d, want 1", n)
		}
	})
}

func TestStoreFailureRollsBackEveryStore(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.agents.set(events.StoreQdrant, func(cmd *events.StoreCommand) (events.Outcome, bool) {
			if cmd.Action == events.ActionProvision {
				return events.OutcomeProvisionFailed, true
			}
			return "", true
		})
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"boom"}`)
		rec := h.waitState("boom", events.TenantFailed, 15*time.Second)
		if !strings.Contains(rec.Reason, "qdrant") {
			t.Fatalf("reason %q does not name the store", rec.Reason)
		}
		for _, st := range events.Stores() {
			if rec.Stores[st].State != events.StoreDeprovisioned {
				t.Errorf("%s: %s, want deprovisioned", st, rec.Stores[st].State)
			}
			if h.agents.count(st, events.ActionDeprovision) < 1 {
				t.Errorf("%s got no deprovision", st)
			}
		}
		if n := h.auditCount(events.AuditTenantRolledBack, "boom"); n != 1 {
			t.Fatalf("TENANT_ROLLED_BACK = %d", n)
		}
		if n := h.auditCount(events.AuditTenantRollbackStarted, "boom"); n != 1 {
			t.Fatalf("TENANT_ROLLBACK_STARTED = %d, want 1 (a store failure starts the rollback)", n)
		}
		if n := h.auditCount(events.AuditTenantProvisioned, "boom"); n != 0 {
			t.Fatalf("TENANT_PROVISIONED emitted for a failed tenant")
		}
		// A new request starts generation 2.
		h.agents.set(events.StoreQdrant, succeed)
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"boom"}`)
		if rec := h.waitState("boom", events.TenantActive, 15*time.Second); rec.Generation != 2 {
			t.Fatalf("generation %d, want 2", rec.Generation)
		}
	})
}

func TestDeadlineRollsBackAndCompensationRetries(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		var mu sync.Mutex
		down := true
		h.agents.set(events.StoreRedis, func(cmd *events.StoreCommand) (events.Outcome, bool) {
			mu.Lock()
			defer mu.Unlock()
			if down {
				return "", false // swallowed: the agent died with it
			}
			return "", true
		})
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"slow"}`)
		time.Sleep(h.cfg.SagaTimeout + time.Second)
		rec := h.record("slow")
		if rec.State != events.TenantRollingBack {
			t.Fatalf("state %s after the deadline, want rolling_back", rec.State)
		}
		if !strings.Contains(rec.Reason, "redis") {
			t.Fatalf("reason %q does not name the silent store", rec.Reason)
		}
		time.Sleep(2 * time.Second) // compensation keeps retrying the silent agent
		if n := h.agents.count(events.StoreRedis, events.ActionDeprovision); n < 2 {
			t.Fatalf("redis deprovision sent %d times while it was down, want retries", n)
		}
		mu.Lock()
		down = false
		mu.Unlock()
		h.waitState("slow", events.TenantFailed, 15*time.Second)
	})
}

func TestOrchestratorRestartMidSagaCompletes(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		var mu sync.Mutex
		hold := true
		h.agents.set(events.StorePostgres, func(cmd *events.StoreCommand) (events.Outcome, bool) {
			for {
				mu.Lock()
				held := hold
				mu.Unlock()
				if !held {
					return "", true
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
		stop := h.startSaga()
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"phoenix"}`)
		deadline := time.Now().Add(10 * time.Second)
		for h.record("phoenix") == nil || h.record("phoenix").Stores[events.StoreMinIO].State != events.StoreProvisioned {
			if time.Now().After(deadline) {
				t.Fatal("saga did not start")
			}
			time.Sleep(20 * time.Millisecond)
		}
		stop() // the only orchestrator dies mid-saga
		mu.Lock()
		hold = false
		mu.Unlock()
		h.startSaga()
		h.waitState("phoenix", events.TenantActive, 15*time.Second)
		if n := h.auditCount(events.AuditTenantProvisioned, "phoenix"); n != 1 {
			t.Fatalf("TENANT_PROVISIONED = %d", n)
		}
	})
}

func TestDeprovisionDeletesSecretsLast(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"gone"}`)
		h.waitState("gone", events.TenantActive, 15*time.Second)
		h.publish(events.SubjectTenantDeprovisionRequested, `{"tenant_id":"gone"}`)
		rec := h.waitState("gone", events.TenantDeprovisioned, 15*time.Second)
		if rec.Secrets != nil {
			t.Fatalf("secrets ref kept: %+v", rec.Secrets)
		}
		obj, _ := h.js.ObjectStore(h.ctx, events.ObjectStoreSecrets)
		if _, err := obj.GetInfo(h.ctx, "gone.sops.yaml"); err == nil {
			t.Fatal("sealed secrets still stored after deprovisioning")
		}
		if n := h.auditCount(events.AuditTenantDeprovisioned, "gone"); n != 1 {
			t.Fatalf("TENANT_DEPROVISIONED = %d", n)
		}
	})
}

func TestBadRequestsAreRejectedAndAudited(t *testing.T) {
	h := newHarness(t)
	h.startSaga()
	bad := []struct{ subject, payload string }{
		{events.SubjectTenantRequested, `not json`},
		{events.SubjectTenantRequested, `{"tenant_id":"Bad_ID"}`},
		{events.SubjectTenantRequested, `{"tenant_id":"tenantprov-x"}`},
		{events.SubjectTenantRequested, `{"tenant_id":"big","pad":"` + strings.Repeat("x", events.MaxPayloadBytes) + `"}`},
		{events.SubjectTenantDeprovisionRequested, `{"tenant_id":"never-was"}`},
	}
	for _, b := range bad {
		h.publish(b.subject, b.payload)
	}
	h.publish(events.SubjectTenantRequested, `{"tenant_id":"good"}`)
	h.waitState("good", events.TenantActive, 15*time.Second) // bad input blocked nothing
	deadline := time.Now().Add(5 * time.Second)
	for {
		rej := h.streamMessages(events.StreamTenants, events.SubjectTenantRejected)
		aud := h.streamMessages(events.StreamAudit, events.AuditSubject(events.AuditTenantRequestRejected))
		if len(rej) == len(bad) && len(aud) == len(bad) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rejections: %d tenant.rejected, %d audit events, want %d each", len(rej), len(aud), len(bad))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, id := range []string{"Bad_ID", "tenantprov-x", "never-was", "big"} {
		if h.record(id) != nil {
			t.Errorf("a record exists for rejected tenant %q", id)
		}
	}
	// Rejected requests are acked, not retried.
	cons, _ := h.js.Consumer(h.ctx, events.StreamTenants, events.ConsumerOrchestratorRequests)
	info, _ := cons.Info(h.ctx)
	if info.NumAckPending != 0 || info.NumRedelivered != 0 {
		t.Fatalf("requests pending %d, redelivered %d; rejected input must be acked once", info.NumAckPending, info.NumRedelivered)
	}
}

// A provision attempt that ends in failure after the rollback began may have
// created part of the tenant after the deprovision ran: the store is
// compensated again. One whose reason is "expired" touched nothing and is
// not.
func TestLateProvisionFailureIsCompensatedAgain(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.startSaga()
		release := make(chan struct{})
		h.agents.set(events.StoreQdrant, func(cmd *events.StoreCommand) (events.Outcome, bool) {
			if cmd.Action == events.ActionProvision {
				return events.OutcomeProvisionFailed, true
			}
			return "", true
		})
		h.agents.set(events.StoreRedis, func(cmd *events.StoreCommand) (events.Outcome, bool) {
			if cmd.Action == events.ActionProvision {
				<-release // still working when the rollback starts
				return events.OutcomeProvisionFailed, true
			}
			return "", true
		})
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"late"}`)
		deadline := time.Now().Add(10 * time.Second)
		for {
			if rec := h.record("late"); rec != nil && rec.State == events.TenantRollingBack {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("rollback did not start")
			}
			time.Sleep(20 * time.Millisecond)
		}
		close(release)
		rec := h.waitState("late", events.TenantFailed, 15*time.Second)
		if n := h.agents.count(events.StoreRedis, events.ActionDeprovision); n < 2 {
			t.Fatalf("redis deprovisioned %d times; the late failure must be compensated again", n)
		}
		if rec.Stores[events.StoreRedis].Attempt < 2 {
			t.Fatalf("redis compensation attempt %d, want >= 2", rec.Stores[events.StoreRedis].Attempt)
		}
		// Another run of the same command failing later is a fact of its
		// own: its audit event is not de-duplicated into the first.
		cmd := h.agents.commands(events.StoreRedis, events.ActionProvision)[0]
		h.agents.answer(cmd, events.OutcomeProvisionFailed, 2, nil)
		var redis int
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			redis = 0
			for _, ev := range h.audits(events.AuditStoreProvisionFailed, "late") {
				if ev.Store == events.StoreRedis {
					redis++
				}
			}
			if redis == 2 {
				break
			}
		}
		if redis != 2 {
			t.Fatalf("redis STORE_PROVISION_FAILED events: %d, want 2 (one per run)", redis)
		}
		h.waitSettled("late", events.TenantFailed, 30*time.Second)
	})
}
