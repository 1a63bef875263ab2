package main

import (
	"bytes"
	"context"
	"encoding/json"
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

// syncBuffer is a bytes.Buffer a running command writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// background runs tenantctl until stop is called (as Ctrl-C does: the
// context ends) and returns its exit code then.
type background struct {
	out, err syncBuffer
	cancel   context.CancelFunc
	done     chan int
}

func startTenantctl(t *testing.T, args ...string) *background {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b := &background{cancel: cancel, done: make(chan int, 1)}
	go func() { b.done <- run(ctx, args, &b.out, &b.err) }()
	t.Cleanup(func() { b.stop(t) })
	return b
}

func (b *background) stop(t *testing.T) int {
	t.Helper()
	b.cancel()
	select {
	case code := <-b.done:
		b.done <- code // for a second stop (t.Cleanup)
		return code
	case <-time.After(60 * time.Second):
		t.Fatalf("tenantctl did not end after Ctrl-C:\n%s%s", b.out.String(), b.err.String())
		return -1
	}
}

// waitFor waits until the output holds want.
func (b *background) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(b.out.String(), want) {
		select {
		case code := <-b.done:
			b.done <- code
			t.Fatalf("tenantctl ended (exit %d) before printing %q:\n%s\nstderr:\n%s", code, want, b.out.String(), b.err.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in tenantctl's output:\n%s\nstderr:\n%s", want, b.out.String(), b.err.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// jsonLines decodes every line of out as a tenantEvent.
func jsonLines(t *testing.T, out string) []tenantEvent {
	t.Helper()
	var evs []tenantEvent
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var e tenantEvent
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("not a JSON line: %q: %v", l, err)
		}
		if e.Time.IsZero() || e.Kind == "" || e.TenantID == "" {
			t.Errorf("line lacks time, kind or tenant_id: %q", l)
		}
		evs = append(evs, e)
	}
	return evs
}

// watchBus is what the watch tests write with: the registry and the
// outcome subjects.
type watchBus struct {
	nc *nats.Conn
	js jetstream.JetStream
	kv jetstream.KeyValue
}

func (b *watchBus) put(t *testing.T, rec *events.TenantRecord) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data, err := events.Encode(rec)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.kv.Put(ctx, rec.TenantID, data); err != nil {
		t.Fatal(err)
	}
}

func (b *watchBus) outcome(t *testing.T, subject string, ev *events.TenantOutcomeEvent) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data, err := events.Encode(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.js.Publish(ctx, subject, data); err != nil {
		t.Fatal(err)
	}
}

func newWatchBus(t *testing.T, nc *nats.Conn) *watchBus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := (events.Topology{}).Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, events.KVTenants)
	if err != nil {
		t.Fatal(err)
	}
	return &watchBus{nc: nc, js: js, kv: kv}
}

func record(id string, gen uint64, state events.TenantState, stores map[events.Store]*events.StoreStatus) *events.TenantRecord {
	now := time.Now().UTC()
	if stores == nil {
		stores = map[events.Store]*events.StoreStatus{}
	}
	return &events.TenantRecord{TenantID: id, State: state, Generation: gen, SagaID: id + "-g1", CreatedAt: now, UpdatedAt: now, Stores: stores}
}

// started is a tenant whose saga has begun: postgres pending.
func started(id string) *events.TenantRecord {
	return record(id, 1, events.TenantProvisioning, map[events.Store]*events.StoreStatus{
		events.StorePostgres: {State: events.StorePending, Attempt: 1}})
}

// sagaOf plays the rest of a started tenant's saga into the registry and
// the outcomes: postgres provisioned, the tenant active,
// tenant.provisioned.
func (b *watchBus) sagaOf(t *testing.T, id string) {
	t.Helper()
	b.put(t, record(id, 1, events.TenantProvisioning, map[events.Store]*events.StoreStatus{
		events.StorePostgres: {State: events.StoreProvisioned, Attempt: 1, Verified: true, DurationMS: 42, IsolationMode: "database"}}))
	b.put(t, record(id, 1, events.TenantActive, map[events.Store]*events.StoreStatus{
		events.StorePostgres: {State: events.StoreProvisioned, Attempt: 1, Verified: true, DurationMS: 42, IsolationMode: "database"}}))
	b.outcome(t, events.SubjectTenantProvisioned, &events.TenantOutcomeEvent{Outcome: events.OutcomeProvisioned, TenantID: id, Generation: 1,
		SagaID: id + "-g1", SecretsRef: events.ObjectStoreSecrets + "/" + id + ".sops.yaml", OccurredAt: time.Now().UTC()})
}

// checkOneTenant: every line is acme's; its registry changes are there in
// order, its outcome once (it travels apart from the registry, so its place
// among them is not fixed), and nothing of beta.
func checkOneTenant(t *testing.T, out string) {
	t.Helper()
	evs := jsonLines(t, out)
	var kinds, outcomes []string
	for _, e := range evs {
		if e.TenantID != "acme" {
			t.Errorf("watch acme printed another tenant's event: %+v", e)
		}
		switch {
		case e.Kind == eventState:
			kinds = append(kinds, "state:"+e.State)
		case e.Kind == eventStore:
			kinds = append(kinds, "store:"+e.Store+":"+e.State)
		case e.Kind == eventOutcome:
			outcomes = append(outcomes, e.Subject+":"+e.Outcome)
		}
	}
	want := []string{"state:provisioning", "store:postgres:pending", "store:postgres:provisioned", "state:active"}
	if strings.Join(kinds, " ") != strings.Join(want, " ") {
		t.Errorf("registry events\n  %v\nwant\n  %v\n%s", kinds, want, out)
	}
	if len(outcomes) != 1 || outcomes[0] != "tenant.provisioned:provisioned" {
		t.Errorf("outcomes %v, want one tenant.provisioned\n%s", outcomes, out)
	}
	if strings.Contains(out, "beta") {
		t.Errorf("watch acme printed beta:\n%s", out)
	}
}

// TestWatch: `watch acme -o json` starts with acme's current record, then
// streams its registry changes and outcomes as JSON lines, never another
// tenant's; Ctrl-C ends it with exit 0. Without a tenant, in text, it
// shows every tenant.
func TestWatch(t *testing.T) {
	n := testkit.StartNATS(t)
	b := newWatchBus(t, n.Connect(t))
	b.put(t, started("acme"))
	b.put(t, started("beta"))

	one := startTenantctl(t, "watch", "acme", "-o", "json", "--nats-url", n.URL)
	all := startTenantctl(t, "watch", "--nats-url", n.URL)
	// The current record comes after every subscription is in place.
	one.waitFor(t, `"state":"provisioning"`)
	all.waitFor(t, "beta")
	b.sagaOf(t, "beta")
	b.sagaOf(t, "acme")
	one.waitFor(t, `"subject":"tenant.provisioned"`)
	all.waitFor(t, "acme         outcome")
	if code := one.stop(t); code != exitOK {
		t.Fatalf("watch acme after Ctrl-C: exit %d\n%s", code, one.err.String())
	}
	checkOneTenant(t, one.out.String())
	if e := one.err.String(); e != "" {
		t.Errorf("stderr: %s", e)
	}

	all.waitFor(t, "beta         outcome")
	if code := all.stop(t); code != exitOK {
		t.Fatalf("watch after Ctrl-C: exit %d\n%s", code, all.err.String())
	}
	out := all.out.String()
	t.Logf("watch (text):\n%s", out)
	for _, want := range []string{"acme         state    active (generation 1)", "acme         store    postgres provisioned in 42ms", "beta         outcome  tenant.provisioned (generation 1)"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q", want)
		}
	}
	if strings.HasPrefix(strings.TrimSpace(out), "{") {
		t.Errorf("text output is JSON:\n%s", out)
	}
}

// TestWatchAsOperator: on the authenticated bus, the operator identity
// (.dev/env's NATS_CREDS) may do everything watch does: the registry watch
// and the outcome subscriptions.
func TestWatchAsOperator(t *testing.T) {
	dir := t.TempDir()
	if _, err := busauth.Init(dir); err != nil {
		t.Fatal(err)
	}
	n := testkit.StartNATS(t, testkit.NATSConfigFile(filepath.Join(dir, busauth.ServerConfigFile)))
	orch := n.Connect(t, nats.UserCredentials(busauth.CredsPath(dir, busauth.RoleOrchestrator)),
		nats.CustomInboxPrefix(busauth.RoleOrchestrator.InboxPrefix()))
	b := newWatchBus(t, orch)
	b.put(t, started("acme"))
	b.put(t, started("beta"))

	w := startTenantctl(t, "watch", "acme", "-o", "json", "--nats-url", n.URL, "--creds", busauth.CredsPath(dir, busauth.RoleOperator))
	w.waitFor(t, `"state":"provisioning"`)
	b.sagaOf(t, "beta")
	b.sagaOf(t, "acme")
	w.waitFor(t, `"subject":"tenant.provisioned"`)
	if code := w.stop(t); code != exitOK {
		t.Fatalf("watch after Ctrl-C: exit %d\n%s", code, w.err.String())
	}
	checkOneTenant(t, w.out.String())
}
