package e2e

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.uber.org/zap/zapcore"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/services/orchestrator/saga"
	"github.com/tenantprov/tenantprov/testkit/capture"
)

// startObservingOrchestrator runs one orchestrator replica with its
// observer (observation scheduling and the orphan sweep), as main does.
func (s *system) startObservingOrchestrator(cfg saga.ObserveConfig) {
	s.t.Helper()
	if err := cfg.Validate(); err != nil {
		s.t.Fatal(err)
	}
	log, buf := capture.NewLogger(zapcore.DebugLevel)
	s.mu.Lock()
	s.logs = append(s.logs, buf)
	s.mu.Unlock()
	sg, err := saga.New(s.ctx, s.sagaCfg, s.orchJS, log, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = sg.Run(ctx) }()
	go func() { defer wg.Done(); _ = saga.NewObserver(sg, cfg).Run(ctx) }()
	s.t.Cleanup(func() { cancel(); wg.Wait() })
}

// audits returns the audit events of type typ for tenant.
func (s *system) audits(typ events.AuditType, tenant string) []*events.AuditEvent {
	var out []*events.AuditEvent
	for _, d := range s.streamData(events.StreamAudit) {
		if ev, err := events.DecodeAuditEvent(d); err == nil && ev.Type == typ && ev.TenantID == tenant {
			out = append(out, ev)
		}
	}
	return out
}

func (s *system) waitAudits(typ events.AuditType, tenant string, n int, within time.Duration) []*events.AuditEvent {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		evs := s.audits(typ, tenant)
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%d %s audit events for %s within %s, want %d", len(evs), typ, tenant, within, n)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestOrphanSweep: resources a crash left behind (created by the stores'
// own Provision for a tenant the registry never heard of, in PostgreSQL
// and Redis) are found by the periodic sweep (ORPHAN_FOUND, once each),
// kept for the grace, then removed by the real agents (ORPHAN_REMOVED); a
// foreign look-alike bucket is reported (foreign) and left untouched; a
// live tenant's resources are never touched.
func TestOrphanSweep(t *testing.T) {
	s := startSystem(t, 60*time.Second)
	const grace = 8 * time.Second
	s.startObservingOrchestrator(saga.ObserveConfig{DriftRepair: "auto", ObserveTimeout: time.Minute,
		OrphanSweepInterval: 2 * time.Second, OrphanGrace: grace, InventoryTimeout: 30 * time.Second})

	live := events.MustTenantID("orph-live")
	s.request(events.SubjectTenantRequested, `{"tenant_id":"orph-live"}`)
	s.waitState(string(live), events.TenantActive, 2*time.Minute)

	ghost := events.MustTenantID("orph-ghost")
	for _, st := range []events.Store{events.StorePostgres, events.StoreRedis} {
		pw, err := secret.Generate()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.newStore(st).Provision(s.ctx, agent.ProvisionRequest{Tenant: ghost, Generation: 7, SagaID: "crashed", Password: pw}); err != nil {
			t.Fatalf("%s: %v", st, err)
		}
	}
	if len(s.leftovers(ghost)) != 2 {
		t.Fatalf("the simulated crash left %v, want a postgres and a redis slice", s.leftovers(ghost))
	}
	root, err := minio.New(s.minio.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.minio.RootUser, s.minio.RootPassword, "")})
	if err != nil {
		t.Fatal(err)
	}
	const lookalike = "tenant-orph-lookalike"
	if err := root.MakeBucket(s.ctx, lookalike, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}

	found := s.waitAudits(events.AuditOrphanFound, string(ghost), 2, 2*time.Minute)
	for _, ev := range found {
		if ev.Generation != 7 || (ev.Store != events.StorePostgres && ev.Store != events.StoreRedis) {
			t.Errorf("ORPHAN_FOUND %+v", ev)
		}
	}
	s.waitClean(ghost, 3*time.Minute)
	removed := s.waitAudits(events.AuditOrphanRemoved, string(ghost), 2, time.Minute)
	for _, ev := range removed {
		var d struct {
			FirstSeen time.Time `json:"first_seen"`
			RemovedAt time.Time `json:"removed_at"`
		}
		if err := json.Unmarshal(ev.Details, &d); err != nil || d.RemovedAt.Sub(d.FirstSeen) < grace {
			t.Errorf("ORPHAN_REMOVED %s: removed %s after it was first seen, grace %s (%v)", ev.Store, d.RemovedAt.Sub(d.FirstSeen), grace, err)
		}
	}

	fl := s.waitAudits(events.AuditOrphanFound, "orph-lookalike", 1, time.Minute)
	var fd struct {
		Foreign bool `json:"foreign"`
	}
	if err := json.Unmarshal(fl[0].Details, &fd); err != nil || !fd.Foreign || fl[0].Store != events.StoreMinIO {
		t.Errorf("look-alike reported as %+v (%s)", fl[0], fl[0].Details)
	}
	// A few more passes: still reported once, never removed.
	time.Sleep(3 * grace)
	if ok, err := root.BucketExists(s.ctx, lookalike); err != nil || !ok {
		t.Errorf("the foreign look-alike bucket was touched (exists %v, %v)", ok, err)
	}
	if n := len(s.audits(events.AuditOrphanRemoved, "orph-lookalike")); n != 0 {
		t.Errorf("%d ORPHAN_REMOVED for a foreign look-alike", n)
	}
	for _, typ := range []events.AuditType{events.AuditOrphanFound, events.AuditOrphanRemoved} {
		for id, want := range map[string]int{string(ghost): 2, "orph-lookalike": map[events.AuditType]int{events.AuditOrphanFound: 1}[typ], string(live): 0} {
			if evs := s.audits(typ, id); len(evs) != want {
				var details []string
				for _, ev := range evs {
					details = append(details, string(ev.Store)+" "+string(ev.Details))
				}
				t.Errorf("%d %s for %s, want %d: %v", len(evs), typ, id, want, details)
			}
		}
	}
	if left := s.leftovers(live); len(left) != 4 {
		t.Errorf("the live tenant's resources: %v, want all four", left)
	}
	if rec := s.record(string(live)); rec == nil || rec.State != events.TenantActive {
		t.Errorf("live tenant: %+v", rec)
	}
	kv, err := s.js.KeyValue(s.ctx, events.KVOrphans)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(s.ctx, events.OrphanKey(events.StoreMinIO, "orph-lookalike", 0, true)); err != nil {
		t.Errorf("the look-alike is not kept in %s: %v", events.KVOrphans, err)
	} else {
		var o events.Orphan
		if err := json.Unmarshal(e.Value(), &o); err != nil || !o.Foreign || !o.Reported || o.RemovalSagaID != "" {
			t.Errorf("look-alike entry %s", e.Value())
		}
	}
}
