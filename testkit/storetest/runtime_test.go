package storetest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// These tests run the agent runtime (pkg/agent) end to end against a real
// embedded nats-server, through the service skeleton, with the in-memory
// store whose behaviour each test scripts: the transport is what is under
// test. The real stores are tested by their agents.

func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond every 20ms until it returns nil or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() error) {
	t.Helper()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v (last: %v)", what, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// settled waits until STORE_COMMANDS holds no message for the store and its
// consumer has nothing pending: every command was acked or terminated, and
// nothing will be redelivered.
func settled(ctx context.Context, t *testing.T, a *storetest.Agent) {
	t.Helper()
	waitFor(ctx, t, "commands settled", func() error {
		s, err := a.JS.Stream(ctx, events.StreamStoreCommands)
		if err != nil {
			return err
		}
		si, err := s.Info(ctx, jetstream.WithSubjectFilter(events.CommandFilter(a.Kind)))
		if err != nil {
			return err
		}
		c, err := s.Consumer(ctx, events.AgentConsumer(a.Kind))
		if err != nil {
			return err
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return err
		}
		var left uint64
		for _, n := range si.State.Subjects {
			left += n
		}
		if left != 0 || ci.NumAckPending != 0 || ci.NumPending != 0 {
			return fmt.Errorf("%d commands in the stream, %d pending ack, %d undelivered", left, ci.NumAckPending, ci.NumPending)
		}
		return nil
	})
}

func credentialOf(m map[string]any) agent.Credential {
	return agent.Credential{"username": m["username"], "password": secret.String(fmt.Sprint(m["password"]))}
}

func TestAgentProvisionsEndToEnd(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	st := newMemStore("")
	a := storetest.RunAgent(t, n, st)

	tenant := events.MustTenantID("acme")
	res, cred := a.Provision(ctx, t, tenant, 1)
	pw := st.lastPassword.Load()
	if cred["password"] != pw.Reveal() || cred["username"] != "tenant_acme" {
		t.Fatalf("sealed credential %v does not hold the user and the password given to the store", cred)
	}
	if err := st.harness().OwnAccess(ctx, tenant, credentialOf(cred)); err != nil {
		t.Fatalf("the sealed credential does not work: %v", err)
	}
	if !res.Verification.Passed || len(agent.MissingChecks(res.Verification.Checks)) != 0 || len(res.CredentialID) != 16 {
		t.Errorf("result %+v", res.StoreResult)
	}
	for h, want := range map[string]string{
		events.HeaderTenantID: "acme", events.HeaderGeneration: "1", events.HeaderSagaID: res.SagaID,
		events.HeaderSource: "redis-agent", events.HeaderMsgID: events.ResultMsgID(res.StoreResult),
	} {
		if got := res.Header.Get(h); got != want {
			t.Errorf("reply header %s = %q, want %q", h, got, want)
		}
	}
	settled(ctx, t, a)

	a.Deprovision(ctx, t, tenant, 1)
	if ok, _ := st.harness().Exists(ctx, tenant); ok {
		t.Error("tenant still exists after deprovisioned")
	}
	settled(ctx, t, a)
}

func TestAgentExpiredCommandDoesNotTouchTheStore(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	st := newMemStore("")
	a := storetest.RunAgent(t, n, st)

	cmd := a.NewCommand("late", 1, events.ActionProvision)
	cmd.IssuedAt = time.Now().Add(-2 * time.Minute)
	cmd.Deadline = time.Now().Add(-time.Second)
	a.Send(ctx, t, cmd)
	r := a.Await(ctx, t, 0, storetest.For("late", 1))
	if r.Outcome != events.OutcomeProvisionFailed || r.Reason != events.ReasonExpired {
		t.Fatalf("reply %s (%s), want provision_failed (expired)", r.Outcome, r.Reason)
	}
	settled(ctx, t, a)
	if n := st.provisions.Load(); n != 0 {
		t.Fatalf("Provision called %d times for an expired command", n)
	}
}

func TestAgentPermanentErrorIsAnsweredAndNotRedelivered(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	st := newMemStore("")
	st.beforeProvision = func(context.Context, agent.ProvisionRequest) error {
		return agent.Permanent(events.ReasonUnsupported, errors.New("server has no JWT RBAC"))
	}
	a := storetest.RunAgent(t, n, st)

	a.Send(ctx, t, a.NewCommand("perm", 1, events.ActionProvision))
	r := a.Await(ctx, t, 0, storetest.For("perm", 1))
	if r.Outcome != events.OutcomeProvisionFailed || r.Reason != events.ReasonUnsupported || !strings.Contains(r.Error, "JWT RBAC") {
		t.Fatalf("reply %s (%s): %s", r.Outcome, r.Reason, r.Error)
	}
	settled(ctx, t, a) // terminated: nothing left to redeliver
	if n := st.provisions.Load(); n != 1 {
		t.Fatalf("Provision called %d times, want 1", n)
	}
	if got := a.Results(ctx, t, 0); len(got) != 1 {
		t.Fatalf("%d replies, want 1", len(got))
	}
}

func TestAgentRetriesTransientErrors(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	st := newMemStore("")
	var calls atomic.Int64
	st.beforeProvision = func(context.Context, agent.ProvisionRequest) error {
		if calls.Add(1) <= 2 {
			return errors.New("dial tcp 127.0.0.1:6379: connection refused")
		}
		return nil
	}
	a := storetest.RunAgent(t, n, st)

	_, cred := a.Provision(ctx, t, "flaky", 1)
	settled(ctx, t, a)
	if n := st.provisions.Load(); n != 3 {
		t.Fatalf("Provision called %d times, want 3 (two transient failures, then success)", n)
	}
	results := a.Results(ctx, t, 0)
	if len(results) != 1 || results[0].Outcome != events.OutcomeProvisioned {
		t.Fatalf("replies %+v, want exactly one provisioned", results)
	}
	if cred["password"] != st.lastPassword.Load().Reveal() {
		t.Fatal("the credential is not the one the store holds")
	}
	if got := len(a.Logs.FilterMessage("command failed; will be redelivered").All()); got != 2 {
		t.Errorf("%d retry log lines, want 2", got)
	}
}

func TestAgentGivesUpAfterMaxDeliver(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	st := newMemStore("")
	st.beforeProvision = func(context.Context, agent.ProvisionRequest) error { return errors.New("timeout") }
	st.beforeDeprovision = func(context.Context, agent.DeprovisionRequest) error { return errors.New("timeout") }
	a := storetest.RunAgent(t, n, st, storetest.WithConfig(func(c *agent.Config) { c.MaxDeliver = 3 }))

	a.Send(ctx, t, a.NewCommand("stuck", 1, events.ActionProvision))
	a.Send(ctx, t, a.NewCommand("stuck", 1, events.ActionDeprovision))
	p := a.Await(ctx, t, 0, storetest.For("stuck", 1, events.OutcomeProvisionFailed, events.OutcomeProvisioned))
	d := a.Await(ctx, t, 0, storetest.For("stuck", 1, events.OutcomeDeprovisionFailed, events.OutcomeDeprovisioned))
	for _, r := range []storetest.Result{p, d} {
		if r.Reason != events.ReasonStoreError || !strings.Contains(r.Error, "gave up after 3 deliveries") {
			t.Errorf("%s: reason %s, error %q", r.Outcome, r.Reason, r.Error)
		}
	}
	settled(ctx, t, a)
	if p, d := st.provisions.Load(), st.deprovisions.Load(); p != 3 || d != 3 {
		t.Fatalf("store called %d provisions and %d deprovisions, want 3 each", p, d)
	}
}

func TestAgentDuplicateCommands(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	st := newMemStore("")
	a := storetest.RunAgent(t, n, st)

	// The same command published twice (a retried publish): JetStream drops
	// the duplicate, one provision, one reply.
	cmd := a.NewCommand("dup", 1, events.ActionProvision)
	a.Send(ctx, t, cmd)
	a.Send(ctx, t, cmd)
	first := a.Await(ctx, t, 0, storetest.For("dup", 1, events.OutcomeProvisioned))
	settled(ctx, t, a)

	// The same command delivered again (as after a lost ack): provisioned
	// again with a new credential, and a new reply that is not mistaken
	// for a duplicate of the first.
	data, _ := events.Encode(cmd)
	a.SendRaw(ctx, t, events.CommandSubject(cmd.Store, cmd.Action), data, events.CommandMsgID(cmd)+":redelivered")
	second := a.Await(ctx, t, first.Seq, storetest.For("dup", 1, events.OutcomeProvisioned))
	settled(ctx, t, a)

	if got := st.provisions.Load(); got != 2 {
		t.Fatalf("Provision called %d times, want 2", got)
	}
	all := a.Results(ctx, t, 0)
	if len(all) != 2 || first.CredentialID == second.CredentialID {
		t.Fatalf("%d replies (credential ids %s, %s), want 2 with distinct credentials", len(all), first.CredentialID, second.CredentialID)
	}
	if a.Open(t, second.StoreResult)["password"] != st.lastPassword.Load().Reveal() {
		t.Error("the later reply does not carry the credential the store holds")
	}
	// A retried publish of a reply is dropped by JetStream: one logical
	// result per credential.
	ack, err := a.JS.Publish(ctx, events.EventSubject(a.Kind, events.OutcomeProvisioned), mustEncode(t, first.StoreResult),
		jetstream.WithMsgID(events.ResultMsgID(first.StoreResult)))
	if err != nil || !ack.Duplicate {
		t.Fatalf("republished reply: ack %+v, err %v; want a duplicate", ack, err)
	}
}

func mustEncode(t *testing.T, p events.Payload) []byte {
	t.Helper()
	b, err := events.Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAgentTerminatesInvalidCommands(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	st := newMemStore("")
	a := storetest.RunAgent(t, n, st)

	a.SendRaw(ctx, t, "store.cmd.redis.provision", []byte("not json {"), "")
	a.SendRaw(ctx, t, "store.cmd.redis.provision", []byte(`{"tenant_id":"half","generation":1,"saga_id":"s1","store":"redis","action":"provision"}`), "")
	other := a.NewCommand("misrouted", 1, events.ActionProvision)
	other.Store = events.StorePostgres
	a.SendRaw(ctx, t, "store.cmd.redis.provision", mustEncode(t, other), "")

	half := a.Await(ctx, t, 0, storetest.For("half", 1))
	mis := a.Await(ctx, t, 0, storetest.For("misrouted", 1))
	for _, r := range []storetest.Result{half, mis} {
		if r.Outcome != events.OutcomeProvisionFailed || r.Reason != events.ReasonInvalid {
			t.Errorf("%s: %s (%s), want provision_failed (invalid)", r.TenantID, r.Outcome, r.Reason)
		}
	}
	settled(ctx, t, a) // the unreadable one was terminated too
	if n := st.provisions.Load(); n != 0 {
		t.Fatalf("Provision called %d times for invalid commands", n)
	}
	if got := len(a.Results(ctx, t, 0)); got != 2 {
		t.Fatalf("%d replies, want 2 (the unreadable command cannot be answered)", got)
	}
	// Still serving.
	a.Provision(ctx, t, "after", 1)
}

func TestAgentReplicasShareTheConsumer(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	st := newMemStore("")
	st.beforeProvision = func(ctx context.Context, _ agent.ProvisionRequest) error {
		select {
		case <-time.After(100 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	one, two := &countingStore{Store: st}, &countingStore{Store: st}
	a := storetest.RunAgent(t, n, one, storetest.WithName("redis-agent-1"), storetest.WithConfig(func(c *agent.Config) { c.MaxInFlight = 2 }))
	b := storetest.RunAgent(t, n, two, storetest.WithIdentity(a.Identity), storetest.WithName("redis-agent-2"), storetest.WithConfig(func(c *agent.Config) { c.MaxInFlight = 2 }))

	const tenants = 12
	for i := range tenants {
		a.Send(ctx, t, a.NewCommand(events.MustTenantID(fmt.Sprintf("rep-%02d", i)), 1, events.ActionProvision))
	}
	waitFor(ctx, t, "all replies", func() error {
		if got := len(a.Results(ctx, t, 0)); got < tenants {
			return fmt.Errorf("%d of %d replies", got, tenants)
		}
		return nil
	})
	settled(ctx, t, a)
	sources := map[string]int{}
	perTenant := map[string]int{}
	for _, r := range a.Results(ctx, t, 0) {
		if r.Outcome != events.OutcomeProvisioned {
			t.Errorf("%s: %s", r.TenantID, r.Outcome)
		}
		perTenant[r.TenantID]++
		sources[r.Header.Get(events.HeaderSource)]++
		b.Open(t, r.StoreResult) // sealed to the shared identity
	}
	if len(perTenant) != tenants {
		t.Fatalf("replies for %d tenants, want %d", len(perTenant), tenants)
	}
	for tn, c := range perTenant {
		if c != 1 {
			t.Errorf("%s answered %d times", tn, c)
		}
	}
	if one.n.Load() == 0 || two.n.Load() == 0 || one.n.Load()+two.n.Load() != tenants {
		t.Fatalf("replica 1 provisioned %d, replica 2 %d; want both to take part and %d in all", one.n.Load(), two.n.Load(), tenants)
	}
	if sources["redis-agent-1"] == 0 || sources["redis-agent-2"] == 0 {
		t.Errorf("reply sources %v, want both replicas", sources)
	}
}

// countingStore counts the provisions one replica performs.
type countingStore struct {
	agent.Store
	n atomic.Int64
}

func (c *countingStore) Provision(ctx context.Context, req agent.ProvisionRequest) (agent.ProvisionResponse, error) {
	c.n.Add(1)
	return c.Store.Provision(ctx, req)
}

func TestAgentDrainsInFlightWorkOnStop(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	st := newMemStore("")
	started := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	st.beforeProvision = func(ctx context.Context, req agent.ProvisionRequest) error {
		if req.Tenant == "slow" {
			once.Do(func() { close(started) })
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	a := storetest.RunAgent(t, n, st)

	a.Send(ctx, t, a.NewCommand("slow", 1, events.ActionProvision))
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the slow provision never started")
	}
	stopped := a.StopAsync()
	waitFor(ctx, t, "agent stopping", func() error {
		if a.Logs.FilterMessageSnippet("stopping").Len() == 0 {
			return errors.New("not stopping yet")
		}
		return nil
	})
	// Sent after the stop: must stay in the stream for the next replica.
	a.Send(ctx, t, a.NewCommand("later", 1, events.ActionProvision))
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while a command was in flight", err)
	default:
	}
	close(release)
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Stop: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Stop did not return after the in-flight command finished")
	}

	r := a.Await(ctx, t, 0, storetest.For("slow", 1))
	if r.Outcome != events.OutcomeProvisioned {
		t.Fatalf("in-flight command answered %s (%s)", r.Outcome, r.Reason)
	}
	if got := a.Results(ctx, t, 0); len(got) != 1 {
		t.Fatalf("%d replies after stop, want only the in-flight one", len(got))
	}
	s, err := a.JS.Stream(ctx, events.StreamStoreCommands)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLastMsgForSubject(ctx, events.CommandSubject(a.Kind, events.ActionProvision)); err != nil {
		t.Fatalf("the command sent after stop is not in the stream any more: %v", err)
	}
	si, _ := s.Info(ctx)
	if si.State.Msgs != 1 {
		t.Fatalf("%d commands in the stream, want 1 (the acked one gone, the later one kept)", si.State.Msgs)
	}
	if st.provisions.Load() != 1 {
		t.Fatalf("Provision called %d times, want 1 (nothing fetched after stop)", st.provisions.Load())
	}
}

func TestAgentSanitisesStoreErrors(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	st := newMemStore("")
	var pw atomic.Pointer[string]
	st.beforeProvision = func(_ context.Context, req agent.ProvisionRequest) error {
		p := req.Password.Reveal()
		pw.Store(&p)
		return agent.Permanent(events.ReasonStoreError, fmt.Errorf(
			"ERROR: permission denied in statement: ALTER ROLE x PASSWORD 'the-password' (tried %s via postgres://admin:hunter2@db:5432/x)", p))
	}
	st.beforeDeprovision = func(context.Context, agent.DeprovisionRequest) error {
		return errors.New("dial redis://:hunter2@127.0.0.1:6379: ACL SETUSER x on >the-password failed")
	}
	a := storetest.RunAgent(t, n, st, storetest.WithConfig(func(c *agent.Config) { c.MaxDeliver = 2 }))

	a.Send(ctx, t, a.NewCommand("leaky", 1, events.ActionProvision))
	a.Send(ctx, t, a.NewCommand("leaky", 1, events.ActionDeprovision))
	p := a.Await(ctx, t, 0, storetest.For("leaky", 1, events.OutcomeProvisionFailed))
	d := a.Await(ctx, t, 0, storetest.For("leaky", 1, events.OutcomeDeprovisionFailed))
	settled(ctx, t, a)
	if !strings.Contains(p.Error, "permission denied") || !strings.Contains(d.Error, "failed") {
		t.Errorf("sanitising lost the message: %q / %q", p.Error, d.Error)
	}
	for _, leak := range []string{"the-password", "hunter2", *pw.Load()} {
		for _, text := range []string{p.Error, d.Error, a.LogText()} {
			if strings.Contains(text, leak) {
				t.Errorf("%q leaked: %s", leak, text)
			}
		}
	}
	if !strings.Contains(a.LogText(), secret.Redacted) {
		t.Error("the log shows no redaction at all; did the errors reach it?")
	}
}

func TestAgentLeaksNoSecret(t *testing.T) {
	n := testkit.StartNATS(t)
	storetest.RunLeakCheck(t, n, newMemStore("").harness())
}

func TestAgentMetricsAndReadiness(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	st := newMemStore("")
	a := storetest.RunAgent(t, n, st)

	a.Provision(ctx, t, "metered", 1)
	settled(ctx, t, a)
	reg := a.Service().Metrics
	count := func(name string, labels map[string]string) float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		metrics:
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
						continue metrics
					}
				}
				switch {
				case m.Counter != nil:
					return m.GetCounter().GetValue()
				case m.Histogram != nil:
					return float64(m.GetHistogram().GetSampleCount())
				case m.Gauge != nil:
					return m.GetGauge().GetValue()
				}
			}
		}
		return -1
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{agent.MetricCommandsTotal, map[string]string{"store": "redis", "action": "provision", "outcome": "provisioned"}, 1},
		{agent.MetricCommandDuration, map[string]string{"store": "redis", "action": "provision"}, 1},
		{agent.MetricStoreCallDuration, map[string]string{"store": "redis", "call": "provision"}, 1},
		{agent.MetricStoreCallDuration, map[string]string{"store": "redis", "call": "verify"}, 1},
		{agent.MetricCommandsInFlight, map[string]string{"store": "redis"}, 0},
		{agent.MetricLockWait, map[string]string{"store": "redis"}, 1},
	} {
		if got := count(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	problems, err := testutil.GatherAndLint(reg, agent.MetricCommandsTotal, agent.MetricCommandDuration,
		agent.MetricStoreCallDuration, agent.MetricStoreCallErrorsTotal, agent.MetricCommandsInFlight, agent.MetricLockWait)
	if err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %+v", err, problems)
	}

	// Readiness follows the store, and says why without leaking.
	pingErr := errors.New("dial tcp: connect to redis://:hunter2@127.0.0.1:1: connection refused")
	st.pingErr.Store(&pingErr)
	waitFor(ctx, t, "not ready while the store is down", func() error {
		err := a.Ready()
		if err == nil {
			return errors.New("still ready")
		}
		if !strings.Contains(err.Error(), "redis: ") || strings.Contains(err.Error(), "hunter2") {
			t.Fatalf("/readyz: %v", err)
		}
		return nil
	})
	st.pingErr.Store(nil)
	waitFor(ctx, t, "ready again", a.Ready)
}

func TestAgentKeepsLongCommandsAlive(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	st := newMemStore("")
	st.beforeProvision = func(ctx context.Context, _ agent.ProvisionRequest) error {
		select {
		case <-time.After(3 * agent.MinAckWait):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// A command that takes three times AckWait: without InProgress signals
	// JetStream would redeliver it (to this replica's free slots) twice.
	a := storetest.RunAgent(t, n, st, storetest.WithConfig(func(c *agent.Config) { c.AckWait = agent.MinAckWait }))

	a.Provision(ctx, t, "long", 1)
	settled(ctx, t, a)
	if got := st.provisions.Load(); got != 1 {
		t.Fatalf("Provision called %d times, want 1: the command was redelivered while it ran", got)
	}
	c, err := a.JS.Consumer(ctx, events.StreamStoreCommands, events.AgentConsumer(a.Kind))
	if err != nil {
		t.Fatal(err)
	}
	if ci, err := c.Info(ctx); err != nil || ci.NumRedelivered != 0 || ci.Config.AckWait != agent.MinAckWait {
		t.Fatalf("consumer info %+v, %v; want AckWait %s and no redelivery", ci, err, agent.MinAckWait)
	}
}
