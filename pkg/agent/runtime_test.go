package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/pkg/service"
)

// These tests drive one delivery through the runtime with an in-memory
// message and publisher; the transport itself (JetStream consumer, acks,
// redelivery, dedup) is tested against a real nats-server in
// testkit/storetest, which may import the test kit (this production module
// may not).

// scriptStore is a Store whose behaviour each test scripts; it records the
// calls it gets.
type scriptStore struct {
	kind        events.Store
	provision   func(ProvisionRequest) (ProvisionResponse, error)
	verify      func(VerifyRequest) (VerifyResponse, error)
	deprovision func(DeprovisionRequest) (DeprovisionResponse, error)
	// before, when set, runs first in every store call with its context.
	before func(ctx context.Context, call string) error

	mu    sync.Mutex
	calls []string
	pws   []secret.String
}

func (s *scriptStore) record(call string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call)
}

func (s *scriptStore) Calls() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

func (s *scriptStore) Kind() events.Store { return s.kind }

func (s *scriptStore) Provision(ctx context.Context, req ProvisionRequest) (ProvisionResponse, error) {
	s.record("provision")
	if s.before != nil {
		if err := s.before(ctx, "provision"); err != nil {
			return ProvisionResponse{}, err
		}
	}
	s.mu.Lock()
	s.pws = append(s.pws, req.Password)
	s.mu.Unlock()
	if s.provision != nil {
		return s.provision(req)
	}
	return ProvisionResponse{
		Resources:  map[string]string{"user": req.Tenant.RedisUser()},
		Credential: Credential{"username": req.Tenant.RedisUser(), "password": req.Password},
	}, nil
}

func (s *scriptStore) Verify(_ context.Context, req VerifyRequest) (VerifyResponse, error) {
	s.record("verify")
	if s.verify != nil {
		return s.verify(req)
	}
	return allPassed(), nil
}

func (s *scriptStore) Deprovision(ctx context.Context, req DeprovisionRequest) (DeprovisionResponse, error) {
	s.record("deprovision")
	if s.before != nil {
		if err := s.before(ctx, "deprovision"); err != nil {
			return DeprovisionResponse{}, err
		}
	}
	if s.deprovision != nil {
		return s.deprovision(req)
	}
	return DeprovisionResponse{}, nil
}

func (s *scriptStore) Ping(context.Context) error { return nil }

func allPassed() VerifyResponse {
	var r VerifyResponse
	for _, n := range RequiredChecks() {
		r.Checks = append(r.Checks, events.Check{Name: n, Passed: true})
	}
	return r
}

// trail records, in order, what happened to a delivery.
type trail struct {
	mu     sync.Mutex
	events []string
}

func (t *trail) add(e string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.events = append(t.events, e)
}

func (t *trail) list() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.events...)
}

type memMsg struct {
	subject   string
	data      []byte
	delivered uint64
	trail     *trail
	nakDelay  time.Duration
}

var _ jetstream.Msg = (*memMsg)(nil)

func (m *memMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: m.delivered}, nil
}
func (m *memMsg) Data() []byte                    { return m.data }
func (m *memMsg) Headers() nats.Header            { return nil }
func (m *memMsg) Subject() string                 { return m.subject }
func (m *memMsg) Reply() string                   { return "" }
func (m *memMsg) Ack() error                      { m.trail.add("ack"); return nil }
func (m *memMsg) DoubleAck(context.Context) error { m.trail.add("ack"); return nil }
func (m *memMsg) Nak() error                      { m.trail.add("nak"); return nil }
func (m *memMsg) NakWithDelay(d time.Duration) error {
	m.nakDelay = d
	m.trail.add("nak")
	return nil
}
func (m *memMsg) InProgress() error { return nil }
func (m *memMsg) Term() error       { m.trail.add("term"); return nil }
func (m *memMsg) TermWithReason(reason string) error {
	m.trail.add("term:" + reason)
	return nil
}

// memJS records publishes; every other JetStream method panics (unused).
type memJS struct {
	jetstream.JetStream
	trail *trail
	fail  error

	mu   sync.Mutex
	msgs []*nats.Msg
}

func (j *memJS) PublishMsg(_ context.Context, m *nats.Msg, _ ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if j.fail != nil {
		j.trail.add("publish-failed")
		return nil, j.fail
	}
	j.mu.Lock()
	j.msgs = append(j.msgs, m)
	j.mu.Unlock()
	j.trail.add("publish:" + m.Subject)
	return &jetstream.PubAck{Stream: events.StreamStoreEvents}, nil
}

type harness struct {
	rt       *runtime
	store    *scriptStore
	js       *memJS
	trail    *trail
	identity *age.X25519Identity
	logs     *observer.ObservedLogs
}

func newHarness(t *testing.T, store *scriptStore, tweak ...func(*Config)) *harness {
	t.Helper()
	if store.kind == "" {
		store.kind = events.StoreRedis
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.ControlPlaneRecipient = id.Recipient().String()
	cfg.MaxDeliver = 3
	cfg.RetryBaseDelay = 100 * time.Millisecond
	cfg.RetryMaxDelay = time.Second
	for _, f := range tweak {
		f(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rcpts, _ := cfg.Recipients()
	tr := &trail{}
	js := &memJS{trail: tr}
	core, logs := observer.New(zap.DebugLevel)
	svc := &service.Service{Name: "test-agent", Log: zap.New(core), JS: js, Metrics: prometheus.NewRegistry()}
	m, err := NewMetrics(svc.Metrics)
	if err != nil {
		t.Fatal(err)
	}
	rt := newRuntime(svc, decorate(store, m), cfg, rcpts, m)
	rt.useLocker(&memLocker{held: map[string]bool{}})
	return &harness{rt: rt, store: store, js: js, trail: tr, identity: id, logs: logs}
}

func command(action events.Action, mods ...func(*events.StoreCommand)) *events.StoreCommand {
	now := time.Now()
	c := &events.StoreCommand{
		TenantID: "acme", Generation: 2, SagaID: "saga-1", Store: events.StoreRedis, Action: action,
		IssuedAt: now, Deadline: now.Add(time.Minute),
	}
	for _, f := range mods {
		f(c)
	}
	return c
}

// deliver runs one delivery of data on subject and returns the message.
func (h *harness) deliver(t *testing.T, subject string, data []byte, delivery uint64) *memMsg {
	t.Helper()
	m := &memMsg{subject: subject, data: data, delivered: delivery, trail: h.trail}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := newDelivery(ctx, m)
	defer d.cancel(nil)
	h.rt.handle(d)
	return m
}

func (h *harness) deliverCmd(t *testing.T, c *events.StoreCommand, delivery uint64) *memMsg {
	t.Helper()
	data, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return h.deliver(t, events.CommandSubject(c.Store, c.Action), data, delivery)
}

// reply returns the only published result.
func (h *harness) reply(t *testing.T) (*events.StoreResult, *nats.Msg) {
	t.Helper()
	h.js.mu.Lock()
	defer h.js.mu.Unlock()
	if len(h.js.msgs) != 1 {
		t.Fatalf("published %d replies, want 1 (trail %v)", len(h.js.msgs), h.trail.list())
	}
	m := h.js.msgs[0]
	res, err := events.DecodeStoreResult(m.Data)
	if err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	return res, m
}

func wantTrail(t *testing.T, h *harness, want ...string) {
	t.Helper()
	if got := h.trail.list(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("trail = %v, want %v", got, want)
	}
}

func TestProvisionRepliesWithSealedCredentialThenAcks(t *testing.T) {
	h := newHarness(t, &scriptStore{provision: func(req ProvisionRequest) (ProvisionResponse, error) {
		return ProvisionResponse{
			Resources:     map[string]string{"user": "tenant_acme"},
			Credential:    Credential{"username": "tenant_acme", "password": req.Password, "port": 6379},
			IsolationMode: "acl",
			Warnings:      []string{"no aclfile"},
		}, nil
	}})
	h.deliverCmd(t, command(events.ActionProvision), 1)
	wantTrail(t, h, "publish:store.evt.redis.provisioned", "ack")
	res, m := h.reply(t)
	if res.TenantID != "acme" || res.Generation != 2 || res.SagaID != "saga-1" || res.Store != events.StoreRedis {
		t.Errorf("identity = %+v", res)
	}
	if len(res.CredentialID) != 16 || !res.Verification.Passed || res.IsolationMode != "acl" || res.Warnings[0] != "no aclfile" || res.Resources["user"] != "tenant_acme" {
		t.Errorf("result = %+v", res)
	}
	for h2, want := range map[string]string{events.HeaderTenantID: "acme", events.HeaderGeneration: "2", events.HeaderSagaID: "saga-1", events.HeaderSource: "test-agent"} {
		if got := m.Header.Get(h2); got != want {
			t.Errorf("header %s = %q, want %q", h2, got, want)
		}
	}
	plain, err := secret.Open(res.Credential, h.identity)
	if err != nil {
		t.Fatal(err)
	}
	var cred map[string]any
	if err := json.Unmarshal(plain, &cred); err != nil {
		t.Fatal(err)
	}
	pw := h.store.pws[0].Reveal()
	if cred["password"] != pw || cred["username"] != "tenant_acme" || cred["port"] != float64(6379) {
		t.Errorf("sealed credential = %v", cred)
	}
	if len(pw) != 43 {
		t.Errorf("generated password has %d characters, want 43", len(pw))
	}
	for _, step := range []string{events.StepLock, events.StepProvision, events.StepVerify, events.StepSeal} {
		if _, ok := res.TimingsMS[step]; !ok {
			t.Errorf("result timings %v: no %q", res.TimingsMS, step)
		}
	}
	if strings.Contains(string(m.Data), pw) {
		t.Error("the reply carries the password in plain text")
	}
}

func TestExpiredProvisionNeverTouchesTheStore(t *testing.T) {
	h := newHarness(t, &scriptStore{})
	h.deliverCmd(t, command(events.ActionProvision, func(c *events.StoreCommand) { c.Deadline = time.Now().Add(-time.Second) }), 1)
	res, _ := h.reply(t)
	if res.Outcome != events.OutcomeProvisionFailed || res.Reason != events.ReasonExpired {
		t.Errorf("outcome %s reason %s, want provision_failed/expired", res.Outcome, res.Reason)
	}
	if c := h.store.Calls(); len(c) != 0 {
		t.Errorf("store calls %v, want none", c)
	}
	wantTrail(t, h, "publish:store.evt.redis.provision_failed", "term:expired")

	// A redelivery past the deadline may have touched the store before:
	// not "expired", and still no store call.
	h2 := newHarness(t, &scriptStore{})
	h2.deliverCmd(t, command(events.ActionProvision, func(c *events.StoreCommand) { c.Deadline = time.Now().Add(-time.Second) }), 2)
	if res, _ := h2.reply(t); res.Reason != events.ReasonStoreError {
		t.Errorf("redelivered past deadline: reason %s, want store_error", res.Reason)
	}
	if c := h2.store.Calls(); len(c) != 0 {
		t.Errorf("store calls %v, want none", c)
	}
}

func TestErrorsAreClassifiedOnce(t *testing.T) {
	transient := errors.New("connection reset")
	cases := []struct {
		name       string
		action     events.Action
		err        error
		delivery   uint64
		deadline   time.Duration
		wantTrail  []string
		wantReason string
	}{
		{"permanent", events.ActionProvision, Permanent(events.ReasonUnsupported, errors.New("no JWT RBAC")), 1, time.Minute,
			[]string{"publish:store.evt.redis.provision_failed", "term:unsupported"}, events.ReasonUnsupported},
		{"conflict", events.ActionProvision, Conflict("user tenant_acme"), 1, time.Minute,
			[]string{"publish:store.evt.redis.provision_failed", "term:conflict"}, events.ReasonConflict},
		{"bare ErrConflict", events.ActionProvision, fmt.Errorf("db: %w", ErrConflict), 1, time.Minute,
			[]string{"publish:store.evt.redis.provision_failed", "term:conflict"}, events.ReasonConflict},
		{"unknown reason code", events.ActionDeprovision, Permanent("oops", errors.New("x")), 1, time.Minute,
			[]string{"publish:store.evt.redis.deprovision_failed", "term:store_error"}, events.ReasonStoreError},
		{"transient retried", events.ActionProvision, transient, 1, time.Minute,
			[]string{"nak"}, ""},
		{"transient deprovision retried", events.ActionDeprovision, transient, 2, -time.Minute,
			[]string{"nak"}, ""},
		{"transient on last delivery", events.ActionDeprovision, transient, 3, time.Minute,
			[]string{"publish:store.evt.redis.deprovision_failed", "term:store_error"}, events.ReasonStoreError},
		{"transient past deadline", events.ActionProvision, transient, 1, 50 * time.Millisecond,
			[]string{"publish:store.evt.redis.provision_failed", "term:store_error"}, events.ReasonStoreError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fail := func() error {
				if tc.name == "transient past deadline" {
					time.Sleep(60 * time.Millisecond) // the store call outlives the deadline
				}
				return tc.err
			}
			h := newHarness(t, &scriptStore{
				provision:   func(ProvisionRequest) (ProvisionResponse, error) { return ProvisionResponse{}, fail() },
				deprovision: func(DeprovisionRequest) (DeprovisionResponse, error) { return DeprovisionResponse{}, fail() },
			})
			m := h.deliverCmd(t, command(tc.action, func(c *events.StoreCommand) { c.Deadline = time.Now().Add(tc.deadline) }), tc.delivery)
			wantTrail(t, h, tc.wantTrail...)
			if tc.wantReason == "" {
				if m.nakDelay <= 0 || m.nakDelay > time.Second {
					t.Errorf("nak delay %s, want within (0, 1s]", m.nakDelay)
				}
				return
			}
			res, _ := h.reply(t)
			if res.Reason != tc.wantReason || res.Error == "" {
				t.Errorf("reason %q error %q, want reason %q and an error", res.Reason, res.Error, tc.wantReason)
			}
		})
	}
}

func TestRetryDelayStopsAtTheDeadline(t *testing.T) {
	h := newHarness(t, &scriptStore{provision: func(ProvisionRequest) (ProvisionResponse, error) {
		return ProvisionResponse{}, errors.New("busy")
	}}, func(c *Config) { c.RetryBaseDelay, c.RetryMaxDelay = 20*time.Second, 30*time.Second })
	m := h.deliverCmd(t, command(events.ActionProvision, func(c *events.StoreCommand) { c.Deadline = time.Now().Add(2 * time.Second) }), 1)
	if m.nakDelay > 2100*time.Millisecond {
		t.Errorf("nak delay %s reaches past the deadline", m.nakDelay)
	}
}

func TestOverDeliveredCommandIsAnsweredWithoutTheStore(t *testing.T) {
	h := newHarness(t, &scriptStore{})
	h.deliverCmd(t, command(events.ActionDeprovision), 4) // MaxDeliver is 3
	res, _ := h.reply(t)
	if res.Outcome != events.OutcomeDeprovisionFailed || res.Reason != events.ReasonStoreError || !strings.Contains(res.Error, "AGENT_MAX_DELIVER") {
		t.Errorf("result %+v", res)
	}
	if c := h.store.Calls(); len(c) != 0 {
		t.Errorf("store calls %v, want none", c)
	}
}

func TestVerificationGate(t *testing.T) {
	cases := map[string]VerifyResponse{
		"a check failed": {Checks: []events.Check{
			{Name: CheckOwnAccess, Passed: true}, {Name: CheckCanaryDenied, Passed: false, Detail: "read canary"},
			{Name: CheckWrongPasswordRefused, Passed: true}, {Name: CheckAdminDenied, Passed: true}}},
		"a required check missing": {Checks: []events.Check{
			{Name: CheckOwnAccess, Passed: true}, {Name: CheckWrongPasswordRefused, Passed: true}, {Name: CheckAdminDenied, Passed: true}}},
		"no checks": {},
	}
	for name, vr := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, &scriptStore{verify: func(VerifyRequest) (VerifyResponse, error) { return vr, nil }})
			h.deliverCmd(t, command(events.ActionProvision), 1)
			res, _ := h.reply(t)
			if res.Outcome != events.OutcomeProvisionFailed || res.Reason != events.ReasonVerifyFailed || res.Verification == nil || res.Verification.Passed {
				t.Fatalf("result %+v", res)
			}
			if res.Credential != "" {
				t.Error("a failed verification carries a credential")
			}
			if !strings.Contains(res.Error, CheckCanaryDenied) {
				t.Errorf("error %q does not name the failed check", res.Error)
			}
			wantTrail(t, h, "publish:store.evt.redis.provision_failed", "term:verification_failed")
		})
	}
}

func TestDeprovisionReportsSkippedAsWarnings(t *testing.T) {
	h := newHarness(t, &scriptStore{deprovision: func(DeprovisionRequest) (DeprovisionResponse, error) {
		return DeprovisionResponse{Skipped: []string{"database tenant_acme"}, Warnings: []string{"no aclfile"}}, nil
	}})
	h.deliverCmd(t, command(events.ActionDeprovision), 1)
	wantTrail(t, h, "publish:store.evt.redis.deprovisioned", "ack")
	res, _ := h.reply(t)
	if len(res.Warnings) != 2 || !strings.Contains(res.Warnings[0], "database tenant_acme") || res.Warnings[1] != "no aclfile" {
		t.Errorf("warnings %q", res.Warnings)
	}
}

func TestInvalidCommands(t *testing.T) {
	valid := func(mods ...func(*events.StoreCommand)) []byte {
		b, _ := json.Marshal(command(events.ActionProvision, mods...))
		return b
	}
	cases := []struct {
		name, subject string
		data          []byte
		wantReply     bool
	}{
		{"not JSON", "store.cmd.redis.provision", []byte("not json"), false},
		{"empty", "store.cmd.redis.provision", nil, false},
		{"bad tenant", "store.cmd.redis.provision", valid(func(c *events.StoreCommand) { c.TenantID = "Bad Tenant" }), false},
		{"missing deadline", "store.cmd.redis.provision", []byte(`{"tenant_id":"acme","generation":2,"saga_id":"s","store":"redis","action":"provision","issued_at":"2024-01-01T00:00:00Z"}`), true},
		{"other store", "store.cmd.redis.provision", valid(func(c *events.StoreCommand) { c.Store = events.StorePostgres }), true},
		{"action differs from subject", "store.cmd.redis.deprovision", valid(), true},
		{"unknown action", "store.cmd.redis.frobnicate", []byte(`{"tenant_id":"acme","generation":2,"saga_id":"s","store":"redis","action":"frobnicate"}`), false},
		// A lifecycle command missing its deadline is answered with its own
		// failure outcome (rotate_failed), not provision_failed.
		{"lifecycle command without deadline", "store.cmd.redis.rotate", []byte(`{"tenant_id":"acme","generation":2,"saga_id":"s","store":"redis","action":"rotate"}`), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, &scriptStore{})
			h.deliver(t, tc.subject, tc.data, 1)
			if c := h.store.Calls(); len(c) != 0 {
				t.Errorf("store calls %v, want none", c)
			}
			tr := h.trail.list()
			if tr[len(tr)-1] != "term:invalid" {
				t.Fatalf("trail %v, want it to end in term:invalid", tr)
			}
			if !tc.wantReply {
				if len(tr) != 1 {
					t.Errorf("trail %v, want no reply", tr)
				}
				return
			}
			res, _ := h.reply(t)
			if res.Reason != events.ReasonInvalid || res.TenantID != "acme" || res.Error == "" {
				t.Errorf("result %+v", res)
			}
			if want := subjectAction(tc.subject).FailureOutcome(); res.Outcome != want {
				t.Errorf("outcome %s, want %s", res.Outcome, want)
			}
		})
	}
}

func TestPublishFailureHandsTheCommandBack(t *testing.T) {
	h := newHarness(t, &scriptStore{})
	h.js.fail = errors.New("no responders")
	m := h.deliverCmd(t, command(events.ActionProvision), 1)
	wantTrail(t, h, "publish-failed", "nak")
	if m.nakDelay <= 0 {
		t.Errorf("nak delay %s", m.nakDelay)
	}
}

func TestStorePanicBecomesAFailure(t *testing.T) {
	h := newHarness(t, &scriptStore{provision: func(req ProvisionRequest) (ProvisionResponse, error) {
		panic("boom with " + req.Password.Reveal())
	}})
	h.deliverCmd(t, command(events.ActionProvision), 1)
	res, _ := h.reply(t)
	if res.Reason != events.ReasonStoreError || !strings.Contains(res.Error, "panicked") {
		t.Errorf("result %+v", res)
	}
	if strings.Contains(res.Error, h.store.pws[0].Reveal()) {
		t.Error("the panic message leaked the password")
	}
}

func TestUnencodableResultIsAnsweredAsFailure(t *testing.T) {
	h := newHarness(t, &scriptStore{provision: func(req ProvisionRequest) (ProvisionResponse, error) {
		return ProvisionResponse{
			Resources:  map[string]string{"huge": strings.Repeat("x", events.MaxPayloadBytes)},
			Credential: Credential{"password": req.Password},
		}, nil
	}})
	h.deliverCmd(t, command(events.ActionProvision), 1)
	res, _ := h.reply(t)
	if res.Outcome != events.OutcomeProvisionFailed || res.Reason != events.ReasonStoreError || !strings.Contains(res.Error, "could not be encoded") {
		t.Errorf("result %+v", res)
	}
	wantTrail(t, h, "publish:store.evt.redis.provision_failed", "term:store_error")
}

func TestNoCredentialIsAFailure(t *testing.T) {
	h := newHarness(t, &scriptStore{provision: func(ProvisionRequest) (ProvisionResponse, error) { return ProvisionResponse{}, nil }})
	h.deliverCmd(t, command(events.ActionProvision), 1)
	if res, _ := h.reply(t); res.Reason != events.ReasonStoreError {
		t.Errorf("result %+v", res)
	}
}

func TestErrorTextIsSanitisedInReplyAndLog(t *testing.T) {
	var pw string
	h := newHarness(t, &scriptStore{provision: func(req ProvisionRequest) (ProvisionResponse, error) {
		pw = req.Password.Reveal()
		return ProvisionResponse{}, Permanent(events.ReasonStoreError, fmt.Errorf(
			"ERROR: syntax error in \"ALTER ROLE x PASSWORD 'the-password'\"\n(pw %s) dialing postgres://admin:hunter2@db:5432/x", pw))
	}})
	h.deliverCmd(t, command(events.ActionProvision), 1)
	res, _ := h.reply(t)
	var logged strings.Builder
	for _, e := range h.logs.All() {
		fmt.Fprintf(&logged, "%s %v\n", e.Message, e.ContextMap())
	}
	for _, leak := range []string{"the-password", "hunter2", pw} {
		if strings.Contains(res.Error, leak) {
			t.Errorf("reply error leaks %q: %s", leak, res.Error)
		}
		if strings.Contains(logged.String(), leak) {
			t.Errorf("log leaks %q: %s", leak, logged.String())
		}
	}
	if !strings.Contains(res.Error, "syntax error") || strings.ContainsAny(res.Error, "\n") {
		t.Errorf("error %q lost its meaning or kept a newline", res.Error)
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[uint64]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 6: 30 * time.Second, 64: 30 * time.Second, 0: 30 * time.Second} {
		for range 50 {
			d := backoff(n, time.Second, 30*time.Second)
			if d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", n, d, want/2, want)
			}
		}
	}
}

func TestErrorTextIsBoundedSingleLineUTF8(t *testing.T) {
	s := errorText(errors.New(strings.Repeat("é\n\x00", 2000)))
	if len(s) > maxErrorText || strings.ContainsAny(s, "\n\x00") || !strings.HasSuffix(s, "…") {
		t.Errorf("errorText gave %d bytes: %q…", len(s), s[:40])
	}
	res := &events.StoreResult{TenantID: "acme", Generation: 1, SagaID: "s", Store: events.StoreRedis,
		Outcome: events.OutcomeProvisionFailed, Reason: "store_error", Error: s, CompletedAt: time.Now()}
	if _, err := events.Encode(res); err != nil {
		t.Errorf("a result carrying errorText does not encode: %v", err)
	}
}

// memLocker is an in-process locker for the unit tests (the KV locks are
// tested end to end in testkit/storetest).
type memLocker struct {
	mu   sync.Mutex
	held map[string]bool
	// lose, when set, makes every lease granted from now on lost at once.
	lose bool
}

func (l *memLocker) try(_ context.Context, key string, _ []byte) (lease, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held[key] {
		return nil, errLockHeld
	}
	l.held[key] = true
	ls := &memLease{l: l, key: key, lostCh: make(chan struct{})}
	if l.lose {
		close(ls.lostCh)
	}
	return ls, nil
}

type memLease struct {
	l      *memLocker
	key    string
	lostCh chan struct{}
}

func (m *memLease) lost() <-chan struct{} { return m.lostCh }

func (m *memLease) release(context.Context) {
	m.l.mu.Lock()
	defer m.l.mu.Unlock()
	delete(m.l.held, m.key)
}

func (h *harness) locker() *memLocker { return h.rt.locks.(*memLocker) }

func TestResultRunIsTheDeliveryCount(t *testing.T) {
	for _, n := range []uint64{1, 4} {
		h := newHarness(t, &scriptStore{})
		h.deliverCmd(t, command(events.ActionProvision), n)
		res, _ := h.reply(t)
		if res.Run != n {
			t.Errorf("delivery %d answered with Run %d", n, res.Run)
		}
		if id := events.ResultMsgID(res); !strings.Contains(id, fmt.Sprintf(":r%d", n)) {
			t.Errorf("result ID %q, want one carrying run %d", id, n)
		}
	}
	h := newHarness(t, &scriptStore{})
	h.deliver(t, events.CommandSubject(events.StoreRedis, events.ActionProvision), []byte(`{"tenant_id":"acme","generation":2,"saga_id":"s","action":"provision"}`), 3)
	if res, _ := h.reply(t); res.Run != 3 || res.Reason != events.ReasonInvalid {
		t.Errorf("invalid command answered %s Run %d, want invalid Run 3", res.Reason, res.Run)
	}
}

func TestLockedTenantIsHandedBackWithoutStoreCall(t *testing.T) {
	for _, action := range []events.Action{events.ActionProvision, events.ActionDeprovision} {
		t.Run(string(action), func(t *testing.T) {
			h := newHarness(t, &scriptStore{})
			h.rt.lockWait = 100 * time.Millisecond
			h.locker().held[events.AgentLockKey(events.StoreRedis, "acme")] = true
			m := h.deliverCmd(t, command(action), 1)
			wantTrail(t, h, "nak")
			if m.nakDelay <= 0 {
				t.Errorf("nak delay %s, want a short pause", m.nakDelay)
			}
			if c := h.store.Calls(); len(c) != 0 {
				t.Errorf("store calls %v while the tenant was locked", c)
			}
		})
	}
}

func TestLockIsHeldAcrossTheCommandAndReleased(t *testing.T) {
	key := events.AgentLockKey(events.StoreRedis, "acme")
	var h *harness
	held := false
	h = newHarness(t, &scriptStore{before: func(context.Context, string) error {
		h.locker().mu.Lock()
		held = h.locker().held[key]
		h.locker().mu.Unlock()
		return nil
	}})
	h.deliverCmd(t, command(events.ActionDeprovision), 1)
	if !held {
		t.Error("the store ran without the tenant's lock")
	}
	if h.locker().held[key] {
		t.Error("the lock was not released after the command")
	}
}

func TestProvisionWaitingForTheLockPastItsDeadlineExpires(t *testing.T) {
	h := newHarness(t, &scriptStore{})
	h.locker().held[events.AgentLockKey(events.StoreRedis, "acme")] = true
	h.deliverCmd(t, command(events.ActionProvision, func(c *events.StoreCommand) { c.Deadline = time.Now().Add(200 * time.Millisecond) }), 1)
	res, _ := h.reply(t)
	if res.Outcome != events.OutcomeProvisionFailed || res.Reason != events.ReasonExpired {
		t.Errorf("%s (%s), want provision_failed (expired): the store was never touched", res.Outcome, res.Reason)
	}
	if c := h.store.Calls(); len(c) != 0 {
		t.Errorf("store calls %v", c)
	}
}

func TestProvisionContextEndsAtTheDeadline(t *testing.T) {
	deadline := time.Now().Add(time.Minute)
	var got time.Time
	h := newHarness(t, &scriptStore{before: func(ctx context.Context, _ string) error {
		got, _ = ctx.Deadline()
		return nil
	}})
	h.deliverCmd(t, command(events.ActionProvision, func(c *events.StoreCommand) { c.Deadline = deadline }), 1)
	if got.IsZero() || got.After(deadline) {
		t.Errorf("store context deadline %v, want at most the command's %v", got, deadline)
	}
	// A deprovision is not bound by the saga's deadline.
	h2 := newHarness(t, &scriptStore{before: func(ctx context.Context, _ string) error {
		got, _ = ctx.Deadline()
		return nil
	}})
	h2.deliverCmd(t, command(events.ActionDeprovision, func(c *events.StoreCommand) { c.Deadline = time.Now().Add(time.Millisecond) }), 1)
	if got.Before(time.Now().Add(5 * time.Second)) {
		t.Errorf("deprovision context deadline %v, want it far past the command's deadline", got)
	}
}

func TestLostLockInterruptsTheStoreCall(t *testing.T) {
	h := newHarness(t, &scriptStore{before: func(ctx context.Context, _ string) error {
		<-ctx.Done()
		return ctx.Err()
	}})
	h.locker().lose = true
	m := h.deliverCmd(t, command(events.ActionProvision), 1)
	wantTrail(t, h, "nak") // no reply: it did not fail, it was cut short
	if m.nakDelay <= 0 {
		t.Errorf("nak delay %s", m.nakDelay)
	}
}

func TestShutdownInterruptsWithoutReply(t *testing.T) {
	started := make(chan struct{})
	h := newHarness(t, &scriptStore{before: func(ctx context.Context, _ string) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}})
	data, _ := json.Marshal(command(events.ActionProvision))
	m := &memMsg{subject: events.CommandSubject(events.StoreRedis, events.ActionProvision), data: data, delivered: 1, trail: h.trail}
	d := newDelivery(context.Background(), m)
	done := make(chan struct{})
	go func() { h.rt.handle(d); close(done) }()
	<-started
	d.cancel(errShuttingDown)
	<-done
	wantTrail(t, h, "nak")
	if m.nakDelay != 0 {
		t.Errorf("nak delay %s, want none: another replica should take it at once", m.nakDelay)
	}
	if h.locker().held[events.AgentLockKey(events.StoreRedis, "acme")] {
		t.Error("lock kept after the interrupted command")
	}
}

func TestDrainHandsBackWhatDoesNotStop(t *testing.T) {
	started := make(chan struct{})
	unblock := make(chan struct{})
	defer close(unblock)
	h := newHarness(t, &scriptStore{before: func(context.Context, string) error {
		close(started)
		<-unblock // ignores its context
		return nil
	}}, func(c *Config) { c.ShutdownTimeout = 500 * time.Millisecond })
	data, _ := json.Marshal(command(events.ActionProvision))
	m := &memMsg{subject: events.CommandSubject(events.StoreRedis, events.ActionProvision), data: data, delivered: 1, trail: h.trail}
	fl := &flight{set: map[*delivery]struct{}{}}
	d := newDelivery(context.Background(), m)
	fl.add(d)
	go func() { defer fl.done(d); h.rt.handle(d) }()
	<-started
	h.rt.drain(fl, time.Now())
	wantTrail(t, h, "nak")
	select {
	case <-h.rt.stopping:
	default:
		t.Error("drain did not signal stopping")
	}
}

func TestProgressIsPublishedWhileACommandRuns(t *testing.T) {
	h := newHarness(t, &scriptStore{before: func(ctx context.Context, call string) error {
		if call == "provision" {
			time.Sleep(1200 * time.Millisecond) // several heartbeat periods (AckWait/4)
		}
		return nil
	}}, func(c *Config) { c.AckWait = time.Second })
	var mu sync.Mutex
	var beats []*events.AgentProgress
	h.rt.publishProgress = func(subject string, data []byte) error {
		p, err := events.DecodeAgentProgress(data)
		if err != nil {
			t.Errorf("heartbeat does not decode: %v", err)
			return nil
		}
		if subject != events.ProgressSubject(events.StoreRedis) {
			t.Errorf("heartbeat on %q", subject)
		}
		mu.Lock()
		beats = append(beats, p)
		mu.Unlock()
		return nil
	}
	h.deliverCmd(t, command(events.ActionProvision), 1)
	mu.Lock()
	defer mu.Unlock()
	if len(beats) < 2 {
		t.Fatalf("%d heartbeats during a 1.2 s command with AckWait 1s, want at least 2", len(beats))
	}
	for _, b := range beats {
		if b.Store != events.StoreRedis || b.InFlight != 1 || b.Source != h.rt.holder {
			t.Errorf("heartbeat %+v, want store redis, in_flight 1, source %s", b, h.rt.holder)
		}
	}
}
