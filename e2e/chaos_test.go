package e2e

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zapcore"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
	"github.com/tenantprov/tenantprov/services/orchestrator/saga"
	"github.com/tenantprov/tenantprov/testkit/capture"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestChaosBounded is the bounded fault suite CI runs with the other tests
// (issue 12; `make chaos` is the full one on the local stack): 30 tenants
// requested and 15 of them deprovisioned once active, on the whole system
// (real stores, the four agents behind the real runtime, two orchestrator
// replicas), while every 2 s one of the four agents or one orchestrator
// replica is killed — its NATS connection dropped in the middle of whatever
// it was doing, nothing drained, nothing acked — and started again 1 s
// later. The saga deadline is short (SAGA_TIMEOUT 20 s) so that a crash
// would fail tenants if the deadline did not extend while the agents work.
// Afterwards: no tenant failed, every tenant settled, exactly one
// TENANT_PROVISIONED per tenant, and the stores agree with the registry
// (nothing leaked, missing, stuck or of another generation).
func TestChaosBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	const (
		tenants      = 30
		deprovisions = 15
		killEvery    = 2 * time.Second
		restartAfter = time.Second
	)
	s := startSystemWith(t, 20*time.Second, func(c *saga.Config) {
		c.MaxTimeout = 5 * time.Minute
		c.ProgressWindow = 10 * time.Second
	})
	// The agents startSystem ran use a long ack wait; these run with the
	// production defaults, so a killed agent's command comes back as in
	// production.
	for _, st := range events.Stores() {
		if err := s.agent(st).Stop(); err != nil {
			t.Fatal(err)
		}
		s.startChaosAgent(st)
	}
	orch := []*killableOrchestrator{s.startKillableOrchestrator(), s.startKillableOrchestrator()}

	ids := make([]string, tenants)
	for i := range ids {
		ids[i] = fmt.Sprintf("chaos-%02d", i)
	}
	wantsDeprovision := func(i int) bool { return i < deprovisions }

	// Faults.
	faultCtx, stopFaults := context.WithCancel(s.ctx)
	var faultsDone sync.WaitGroup
	kills := map[string]int{}
	var killsMu sync.Mutex
	faultsDone.Add(1)
	go func() {
		defer faultsDone.Done()
		rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 12))
		tick := time.NewTicker(killEvery)
		defer tick.Stop()
		for {
			select {
			case <-faultCtx.Done():
				return
			case <-tick.C:
			}
			n := rng.IntN(len(events.Stores()) + len(orch))
			var name string
			var restart func()
			if n < len(events.Stores()) {
				st := events.Stores()[n]
				name = string(st) + "-agent"
				s.agent(st).Kill()
				restart = func() { s.startChaosAgent(st) }
			} else {
				o := orch[n-len(events.Stores())]
				name = fmt.Sprintf("orchestrator-%d", n-len(events.Stores()))
				o.kill()
				restart = o.restart
			}
			killsMu.Lock()
			kills[name]++
			killsMu.Unlock()
			time.Sleep(restartAfter)
			restart()
		}
	}()

	// Load: requests 50 ms apart; each deprovision as soon as its tenant
	// is active.
	asked := map[string]time.Time{}
	for _, id := range ids {
		asked[id] = time.Now()
		s.publishRetrying(events.SubjectTenantRequested, fmt.Sprintf(`{"tenant_id":%q,"request_id":"chaos-%s"}`, id, id))
		time.Sleep(50 * time.Millisecond)
	}
	deprovAsked := map[string]bool{}
	activeAt := map[string]time.Time{}
	settled := func() (unsettled []string, failed []string) {
		for i, id := range ids {
			r := s.record(id)
			if r == nil {
				unsettled = append(unsettled, id)
				continue
			}
			if r.State == events.TenantActive {
				if _, ok := activeAt[id]; !ok {
					activeAt[id] = time.Now()
				}
				if wantsDeprovision(i) && !deprovAsked[id] {
					deprovAsked[id] = true
					s.publishRetrying(events.SubjectTenantDeprovisionRequested, fmt.Sprintf(`{"tenant_id":%q,"request_id":"chaos-%s-d"}`, id, id))
				}
			}
			switch {
			case r.Announced != r.State:
				unsettled = append(unsettled, id)
			case r.State == events.TenantFailed:
				failed = append(failed, fmt.Sprintf("%s: %s", id, r.Reason))
			case wantsDeprovision(i) && r.State == events.TenantDeprovisioned:
			case !wantsDeprovision(i) && r.State == events.TenantActive:
			default:
				unsettled = append(unsettled, id)
			}
		}
		return unsettled, failed
	}
	loadEnd := time.Now().Add(75 * time.Second)
	for time.Now().Before(loadEnd) {
		if u, _ := settled(); len(u) == 0 {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	stopFaults()
	faultsDone.Wait()
	killsMu.Lock()
	t.Logf("kills: %v", kills)
	killsMu.Unlock()

	// Convergence with everything running.
	var unsettled, failed []string
	convergeEnd := time.Now().Add(90 * time.Second)
	for {
		unsettled, failed = settled()
		if len(unsettled) == 0 || time.Now().After(convergeEnd) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	var lat []float64
	for id, at := range activeAt {
		lat = append(lat, at.Sub(asked[id]).Seconds())
	}
	sort.Float64s(lat)
	if len(lat) > 0 {
		t.Logf("requested->active: p50 %.1fs, max %.1fs (%d tenants)", lat[len(lat)/2], lat[len(lat)-1], len(lat))
	}
	if len(failed) > 0 {
		t.Errorf("%d tenant(s) failed (a crash must be survived, not rolled back): %v", len(failed), failed)
	}
	if len(unsettled) > 0 {
		t.Errorf("%d tenant(s) not settled after convergence: %v", len(unsettled), unsettled)
	}

	// Exactly one TENANT_PROVISIONED per tenant (each became active once).
	for _, id := range ids {
		if n := s.auditCount(events.AuditTenantProvisioned, id); n != 1 {
			t.Errorf("%s: %d TENANT_PROVISIONED, want 1", id, n)
		}
	}

	// The stores against the registry.
	ctx, cancel := context.WithTimeout(s.ctx, 2*time.Minute)
	defer cancel()
	rep, err := (&inventory.Client{NC: s.js.Conn(), Timeout: 30 * time.Second}).Check(ctx, s.js, "", inventory.Options{})
	if err != nil {
		t.Fatalf("compare stores with the registry: %v", err)
	}
	for _, f := range rep.Findings {
		if f.Category.Problem() || strings.HasPrefix(f.TenantID, "chaos-") {
			t.Errorf("store vs registry: %s %s %s %s %s (%s)", f.Category, f.TenantID, f.Store, f.Kind, f.Name, f.Detail)
		}
	}
	if t.Failed() {
		for i, o := range orch {
			t.Logf("orchestrator-%d log (tail):\n%s", i, tail(o.logText(), 60))
		}
	}
}

// startSystemWith is startSystem with the saga's configuration adjusted.
func startSystemWith(t *testing.T, sagaTimeout time.Duration, tweak func(*saga.Config)) *system {
	t.Helper()
	s := startSystem(t, sagaTimeout)
	tweak(&s.sagaCfg)
	return s
}

// startChaosAgent runs kind's agent with the production agent
// configuration (ack wait, lock TTL), retries kept short.
func (s *system) startChaosAgent(kind events.Store) *storetest.Agent {
	a := storetest.RunAgent(s.t, s.nats, s.newStore(kind), storetest.WithIdentity(s.cp), storetest.WithConfig(func(c *agent.Config) {
		c.RetryBaseDelay = 200 * time.Millisecond
		c.RetryMaxDelay = time.Second
	}))
	s.mu.Lock()
	s.agents[kind] = a
	s.mu.Unlock()
	return a
}

// killableOrchestrator is an orchestrator replica on its own connection:
// kill drops the connection and abandons the replica's work in flight, as
// a SIGKILL would (no drain, no ack); restart starts a fresh replica.
type killableOrchestrator struct {
	s *system

	mu     sync.Mutex
	nc     *nats.Conn
	cancel context.CancelFunc
	logs   []*capture.Log
}

func (s *system) startKillableOrchestrator() *killableOrchestrator {
	o := &killableOrchestrator{s: s}
	o.restart()
	s.t.Cleanup(o.kill)
	return o
}

func (o *killableOrchestrator) restart() {
	s := o.s
	nc, err := nats.Connect(s.nats.URL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		s.t.Errorf("orchestrator connect: %v", err)
		return
	}
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Errorf("orchestrator jetstream: %v", err)
		nc.Close()
		return
	}
	log, buf := capture.NewLogger(zapcore.InfoLevel)
	sg, err := saga.New(s.ctx, s.sagaCfg, js, log, nil)
	if err != nil {
		s.t.Errorf("orchestrator: %v", err)
		nc.Close()
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	go func() { _ = sg.Run(ctx) }()
	o.mu.Lock()
	o.nc, o.cancel = nc, cancel
	o.logs = append(o.logs, buf)
	o.mu.Unlock()
}

func (o *killableOrchestrator) kill() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.nc != nil {
		o.nc.Close()
		o.cancel()
		o.nc = nil
	}
}

func (o *killableOrchestrator) logText() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var b strings.Builder
	for i, l := range o.logs {
		fmt.Fprintf(&b, "--- incarnation %d\n%s", i, l.String())
	}
	return b.String()
}

// publishRetrying publishes a request, retrying while JetStream does not
// acknowledge it.
func (s *system) publishRetrying(subject, payload string) {
	s.t.Helper()
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		_, err := s.reqJS.Publish(ctx, subject, []byte(payload))
		cancel()
		if err == nil {
			return
		}
		if i == 10 {
			s.t.Fatalf("publish %s: %v", subject, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	return strings.Join(parts[max(0, len(parts)-lines):], "\n")
}
