package saga

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tenantprov/tenantprov/pkg/events"
)

func TestPastDeadline(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	p := Policy{SagaTimeout: time.Minute, MaxTimeout: 10 * time.Minute}
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	for _, c := range []struct {
		name     string
		rec      *events.TenantRecord
		kind     string
		past     bool
		wantKind bool
	}{
		{"no record", nil, "", false, false},
		{"active", &events.TenantRecord{State: events.TenantActive, UpdatedAt: now.Add(-time.Hour)}, "", false, false},
		{"provisioning before its deadline", &events.TenantRecord{State: events.TenantProvisioning, Deadline: at(time.Second), UpdatedAt: now}, "provision", false, true},
		{"provisioning past its deadline after the tick", &events.TenantRecord{State: events.TenantProvisioning, Deadline: at(-time.Second), UpdatedAt: now}, "provision", true, true},
		{"rollback moving", &events.TenantRecord{State: events.TenantRollingBack, UpdatedAt: now.Add(-time.Minute)}, "rollback", false, true},
		{"rollback unchanged past the hard cap", &events.TenantRecord{State: events.TenantRollingBack, UpdatedAt: now.Add(-11 * time.Minute)}, "rollback", true, true},
		{"deprovisioning unchanged past the hard cap", &events.TenantRecord{State: events.TenantDeprovisioning, UpdatedAt: now.Add(-11 * time.Minute)}, "deprovision", true, true},
		{"rotating unchanged past the hard cap", &events.TenantRecord{State: events.TenantRotating, UpdatedAt: now.Add(-11 * time.Minute)}, "lifecycle", true, true},
	} {
		kind, past := pastDeadline(c.rec, now, p)
		if past != c.past || (c.wantKind && kind != c.kind) {
			t.Errorf("%s: pastDeadline = %q, %v; want %q, %v", c.name, kind, past, c.kind, c.past)
		}
	}
}

func TestCompensationRetriesCounted(t *testing.T) {
	s := &Saga{metrics: newMetrics(nil)}
	rec := func(state events.StoreState, attempt, round int) *events.TenantRecord {
		return &events.TenantRecord{TenantID: "acme", Generation: 3, State: events.TenantRollingBack,
			Stores: map[events.Store]*events.StoreStatus{events.StoreRedis: {State: state, Attempt: attempt, Round: round}}}
	}
	s.countRetries(rec(events.StoreProvisioned, 0, 0), rec(events.StoreDeprovisioning, 1, 1))    // the round's first command
	s.countRetries(rec(events.StoreDeprovisioning, 1, 1), rec(events.StoreDeprovisioning, 1, 1)) // nothing sent
	s.countRetries(rec(events.StoreDeprovisioning, 1, 1), rec(events.StoreDeprovisioning, 2, 1)) // a retry
	s.countRetries(rec(events.StoreDeprovisioning, 2, 1), rec(events.StoreDeprovisioning, 3, 3)) // a new round (a late provision compensated)
	if got := testutil.ToFloat64(s.metrics.compensationRetries.WithLabelValues("redis")); got != 1 {
		t.Fatalf("compensation retries = %v, want 1", got)
	}
}
