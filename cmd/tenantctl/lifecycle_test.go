package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

// The lifecycle commands against a real NATS server, with a scripted
// orchestrator that answers each request by writing the tenant's record as
// the saga would (the saga itself is tested with these requests in
// services/orchestrator/saga).

type scriptedOrchestrator struct {
	t  *testing.T
	kv jetstream.KeyValue
}

func (o *scriptedOrchestrator) update(id string, edit func(r *events.TenantRecord)) {
	o.t.Helper()
	ctx := context.Background()
	e, err := o.kv.Get(ctx, id)
	if err != nil {
		o.t.Errorf("get %s: %v", id, err)
		return
	}
	rec, err := events.DecodeTenantRecord(e.Value())
	if err != nil {
		o.t.Errorf("decode: %v", err)
		return
	}
	edit(rec)
	rec.UpdatedAt = time.Now().UTC()
	data, _ := events.Encode(rec)
	if _, err := o.kv.Update(ctx, id, data, e.Revision()); err != nil {
		o.t.Errorf("update %s: %v", id, err)
	}
}

func startScriptedOrchestrator(t *testing.T, js jetstream.JetStream) {
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, events.KVTenants)
	if err != nil {
		t.Fatal(err)
	}
	o := &scriptedOrchestrator{t: t, kv: kv}
	now := time.Now().UTC()
	rec := &events.TenantRecord{TenantID: "acme", State: events.TenantActive, Announced: events.TenantActive, Generation: 1, SagaID: "acme-s1",
		CreatedAt: now, UpdatedAt: now, Stores: map[events.Store]*events.StoreStatus{}}
	for _, s := range events.Stores() {
		rec.Stores[s] = &events.StoreStatus{State: events.StoreProvisioned, Verified: true, CredentialVersion: 1}
	}
	data, _ := events.Encode(rec)
	if _, err := kv.Put(ctx, "acme", data); err != nil {
		t.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamTenants, jetstream.ConsumerConfig{Durable: "scripted-orchestrator",
		FilterSubjects: []string{events.SubjectTenantRotateRequested, events.SubjectTenantSuspendRequested, events.SubjectTenantDeprovisionRequested}})
	if err != nil {
		t.Fatal(err)
	}
	consumeUntilCleanup(t, cons, func(m jetstream.Msg) {
		_ = m.Ack()
		meta, _ := m.Metadata()
		seq := meta.Sequence.Stream
		time.Sleep(200 * time.Millisecond) // the request is not handled at once
		switch m.Subject() {
		case events.SubjectTenantRotateRequested:
			req, err := events.DecodeRotateRequested(m.Data())
			if err != nil {
				t.Errorf("rotate request: %v", err)
				return
			}
			o.update(req.TenantID, func(r *events.TenantRecord) {
				r.State, r.Announced, r.LifecycleSeq, r.Reason = events.TenantRotating, "", seq, ""
				r.Lifecycle = &events.LifecycleOp{ID: "op1", Kind: events.LifecycleRotate}
				for _, s := range events.Stores() {
					r.Stores[s].Step = &events.StoreStep{Action: events.ActionRotate, Attempt: 1, Round: 1, State: events.StepSent}
				}
			})
			time.Sleep(200 * time.Millisecond)
			o.update(req.TenantID, func(r *events.TenantRecord) {
				r.State, r.Announced, r.Lifecycle = events.TenantActive, events.TenantActive, nil
				for _, s := range events.Stores() {
					r.Stores[s].Step.State = events.StepDone
					r.Stores[s].CredentialVersion++
				}
				if req.RequestID == "fail" {
					r.Stores[events.StorePostgres].Step.State = events.StepFailed
					r.Stores[events.StorePostgres].CredentialVersion--
					r.Reason = "kept their old credential: postgres: store_error"
				}
			})
		case events.SubjectTenantSuspendRequested:
			out := &events.TenantOutcomeEvent{Outcome: events.TenantOutcomeRejected, TenantID: "acme", Reason: "suspend acme: tenant is rotating", OccurredAt: time.Now().UTC()}
			data, _ := events.Encode(out)
			_, _ = js.Publish(ctx, events.SubjectTenantRejected, data)
		case events.SubjectTenantDeprovisionRequested:
			o.update("acme", func(r *events.TenantRecord) {
				r.State, r.Announced, r.DeprovisionSeq = events.TenantRetained, events.TenantRetained, seq
			})
		}
	})
}

// consumeUntilCleanup consumes with handle until the test ends. A handler
// still running then would write through the closed NATS connection and
// report on a finished test: the cleanup stops the consumer and waits for
// the handler in flight, and it runs before the connection's own cleanup
// (registered earlier) closes it.
func consumeUntilCleanup(t *testing.T, cons jetstream.Consumer, handle func(jetstream.Msg)) {
	t.Helper()
	var (
		inFlight sync.WaitGroup
		mu       sync.Mutex
		stopped  bool
	)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		mu.Lock()
		if stopped {
			mu.Unlock()
			return
		}
		inFlight.Add(1)
		mu.Unlock()
		defer inFlight.Done()
		handle(m)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Stop()
		mu.Lock()
		stopped = true
		mu.Unlock()
		inFlight.Wait()
	})
}

func lastRequest(t *testing.T, js jetstream.JetStream, subject string) []byte {
	t.Helper()
	st, err := js.Stream(context.Background(), events.StreamTenants)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(context.Background(), subject)
	if err != nil {
		t.Fatalf("no %s published: %v", subject, err)
	}
	return m.Data
}

func TestLifecycleCommands(t *testing.T) {
	n := testkit.StartNATS(t)
	js, err := jetstream.New(n.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := (events.Topology{}).Ensure(context.Background(), js); err != nil {
		t.Fatal(err)
	}
	startScriptedOrchestrator(t, js)
	url := []string{"--nats-url", n.URL, "--timeout", "20s"}

	// rotate --wait follows the record until this request is handled, not
	// just until the (already active) tenant is active.
	code, out, errOut := tenantctl(t, append([]string{"rotate", "acme", "--store", "postgres", "--store", "redis", "--grace", "2h", "--request-id", "r1", "--wait"}, url...)...)
	if code != exitOK || !strings.Contains(out, "rotate done") || !strings.Contains(out, "credential version 2") || !strings.Contains(out, "acme is active") {
		t.Fatalf("rotate --wait: exit %d\n%s%s", code, out, errOut)
	}
	req, err := events.DecodeRotateRequested(lastRequest(t, js, events.SubjectTenantRotateRequested))
	if err != nil || req.Grace != "2h" || req.RequestID != "r1" || len(req.Stores) != 2 || req.Stores[0] != events.StorePostgres || req.Stores[1] != events.StoreRedis {
		t.Fatalf("published rotate request %+v, %v", req, err)
	}

	// A store that kept its old credential: exit 1, saying which.
	code, out, errOut = tenantctl(t, append([]string{"rotate", "acme", "--request-id", "fail", "--wait"}, url...)...)
	if code != exitFailed || !strings.Contains(errOut, "postgres") {
		t.Fatalf("rotate with a failing store: exit %d\n%s%s", code, out, errOut)
	}

	// A rejected request: exit 1 with the orchestrator's reason.
	code, out, errOut = tenantctl(t, append([]string{"suspend", "acme", "--wait"}, url...)...)
	if code != exitFailed || !strings.Contains(errOut, "rejected: suspend acme: tenant is rotating") {
		t.Fatalf("rejected suspend: exit %d\n%s%s", code, out, errOut)
	}

	code, out, errOut = tenantctl(t, append([]string{"deprovision", "acme", "--retain", "168h", "--wait"}, url...)...)
	if code != exitOK || !strings.Contains(out, "acme is retained") {
		t.Fatalf("deprovision --retain --wait: exit %d\n%s%s", code, out, errOut)
	}
	dep, err := events.DecodeDeprovisionRequested(lastRequest(t, js, events.SubjectTenantDeprovisionRequested))
	if err != nil || dep.Retain != "168h" {
		t.Fatalf("published deprovision %+v, %v", dep, err)
	}

	// Nothing answers the resume: --wait times out (exit 3).
	code, out, errOut = tenantctl(t, "resume", "acme", "--wait", "--nats-url", n.URL, "--timeout", "2s")
	if code != exitTimeout {
		t.Fatalf("unanswered resume: exit %d\n%s%s", code, out, errOut)
	}
	code, _, errOut = tenantctl(t, append([]string{"restore", "acme", "--request-id", "back"}, url...)...)
	if code != exitOK {
		t.Fatalf("restore: exit %d %s", code, errOut)
	}
	if r, err := events.DecodeLifecycleRequested(lastRequest(t, js, events.SubjectTenantRestoreRequested)); err != nil || r.TenantID != "acme" || r.RequestID != "back" {
		t.Fatalf("published restore %+v, %v", r, err)
	}
}

func TestLifecycleUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"rotate"}, "exactly one tenant ID"},
		{[]string{"rotate", "acme", "--store", "mysql"}, "unknown store"},
		{[]string{"rotate", "acme", "--grace", "soon"}, "--grace"},
		{[]string{"suspend", "Bad_ID"}, "invalid tenant id"},
		{[]string{"deprovision", "acme", "--retain", "-1h"}, "--retain"},
		{[]string{"deprovision", "acme", "--retain", "0s"}, "--retain"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, out, errOut := tenantctl(t, append(c.args, "--nats-url", "nats://127.0.0.1:1")...)
			if code != exitUsage || !strings.Contains(out+errOut, c.want) {
				t.Fatalf("exit %d (want %d); output lacks %q:\n%s%s", code, exitUsage, c.want, out, errOut)
			}
		})
	}
}

func TestPrintLifecycle(t *testing.T) {
	due := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := &events.TenantRecord{TenantID: "acme", LastError: "redis suspend attempt 1: store_error",
		Lifecycle: &events.LifecycleOp{ID: "op7", Kind: events.LifecycleSuspend, Phases: []events.Action{events.ActionSuspend}, StartedAt: due},
		Scheduled: &events.ScheduledStep{Kind: events.LifecycleRetire, DueAt: due, Stores: []events.Store{events.StorePostgres}},
		Stores: map[events.Store]*events.StoreStatus{
			events.StorePostgres: {CredentialVersion: 2, Step: &events.StoreStep{Action: events.ActionSuspend, Attempt: 3, State: events.StepDone}},
			events.StoreRedis:    {CredentialVersion: 1, Step: &events.StoreStep{Action: events.ActionSuspend, Attempt: 2, State: events.StepFailed, Reason: "store_error"}},
		}}
	var b strings.Builder
	printLifecycle(&b, rec)
	out := b.String()
	for _, want := range []string{"operation:   suspend (op7)", "phase suspend", "scheduled:   retire at 2026-01-02T03:04:05Z (postgres)",
		"last error:  redis suspend", "postgres  v2", "redis     v1          suspend    2        failed  store_error"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
