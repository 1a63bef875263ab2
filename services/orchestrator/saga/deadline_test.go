package saga

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Deadlines that extend while an agent is demonstrably working (issue 12):
// scripted agents on real JetStream, on one node and on the 3-node cluster.

// beat publishes store's heartbeats, as its agent's runtime does, every
// 200 ms until the returned stop is called.
func (h *harness) beat(store events.Store) (stop func()) {
	h.t.Helper()
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			data, err := events.Encode(&events.AgentProgress{Store: store, Source: "scripted", InFlight: 1, At: time.Now().UTC()})
			if err != nil {
				h.t.Error(err)
				return
			}
			_ = h.nc.Publish(events.ProgressSubject(store), data)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	var stopped atomic.Bool
	stop = func() {
		if stopped.CompareAndSwap(false, true) {
			close(done)
			<-finished
		}
	}
	h.t.Cleanup(stop)
	return stop
}

// extending gives the harness's saga a hard cap well beyond its deadline
// and a heartbeat window of one second.
func (h *harness) extending() {
	h.cfg.MaxTimeout = 10 * h.cfg.SagaTimeout
	h.cfg.ProgressWindow = time.Second
}

func TestSlowButWorkingAgentOutlivesTheDeadline(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.extending()
		h.startSaga()
		h.beat(events.StoreMinIO)
		slow := 2*h.cfg.SagaTimeout + time.Second
		var deadline atomic.Pointer[time.Time]
		h.agents.set(events.StoreMinIO, func(cmd *events.StoreCommand) (events.Outcome, bool) {
			if cmd.Action == events.ActionProvision {
				d := cmd.Deadline
				deadline.Store(&d)
				time.Sleep(slow) // working, and saying so: longer than SAGA_TIMEOUT
			}
			return "", true
		})
		start := time.Now()
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"busy"}`)
		rec := h.waitSettled("busy", events.TenantActive, slow+30*time.Second)
		if took := time.Since(start); took < h.cfg.SagaTimeout {
			t.Fatalf("active after %s: the agent was not slower than SAGA_TIMEOUT (%s); the test proves nothing", took, h.cfg.SagaTimeout)
		}
		if n := h.agents.count(events.StoreMinIO, events.ActionDeprovision); n != 0 {
			t.Errorf("minio got %d deprovision commands: the tenant was rolled back", n)
		}
		if n := h.auditCount(events.AuditTenantRollbackStarted, "busy"); n != 0 {
			t.Errorf("%d TENANT_ROLLBACK_STARTED audit events", n)
		}
		// The command the agent worked on carried the hard cap, so a
		// real agent would have finished it rather than cut it at
		// SAGA_TIMEOUT.
		if d := deadline.Load(); d == nil || d.Sub(rec.CreatedAt) < h.cfg.MaxTimeout-time.Second {
			t.Errorf("provision command deadline %v, want SAGA_MAX_TIMEOUT (%s) after the request at %v", d, h.cfg.MaxTimeout, rec.CreatedAt)
		}
	})
}

func TestDeadAgentIsStillRolledBackAtTheDeadline(t *testing.T) {
	eachTopology(t, func(t *testing.T, h *harness) {
		h.extending()
		h.startSaga()
		// minio, postgres and qdrant answer at once and beat; redis's agent
		// is dead: it swallows its command and sends no heartbeat.
		for _, s := range []events.Store{events.StoreMinIO, events.StorePostgres, events.StoreQdrant} {
			h.beat(s)
		}
		var dead atomic.Bool
		dead.Store(true)
		h.agents.set(events.StoreRedis, func(cmd *events.StoreCommand) (events.Outcome, bool) {
			return "", !dead.Load()
		})
		h.publish(events.SubjectTenantRequested, `{"tenant_id":"orphan"}`)
		rec := h.waitFor("orphan", h.cfg.SagaTimeout+15*time.Second, "rollback", func(r *events.TenantRecord) bool {
			return r.State == events.TenantRollingBack || r.State == events.TenantFailed
		})
		if !strings.Contains(rec.Reason, "redis") || !strings.Contains(rec.Reason, "no heartbeat") {
			t.Errorf("reason %q, want the silent redis agent named", rec.Reason)
		}
		if rec.Reason == "" || strings.Contains(rec.Reason, "minio") {
			t.Errorf("reason %q blames a store that answered", rec.Reason)
		}
		dead.Store(false)
		h.waitSettled("orphan", events.TenantFailed, 30*time.Second)
	})
}

// An agent that beat while it worked and then died (SIGKILL, no restart)
// stops extending the deadline: the tenant is rolled back one window later.
func TestAgentThatDiesMidExtensionStopsExtending(t *testing.T) {
	h := newHarness(t)
	h.extending()
	h.startSaga()
	stopBeat := h.beat(events.StorePostgres)
	h.agents.set(events.StorePostgres, func(cmd *events.StoreCommand) (events.Outcome, bool) {
		if cmd.Action == events.ActionProvision {
			return "", false
		}
		return "", true
	})
	h.publish(events.SubjectTenantRequested, `{"tenant_id":"dies"}`)
	time.Sleep(h.cfg.SagaTimeout + 2*h.cfg.ProgressWindow)
	if rec := h.record("dies"); rec == nil || rec.State != events.TenantProvisioning {
		t.Fatalf("rolled back while postgres's agent was beating: %+v", rec)
	}
	stopBeat()
	rec := h.waitFor("dies", 10*h.cfg.ProgressWindow, "rollback", func(r *events.TenantRecord) bool {
		return r.State == events.TenantRollingBack || r.State == events.TenantFailed
	})
	if !strings.Contains(rec.Reason, "postgres") {
		t.Errorf("reason %q does not name postgres", rec.Reason)
	}
	h.waitSettled("dies", events.TenantFailed, 30*time.Second)
}
