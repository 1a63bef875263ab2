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

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// These tests are issue 12's agent half: one owner per tenant across
// replicas, a dead agent's command coming back within AckWait, provisions
// bound by their deadline, Run numbering executions, and a bounded stop.
// Each runs on a single server; those that matter most for correctness
// also on a 3-node cluster with every stream and bucket at 3 replicas.

// topology starts agents on one kind of NATS deployment.
type topology struct {
	name string
	run  func(t *testing.T, st agent.Store, opts ...storetest.AgentOption) *storetest.Agent
}

func singleServer(t *testing.T) topology {
	n := testkit.StartNATS(t)
	return topology{"single", func(t *testing.T, st agent.Store, opts ...storetest.AgentOption) *storetest.Agent {
		t.Helper()
		return storetest.RunAgent(t, n, st, opts...)
	}}
}

func threeNodeCluster(t *testing.T) topology {
	c := testkit.StartNATSCluster(t, 3)
	return topology{"cluster3", func(t *testing.T, st agent.Store, opts ...storetest.AgentOption) *storetest.Agent {
		t.Helper()
		return storetest.RunAgentOnCluster(t, c, st, opts...)
	}}
}

// exclusiveStore wraps a store and records every moment two calls for one
// tenant ran at once, and the order calls started and ended in.
type exclusiveStore struct {
	agent.Store

	mu       sync.Mutex
	active   map[events.TenantID]string // the call running for the tenant
	overlaps []string
	log      []string
}

func newExclusiveStore(st agent.Store) *exclusiveStore {
	return &exclusiveStore{Store: st, active: map[events.TenantID]string{}}
}

func (s *exclusiveStore) enter(tenant events.TenantID, call string) func() {
	s.mu.Lock()
	if other, busy := s.active[tenant]; busy {
		s.overlaps = append(s.overlaps, fmt.Sprintf("%s of %s started while its %s ran", call, tenant, other))
	}
	s.active[tenant] = call
	s.log = append(s.log, "start "+call)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.active, tenant)
		s.log = append(s.log, "end "+call)
		s.mu.Unlock()
	}
}

func (s *exclusiveStore) Provision(ctx context.Context, req agent.ProvisionRequest) (agent.ProvisionResponse, error) {
	defer s.enter(req.Tenant, "provision")()
	return s.Store.Provision(ctx, req)
}

func (s *exclusiveStore) Verify(ctx context.Context, req agent.VerifyRequest) (agent.VerifyResponse, error) {
	defer s.enter(req.Tenant, "verify")()
	return s.Store.Verify(ctx, req)
}

func (s *exclusiveStore) Deprovision(ctx context.Context, req agent.DeprovisionRequest) (agent.DeprovisionResponse, error) {
	defer s.enter(req.Tenant, "deprovision")()
	return s.Store.Deprovision(ctx, req)
}

func (s *exclusiveStore) check(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.overlaps {
		t.Errorf("concurrent store calls for one tenant: %s", o)
	}
}

func (s *exclusiveStore) calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.log...)
}

// consumerInfo is the agent consumer's state.
func consumerInfo(ctx context.Context, t *testing.T, a *storetest.Agent) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := a.JS.Consumer(ctx, events.StreamStoreCommands, events.AgentConsumer(a.Kind))
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	return ci
}

// blockFirstProvision makes the first provision of tenant wait until
// release is closed (or its context ends); started is closed when it
// begins.
func blockFirstProvision(st *memStore, tenant events.TenantID) (started, release chan struct{}) {
	started, release = make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	st.beforeProvision = func(ctx context.Context, req agent.ProvisionRequest) error {
		if req.Tenant != tenant || !first.CompareAndSwap(false, true) {
			return nil
		}
		close(started)
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return started, release
}

func waitClosed(ctx context.Context, t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatalf("%s: %v", what, ctx.Err())
	}
}

// Interleaving 1: a deprovision (compensation) of a tenant whose provision
// is still running on another replica waits for it instead of running
// alongside it.
func TestAgentOneOwnerPerTenantAcrossReplicas(t *testing.T) {
	t.Run("single", func(t *testing.T) { testOneOwnerPerTenant(t, singleServer(t), time.Second) })
	// A provision running longer than the lock's TTL keeps its lock (it is
	// refreshed) on replicated storage too.
	t.Run("cluster3", func(t *testing.T) { testOneOwnerPerTenant(t, threeNodeCluster(t), events.AgentLockTTL+5*time.Second) })
}

// testOneOwnerPerTenant holds a provision for hold while a deprovision of
// the same tenant is delivered to the other replica.
func testOneOwnerPerTenant(t *testing.T, top topology, hold time.Duration) {
	ctx := testCtx(t, 2*time.Minute)
	mem := newMemStore("")
	st := newExclusiveStore(mem)
	started, release := blockFirstProvision(mem, "racy")
	one := func(c *agent.Config) { c.MaxInFlight = 1 }
	a := top.run(t, st, storetest.WithName("redis-agent-1"), storetest.WithConfig(one))

	a.Send(ctx, t, a.NewCommand("racy", 1, events.ActionProvision))
	waitClosed(ctx, t, "provision started", started)
	// Replica 1's only slot is busy: the deprovision goes to replica 2.
	b := top.run(t, st, storetest.WithIdentity(a.Identity), storetest.WithName("redis-agent-2"))
	a.Send(ctx, t, a.NewCommand("racy", 1, events.ActionDeprovision))
	waitFor(ctx, t, "deprovision delivered to replica 2", func() error {
		if ci := consumerInfo(ctx, t, a); ci.NumPending != 0 || ci.Delivered.Consumer < 2 {
			return fmt.Errorf("%d undelivered, %d deliveries", ci.NumPending, ci.Delivered.Consumer)
		}
		return nil
	})
	// Give an unguarded deprovision every chance to run alongside.
	time.Sleep(hold)
	if calls := st.calls(); len(calls) != 1 {
		t.Errorf("store calls while the provision runs: %v, want only its start", calls)
	}
	close(release)

	p := a.Await(ctx, t, 0, storetest.For("racy", 1, events.OutcomeProvisioned, events.OutcomeProvisionFailed))
	d := a.Await(ctx, t, 0, storetest.For("racy", 1, events.OutcomeDeprovisioned, events.OutcomeDeprovisionFailed))
	settled(ctx, t, a)
	st.check(t)
	if p.Outcome != events.OutcomeProvisioned || d.Outcome != events.OutcomeDeprovisioned {
		t.Fatalf("outcomes %s (%s), %s (%s)", p.Outcome, p.Error, d.Outcome, d.Error)
	}
	if got := d.Header.Get(events.HeaderSource); got != "redis-agent-2" {
		t.Errorf("deprovision answered by %q, want redis-agent-2", got)
	}
	if calls := st.calls(); strings.Join(calls, ",") != "start provision,end provision,start verify,end verify,start deprovision,end deprovision" {
		t.Errorf("store calls %v, want provision and verify, then deprovision", calls)
	}
	if ok, _ := mem.harness().Exists(ctx, "racy"); ok {
		t.Error("the tenant exists after its deprovision: the deprovision ran before the provision finished")
	}
	_ = b
}

// A lock left by a holder that died (its entry written, never refreshed
// nor released) expires; the command waiting for it then runs.
func TestAgentAbandonedLockExpires(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	n := testkit.StartNATS(t)
	mem := newMemStore("")
	a := storetest.RunAgent(t, n, mem)
	kv, err := a.JS.KeyValue(ctx, events.KVAgentLocks)
	if err != nil {
		t.Fatalf("lock bucket: %v", err)
	}
	if st, err := kv.Status(ctx); err != nil || st.TTL() != events.AgentLockTTL {
		t.Fatalf("lock bucket TTL %v (%v), want %s", st.TTL(), err, events.AgentLockTTL)
	}
	key := events.AgentLockKey(a.Kind, "orphan")
	abandoned := []byte(`{"holder":"redis-agent/dead"}`)
	if _, err := kv.Create(ctx, key, abandoned); err != nil {
		t.Fatalf("create the abandoned lock: %v", err)
	}
	var early atomic.Bool
	mem.beforeProvision = func(ctx context.Context, req agent.ProvisionRequest) error {
		e, err := kv.Get(ctx, key)
		if err != nil || string(e.Value()) == string(abandoned) {
			early.Store(true)
		}
		return nil
	}

	r, _ := a.Provision(ctx, t, "orphan", 1)
	if early.Load() {
		t.Fatal("the provision ran while the abandoned lock was still there")
	}
	if r.Run < 1 {
		t.Errorf("Run %d", r.Run)
	}
	settled(ctx, t, a)
	if _, err := kv.Get(ctx, key); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
		t.Errorf("lock after the command: %v, want released", err)
	}
}

// Crash survival: a replica that dies mid-command (its connection gone)
// neither acks nor answers; the command comes back within AckWait to
// another replica, which runs it once the dead one's lock has expired.
func TestAgentCrashedCommandIsRedeliveredToAnotherReplica(t *testing.T) {
	t.Run("single", func(t *testing.T) { testCrashRedelivery(t, singleServer(t)) })
	t.Run("cluster3", func(t *testing.T) { testCrashRedelivery(t, threeNodeCluster(t)) })
}

func testCrashRedelivery(t *testing.T, top topology) {
	// Well inside a saga deadline: redelivery after AckWait, the dead
	// holder's lock gone after AgentLockTTL, then the command itself.
	ctx := testCtx(t, 60*time.Second)
	mem := newMemStore("")
	st := newExclusiveStore(mem)
	started, release := blockFirstProvision(mem, "phoenix")
	defer close(release)
	a := top.run(t, st, storetest.WithName("redis-agent-1"))
	if a.Config.AckWait != agent.DefaultConfig().AckWait {
		t.Fatalf("test agent AckWait %s, want the production default", a.Config.AckWait)
	}
	a.Send(ctx, t, a.NewCommand("phoenix", 1, events.ActionProvision))
	waitClosed(ctx, t, "provision started", started)
	// Replica 2 starts once the command runs on replica 1.
	b := top.run(t, st, storetest.WithIdentity(a.Identity), storetest.WithName("redis-agent-2"))
	a.Kill()

	r := a.Await(ctx, t, 0, storetest.For("phoenix", 1))
	if r.Outcome != events.OutcomeProvisioned {
		t.Fatalf("after the crash: %s (%s): %s", r.Outcome, r.Reason, r.Error)
	}
	if r.Run < 2 {
		t.Errorf("Run %d, want at least 2 (the second delivery)", r.Run)
	}
	if got := r.Header.Get(events.HeaderSource); got != "redis-agent-2" {
		t.Errorf("answered by %q, want redis-agent-2", got)
	}
	if !strings.HasSuffix(r.Header.Get(events.HeaderMsgID), fmt.Sprintf(":r%d", r.Run)) {
		t.Errorf("Nats-Msg-Id %q does not carry Run %d", r.Header.Get(events.HeaderMsgID), r.Run)
	}
	settled(ctx, t, a)
	st.check(t)
	if n := mem.provisions.Load(); n != 2 {
		t.Errorf("Provision called %d times, want 2 (the crashed run and the redelivery)", n)
	}
	b.Open(t, r.StoreResult)
}

// Interleaving 2, agent half: a provision never works on after its
// deadline, and the failure it answers is not "expired" (the store may
// have been touched).
func TestAgentProvisionIsCutAtItsDeadline(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	mem := newMemStore("")
	var cut atomic.Pointer[string]
	mem.beforeProvision = func(ctx context.Context, _ agent.ProvisionRequest) error {
		<-ctx.Done() // a store call that would run long past the deadline
		why := fmt.Sprint(context.Cause(ctx))
		cut.Store(&why)
		return ctx.Err()
	}
	a := storetest.RunAgent(t, n, mem)

	cmd := a.NewCommand("slowpoke", 1, events.ActionProvision)
	cmd.Deadline = time.Now().Add(2 * time.Second)
	a.Send(ctx, t, cmd)
	r := a.Await(ctx, t, 0, storetest.For("slowpoke", 1))
	if r.Outcome != events.OutcomeProvisionFailed || r.Reason == events.ReasonExpired {
		t.Fatalf("reply %s (%s), want provision_failed, not expired", r.Outcome, r.Reason)
	}
	if p := cut.Load(); p == nil || !strings.Contains(*p, "deadline") {
		t.Fatalf("store call ended by %v, want the command's deadline", p)
	}
	settled(ctx, t, a)
	if n := mem.provisions.Load(); n != 1 {
		t.Errorf("Provision called %d times, want 1 (no retry past the deadline)", n)
	}

	// A deprovision is not bound by the saga deadline.
	mem.beforeDeprovision = func(ctx context.Context, _ agent.DeprovisionRequest) error {
		select {
		case <-time.After(3 * time.Second):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	dc := a.NewCommand("slowpoke", 1, events.ActionDeprovision)
	dc.Deadline = time.Now().Add(time.Second)
	after := a.Cursor(ctx, t)
	a.Send(ctx, t, dc)
	if d := a.Await(ctx, t, after, storetest.For("slowpoke", 1, events.OutcomeDeprovisioned, events.OutcomeDeprovisionFailed)); d.Outcome != events.OutcomeDeprovisioned {
		t.Fatalf("deprovision past the saga deadline: %s (%s): %s", d.Outcome, d.Reason, d.Error)
	}
}

// Every execution of a command carries its delivery count as Run, so the
// results of one command are ordered.
func TestAgentRunIsTheDeliveryCount(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	mem := newMemStore("")
	var calls atomic.Int64
	mem.beforeDeprovision = func(context.Context, agent.DeprovisionRequest) error {
		if calls.Add(1) < 3 {
			return errors.New("connection reset by peer")
		}
		return nil
	}
	a := storetest.RunAgent(t, n, mem)

	r, _ := a.Provision(ctx, t, "counted", 1)
	if r.Run != 1 {
		t.Errorf("first delivery answered with Run %d, want 1", r.Run)
	}
	d := a.Deprovision(ctx, t, "counted", 1)
	if d.Run != 3 {
		t.Errorf("third delivery answered with Run %d, want 3", d.Run)
	}
	if id := d.Header.Get(events.HeaderMsgID); !strings.HasSuffix(id, ":r3") {
		t.Errorf("Nats-Msg-Id %q, want it to end in :r3", id)
	}
	settled(ctx, t, a)
}

// Item 7, agent half: a replica pulls a command only when a worker is free,
// so no command waits in the replica with its ack timer running.
func TestAgentPullsOnlyForFreeWorkers(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	mem := newMemStore("")
	started, release := blockFirstProvision(mem, "first")
	a := storetest.RunAgent(t, n, mem, storetest.WithConfig(func(c *agent.Config) { c.MaxInFlight = 1 }))

	a.Send(ctx, t, a.NewCommand("first", 1, events.ActionProvision))
	waitClosed(ctx, t, "first provision started", started)
	for i := range 3 {
		a.Send(ctx, t, a.NewCommand(events.MustTenantID(fmt.Sprintf("queued-%d", i)), 1, events.ActionProvision))
	}
	time.Sleep(time.Second) // let a prefetching loop pull
	if ci := consumerInfo(ctx, t, a); ci.NumAckPending != 1 || ci.NumPending != 3 {
		t.Errorf("%d delivered and unacked, %d waiting in the stream; want 1 and 3", ci.NumAckPending, ci.NumPending)
	}
	close(release)
	waitFor(ctx, t, "all answered", func() error {
		if got := len(a.Results(ctx, t, 0)); got != 4 {
			return fmt.Errorf("%d of 4", got)
		}
		return nil
	})
	settled(ctx, t, a)
}

// Item 7, agent half: SIGTERM is bounded by SHUTDOWN_TIMEOUT; a command
// still running then is handed back and finished by another replica.
func TestAgentStopIsBoundedByShutdownTimeout(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	n := testkit.StartNATS(t)
	mem := newMemStore("")
	started, release := blockFirstProvision(mem, "stubborn")
	defer close(release)
	a := storetest.RunAgent(t, n, mem, storetest.WithName("redis-agent-1"),
		storetest.WithConfig(func(c *agent.Config) { c.ShutdownTimeout = 3 * time.Second }))

	a.Send(ctx, t, a.NewCommand("stubborn", 1, events.ActionProvision))
	waitClosed(ctx, t, "provision started", started)
	begin := time.Now()
	stopped := a.StopAsync()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Stop: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not stop within 30s with SHUTDOWN_TIMEOUT=3s and a command in flight")
	}
	t.Logf("stopped in %s", time.Since(begin).Round(time.Millisecond))
	if got := a.Results(ctx, t, 0); len(got) != 0 {
		t.Fatalf("the interrupted command was answered: %+v", got[0].StoreResult)
	}

	b := storetest.RunAgent(t, n, mem, storetest.WithIdentity(a.Identity), storetest.WithName("redis-agent-2"))
	r := b.Await(ctx, t, 0, storetest.For("stubborn", 1))
	if r.Outcome != events.OutcomeProvisioned || r.Run != 2 {
		t.Fatalf("handed-back command: %s (%s) run %d, want provisioned on run 2", r.Outcome, r.Reason, r.Run)
	}
	settled(ctx, t, b)
}

// A holder whose lock was taken from it (here: removed, as expiry during a
// long stall would) stops its store call at its next refresh and hands the
// command back; the redelivery runs it under a fresh lock.
func TestAgentStopsWorkWhenItsLockIsLost(t *testing.T) {
	ctx := testCtx(t, time.Minute)
	n := testkit.StartNATS(t)
	mem := newMemStore("")
	started, release := blockFirstProvision(mem, "usurped")
	defer close(release)
	var cause atomic.Pointer[string]
	inner := mem.beforeProvision
	mem.beforeProvision = func(ctx context.Context, req agent.ProvisionRequest) error {
		err := inner(ctx, req)
		if err != nil {
			why := err.Error()
			cause.Store(&why)
		}
		return err
	}
	a := storetest.RunAgent(t, n, mem)
	kv, err := a.JS.KeyValue(ctx, events.KVAgentLocks)
	if err != nil {
		t.Fatal(err)
	}

	a.Send(ctx, t, a.NewCommand("usurped", 1, events.ActionProvision))
	waitClosed(ctx, t, "provision started", started)
	key := events.AgentLockKey(a.Kind, "usurped")
	if _, err := kv.Get(ctx, key); err != nil {
		t.Fatalf("no lock while the provision runs: %v", err)
	}
	if err := kv.Purge(ctx, key); err != nil {
		t.Fatal(err)
	}

	r := a.Await(ctx, t, 0, storetest.For("usurped", 1))
	if r.Outcome != events.OutcomeProvisioned || r.Run != 2 {
		t.Fatalf("%s (%s) run %d, want provisioned on the second delivery", r.Outcome, r.Error, r.Run)
	}
	if c := cause.Load(); c == nil || !strings.Contains(*c, "lock lost") {
		t.Fatalf("first store call ended with %v, want the lock's loss", c)
	}
	settled(ctx, t, a)
}
