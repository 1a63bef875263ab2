package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// lifeStore is a scriptStore that also implements Rotator, Suspender and
// Observer, scripted per test; every call is recorded with the store's.
type lifeStore struct {
	scriptStore
	rotate  func(RotateRequest) (RotateResponse, error)
	retire  func(RetireRequest) (RetireResponse, error)
	suspend func(SuspendRequest) error
	observe func(ObserveRequest) (ObserveResponse, error)

	rotates []RotateRequest
	retires []RetireRequest
	obsReqs []ObserveRequest
}

var (
	_ Rotator   = (*lifeStore)(nil)
	_ Suspender = (*lifeStore)(nil)
	_ Observer  = (*lifeStore)(nil)
)

func (s *lifeStore) Rotate(ctx context.Context, req RotateRequest) (RotateResponse, error) {
	s.record("rotate")
	if s.before != nil {
		if err := s.before(ctx, "rotate"); err != nil {
			return RotateResponse{}, err
		}
	}
	s.mu.Lock()
	s.rotates = append(s.rotates, req)
	s.mu.Unlock()
	if s.rotate != nil {
		return s.rotate(req)
	}
	return RotateResponse{Credential: Credential{"username": req.Tenant.RedisUser(), "password": req.Password}}, nil
}

func (s *lifeStore) Retire(_ context.Context, req RetireRequest) (RetireResponse, error) {
	s.record("retire")
	s.mu.Lock()
	s.retires = append(s.retires, req)
	s.mu.Unlock()
	if s.retire != nil {
		return s.retire(req)
	}
	return RetireResponse{Retired: []int{1}}, nil
}

func (s *lifeStore) Suspend(_ context.Context, req SuspendRequest) error {
	s.record("suspend")
	if s.suspend != nil {
		return s.suspend(req)
	}
	return nil
}

func (s *lifeStore) Resume(_ context.Context, req SuspendRequest) error {
	s.record("resume")
	return nil
}

func (s *lifeStore) Observe(_ context.Context, req ObserveRequest) (ObserveResponse, error) {
	s.record("observe")
	s.mu.Lock()
	s.obsReqs = append(s.obsReqs, req)
	s.mu.Unlock()
	if s.observe != nil {
		return s.observe(req)
	}
	return ObserveResponse{}, nil
}

// newLifeHarness runs st behind the runtime; the harness's store field is
// st's embedded scriptStore (its calls are st's).
func newLifeHarness(t *testing.T, st *lifeStore) *harness {
	t.Helper()
	if st.kind == "" {
		st.kind = events.StoreRedis
	}
	h := newHarness(t, &st.scriptStore)
	// newHarness wrapped the scriptStore; serve the lifeStore instead.
	h.rt.store = decorate(st, h.rt.metrics)
	return h
}

func rotateCmd(mods ...func(*events.StoreCommand)) *events.StoreCommand {
	return command(events.ActionRotate, append([]func(*events.StoreCommand){func(c *events.StoreCommand) {
		c.CredentialVersion, c.Version, c.GraceSeconds = 1, 2, 3600
	}}, mods...)...)
}

// replies returns every published result, in order.
func (h *harness) replies(t *testing.T) ([]*events.StoreResult, []*nats.Msg) {
	t.Helper()
	h.js.mu.Lock()
	defer h.js.mu.Unlock()
	var out []*events.StoreResult
	for _, m := range h.js.msgs {
		res, err := events.DecodeStoreResult(m.Data)
		if err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
		out = append(out, res)
	}
	return out, append([]*nats.Msg(nil), h.js.msgs...)
}

func (h *harness) openCredential(t *testing.T, res *events.StoreResult) map[string]any {
	t.Helper()
	plain, err := secret.Open(res.Credential, h.identity)
	if err != nil {
		t.Fatalf("open the sealed credential: %v", err)
	}
	var cred map[string]any
	if err := json.Unmarshal(plain, &cred); err != nil {
		t.Fatal(err)
	}
	return cred
}

func TestRotateVerifiesThenSealsTheNewCredential(t *testing.T) {
	st := &lifeStore{}
	var verified Credential
	st.verify = func(req VerifyRequest) (VerifyResponse, error) { verified = req.Credential; return allPassed(), nil }
	h := newLifeHarness(t, st)
	h.deliverCmd(t, rotateCmd(), 1)
	wantTrail(t, h, "publish:store.evt.redis.rotated", "ack")
	if got := h.store.Calls(); !slices.Equal(got, []string{"rotate", "verify"}) {
		t.Fatalf("store calls %v, want rotate then verify", got)
	}
	req := st.rotates[0]
	if req.CurrentVersion != 1 || req.Version != 2 || req.Grace != time.Hour || req.Generation != 2 || req.Tenant != "acme" {
		t.Errorf("rotate request %+v", req)
	}
	pw := req.Password.Reveal()
	if len(pw) != 43 {
		t.Fatalf("generated password has %d characters, want 43", len(pw))
	}
	if verified.Secret("password").Reveal() != pw {
		t.Error("Verify did not get the new credential")
	}
	res, m := h.reply(t)
	if res.CredentialVersion != 2 || res.Verification == nil || !res.Verification.Passed || len(res.CredentialID) != 16 || res.Run != 1 {
		t.Errorf("result %+v", res)
	}
	if cred := h.openCredential(t, res); cred["password"] != pw || cred["username"] != "tenant_acme" {
		t.Errorf("sealed credential = %v", cred)
	}
	if strings.Contains(string(m.Data), pw) {
		t.Error("the reply carries the new password in plain text")
	}
	for _, e := range h.logs.All() {
		if strings.Contains(fmt.Sprint(e.Message, e.ContextMap()), pw) {
			t.Errorf("the log carries the new password: %s", e.Message)
		}
	}
}

func TestRedeliveredRotateResetsTheNewCredential(t *testing.T) {
	st := &lifeStore{}
	h := newLifeHarness(t, st)
	h.deliverCmd(t, rotateCmd(), 1)
	h.deliverCmd(t, rotateCmd(), 2)
	res, msgs := h.replies(t)
	if len(res) != 2 || res[0].Outcome != events.OutcomeRotated || res[1].Outcome != events.OutcomeRotated {
		t.Fatalf("results %+v", res)
	}
	if res[0].Run != 1 || res[1].Run != 2 {
		t.Errorf("runs %d, %d; want 1, 2 (the later run describes the store)", res[0].Run, res[1].Run)
	}
	if res[0].CredentialVersion != 2 || res[1].CredentialVersion != 2 {
		t.Errorf("versions %d, %d; want 2 for both", res[0].CredentialVersion, res[1].CredentialVersion)
	}
	if st.rotates[0].Password.Reveal() == st.rotates[1].Password.Reveal() {
		t.Error("the second run reused the first run's password; it must reset the new credential")
	}
	if h.openCredential(t, res[1])["password"] != st.rotates[1].Password.Reveal() {
		t.Error("the later result does not seal the later run's credential")
	}
	if a, b := events.ResultMsgID(res[0]), events.ResultMsgID(res[1]); a == b || msgs[0].Header.Get(events.HeaderTenantID) != "acme" {
		t.Errorf("result IDs %q and %q must differ (JetStream would drop the second)", a, b)
	}
}

func TestRotateFailingVerificationRemovesTheNewCredential(t *testing.T) {
	st := &lifeStore{}
	st.verify = func(VerifyRequest) (VerifyResponse, error) {
		r := allPassed()
		r.Checks[1].Passed = false
		return r, nil
	}
	h := newLifeHarness(t, st)
	h.deliverCmd(t, rotateCmd(), 1)
	wantTrail(t, h, "publish:store.evt.redis.rotate_failed", "term:verification_failed")
	if got := h.store.Calls(); !slices.Equal(got, []string{"rotate", "verify", "retire"}) {
		t.Fatalf("store calls %v, want rotate, verify, retire", got)
	}
	if st.retires[0].Keep != 1 {
		t.Errorf("retire kept version %d, want the old one (1)", st.retires[0].Keep)
	}
	res, _ := h.reply(t)
	if res.Credential != "" || res.Verification == nil || res.Verification.Passed || !strings.Contains(res.Error, CheckCanaryDenied) {
		t.Errorf("result %+v", res)
	}
}

func TestRotateFailingVerificationRetriesWhenTheCleanupFails(t *testing.T) {
	st := &lifeStore{}
	st.verify = func(VerifyRequest) (VerifyResponse, error) { return VerifyResponse{}, nil } // no checks: fails the gate
	st.retire = func(RetireRequest) (RetireResponse, error) { return RetireResponse{}, errors.New("connection reset") }
	h := newLifeHarness(t, st)
	h.deliverCmd(t, rotateCmd(), 1)
	wantTrail(t, h, "nak")
	// On the last delivery it answers, saying what is left.
	h2 := newLifeHarness(t, &lifeStore{scriptStore: scriptStore{verify: st.verify}, retire: st.retire})
	h2.deliverCmd(t, rotateCmd(), 3)
	res, _ := h2.reply(t)
	if res.Outcome != events.OutcomeRotateFailed || res.Reason != events.ReasonVerifyFailed || len(res.Warnings) == 0 || !strings.Contains(res.Warnings[0], "could not be removed") {
		t.Errorf("result %+v", res)
	}
}

func TestRotateFailingPermanentlyRemovesTheNewCredential(t *testing.T) {
	st := &lifeStore{rotate: func(RotateRequest) (RotateResponse, error) {
		return RotateResponse{}, Permanent(events.ReasonStoreError, errors.New("half done"))
	}}
	h := newLifeHarness(t, st)
	h.deliverCmd(t, rotateCmd(), 1)
	wantTrail(t, h, "publish:store.evt.redis.rotate_failed", "term:store_error")
	if got := h.store.Calls(); !slices.Equal(got, []string{"rotate", "retire"}) || st.retires[0].Keep != 1 {
		t.Fatalf("store calls %v (retires %+v), want rotate then retire keeping 1", got, st.retires)
	}
}

func TestRotateTransientErrorIsRetriedWithoutCleanup(t *testing.T) {
	st := &lifeStore{rotate: func(RotateRequest) (RotateResponse, error) { return RotateResponse{}, errors.New("i/o timeout") }}
	h := newLifeHarness(t, st)
	m := h.deliverCmd(t, rotateCmd(), 1)
	wantTrail(t, h, "nak")
	if m.nakDelay <= 0 {
		t.Errorf("nak delay %s", m.nakDelay)
	}
	if got := h.store.Calls(); !slices.Equal(got, []string{"rotate"}) {
		t.Errorf("store calls %v, want rotate only (the redelivery resets the new credential)", got)
	}
}

func TestRetireSuspendResumeObserve(t *testing.T) {
	t.Run("retire", func(t *testing.T) {
		st := &lifeStore{retire: func(req RetireRequest) (RetireResponse, error) {
			return RetireResponse{Retired: []int{1}, Warnings: []string{"sessions stay open"}}, nil
		}}
		h := newLifeHarness(t, st)
		h.deliverCmd(t, command(events.ActionRetire, func(c *events.StoreCommand) { c.CredentialVersion = 2 }), 1)
		wantTrail(t, h, "publish:store.evt.redis.retired", "ack")
		res, _ := h.reply(t)
		if st.retires[0].Keep != 2 || res.CredentialVersion != 2 || !slices.Equal(res.Retired, []int{1}) || res.Warnings[0] != "sessions stay open" {
			t.Errorf("retire %+v, result %+v", st.retires, res)
		}
	})
	for _, a := range []events.Action{events.ActionSuspend, events.ActionResume} {
		t.Run(string(a), func(t *testing.T) {
			st := &lifeStore{}
			h := newLifeHarness(t, st)
			h.deliverCmd(t, command(a), 1)
			wantTrail(t, h, "publish:store.evt.redis."+string(a.SuccessOutcome()), "ack")
			if got := h.store.Calls(); !slices.Equal(got, []string{string(a)}) {
				t.Errorf("store calls %v", got)
			}
		})
	}
	t.Run("observe", func(t *testing.T) {
		st := &lifeStore{observe: func(req ObserveRequest) (ObserveResponse, error) {
			d := Drift{Kind: "grant_added", Resource: "tenant_acme", Detail: "password=hunter2hunter2 was granted"}
			if req.Repair {
				return ObserveResponse{Drift: []Drift{d}, Repaired: []Drift{d}}, nil
			}
			return ObserveResponse{Drift: []Drift{d}}, nil
		}}
		h := newLifeHarness(t, st)
		h.deliverCmd(t, command(events.ActionObserve, func(c *events.StoreCommand) { c.CredentialVersion, c.Repair = 3, true }), 1)
		wantTrail(t, h, "publish:store.evt.redis.observed", "ack")
		req := st.obsReqs[0]
		if !req.Repair || req.CredentialVersion != 3 || req.Credential != nil {
			t.Errorf("observe request %+v (an agent has no credential to give)", req)
		}
		res, _ := h.reply(t)
		if len(res.Drift) != 1 || len(res.Repaired) != 1 || res.Drift[0].Kind != "grant_added" {
			t.Fatalf("result %+v", res)
		}
		if strings.Contains(res.Drift[0].Detail, "hunter2") {
			t.Errorf("drift detail not sanitised: %q", res.Drift[0].Detail)
		}
	})
}

func TestObserveOfATenantTheStoreHasNoRecordOf(t *testing.T) {
	st := &lifeStore{observe: func(ObserveRequest) (ObserveResponse, error) {
		return ObserveResponse{}, Permanent(events.ReasonInvalid, errors.New("no record of tenant acme"))
	}}
	h := newLifeHarness(t, st)
	h.deliverCmd(t, command(events.ActionObserve), 1)
	wantTrail(t, h, "publish:store.evt.redis.observed", "ack")
	res, _ := h.reply(t)
	if len(res.Drift) != 1 || res.Drift[0].Kind != DriftResourceMissing || !res.Drift[0].DataLost {
		t.Errorf("result %+v, want one resource_missing drift with data_lost", res)
	}
}

func TestObserveDriftIsBounded(t *testing.T) {
	st := &lifeStore{observe: func(ObserveRequest) (ObserveResponse, error) {
		var ds []Drift
		for i := range 500 {
			ds = append(ds, Drift{Kind: "grant_added", Resource: fmt.Sprintf("table_%d", i), Detail: strings.Repeat("x", 2000)})
		}
		return ObserveResponse{Drift: ds}, nil
	}}
	h := newLifeHarness(t, st)
	h.deliverCmd(t, command(events.ActionObserve), 1)
	res, _ := h.reply(t)
	if res.Outcome != events.OutcomeObserved || len(res.Drift) != maxDrifts || len(res.Warnings) != 1 {
		t.Errorf("outcome %s, %d drifts, warnings %v", res.Outcome, len(res.Drift), res.Warnings)
	}
}

func TestLifecycleCommandOfAStoreWithoutTheInterfaceIsUnsupported(t *testing.T) {
	for _, a := range []events.Action{events.ActionRotate, events.ActionRetire, events.ActionSuspend, events.ActionResume, events.ActionObserve} {
		t.Run(string(a), func(t *testing.T) {
			h := newHarness(t, &scriptStore{}) // implements Store only
			h.deliverCmd(t, command(a, func(c *events.StoreCommand) { c.CredentialVersion, c.Version = 1, 2 }), 1)
			wantTrail(t, h, "publish:store.evt.redis."+string(a.FailureOutcome()), "term:unsupported")
			if c := h.store.Calls(); len(c) != 0 {
				t.Errorf("store calls %v", c)
			}
		})
	}
}

func TestExpiredLifecycleCommandNeverTouchesTheStore(t *testing.T) {
	for _, a := range []events.Action{events.ActionRotate, events.ActionRetire, events.ActionSuspend, events.ActionResume, events.ActionObserve} {
		t.Run(string(a), func(t *testing.T) {
			h := newLifeHarness(t, &lifeStore{})
			h.deliverCmd(t, command(a, func(c *events.StoreCommand) {
				c.CredentialVersion, c.Version, c.Deadline = 1, 2, time.Now().Add(-time.Second)
			}), 1)
			wantTrail(t, h, "publish:store.evt.redis."+string(a.FailureOutcome()), "term:expired")
			if c := h.store.Calls(); len(c) != 0 {
				t.Errorf("store calls %v", c)
			}
		})
	}
}

func TestLifecycleStoreCallsEndAtTheDeadline(t *testing.T) {
	st := &lifeStore{}
	st.before = func(ctx context.Context, call string) error {
		<-ctx.Done()
		return ctx.Err()
	}
	h := newLifeHarness(t, st)
	h.deliverCmd(t, rotateCmd(func(c *events.StoreCommand) { c.Deadline = time.Now().Add(200 * time.Millisecond) }), 1)
	res, _ := h.reply(t)
	if res.Outcome != events.OutcomeRotateFailed || res.Reason != events.ReasonStoreError {
		t.Errorf("result %+v", res)
	}
	// The half-made credential is removed after the deadline cut Rotate.
	if got := h.store.Calls(); !slices.Equal(got, []string{"rotate", "retire"}) {
		t.Errorf("store calls %v, want rotate then the cleanup retire", got)
	}
}

func TestInvalidRotateIsRejectedWithoutTheStore(t *testing.T) {
	for _, v := range [][2]int{{2, 2}, {3, 2}, {0, 1}} {
		h := newLifeHarness(t, &lifeStore{})
		h.deliverCmd(t, rotateCmd(func(c *events.StoreCommand) { c.CredentialVersion, c.Version = v[0], v[1] }), 1)
		wantTrail(t, h, "publish:store.evt.redis.rotate_failed", "term:invalid")
		if c := h.store.Calls(); len(c) != 0 {
			t.Errorf("versions %v: store calls %v", v, c)
		}
	}
}

func TestLifecycleStorePanicAndSecretInError(t *testing.T) {
	st := &lifeStore{rotate: func(req RotateRequest) (RotateResponse, error) {
		panic("boom with " + req.Password.Reveal())
	}}
	h := newLifeHarness(t, st)
	h.deliverCmd(t, rotateCmd(), 1)
	res, m := h.reply(t)
	pw := st.rotates[0].Password.Reveal()
	if res.Outcome != events.OutcomeRotateFailed || !strings.Contains(res.Error, "panicked") {
		t.Errorf("result %+v", res)
	}
	if strings.Contains(string(m.Data), pw) {
		t.Error("the reply carries the password from the panic")
	}
	for _, e := range h.logs.All() {
		if strings.Contains(fmt.Sprint(e.Message, e.ContextMap()), pw) {
			t.Errorf("the log carries the password: %s", e.Message)
		}
	}
}

func TestLifecycleMetricsCarryTheAction(t *testing.T) {
	st := &lifeStore{}
	h := newLifeHarness(t, st)
	h.deliverCmd(t, rotateCmd(), 1)
	h.deliverCmd(t, command(events.ActionSuspend), 1)
	m := h.rt.metrics
	for _, c := range []struct{ action, outcome string }{{"rotate", "rotated"}, {"suspend", "suspended"}} {
		if got := value(t, m.commands.WithLabelValues("redis", c.action, c.outcome)); got != 1 {
			t.Errorf("commands_total{%s,%s} = %v, want 1", c.action, c.outcome, got)
		}
	}
	if n := series(m.storeCalls); n != 3 {
		t.Errorf("%d store call series, want 3 (rotate, verify, suspend)", n)
	}
}

// The runtime wraps the store in decorators that implement Store only; the
// lifecycle interfaces must still be found underneath every one of them
// (a decorator added without unwrapping would answer every lifecycle
// command "unsupported").
func TestLifecycleInterfacesSeenThroughDecorators(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	lc := lifecycleOf(decorate(&lifeStore{}, m), m)
	if lc.rotator == nil || lc.suspender == nil || lc.observer == nil {
		t.Fatalf("lifecycle interfaces hidden by the runtime's decorators: rotator=%v suspender=%v observer=%v", lc.rotator != nil, lc.suspender != nil, lc.observer != nil)
	}
	inner := unwrapStore(decorate(&planStore{}, m))
	if _, ok := inner.(PlanApplier); !ok {
		t.Fatal("PlanApplier hidden by the runtime's decorators")
	}
	if _, ok := inner.(DryRunner); !ok {
		t.Fatal("DryRunner hidden by the runtime's decorators")
	}
}
