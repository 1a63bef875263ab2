package agent

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// planStore is a scriptStore with plans and a dry run.
type planStore struct {
	*scriptStore
	apply  func(PlanRequest) (PlanResponse, error)
	dryRun func(PlanRequest) (events.DryRun, error)
}

func (s *planStore) ApplyPlan(_ context.Context, req PlanRequest) (PlanResponse, error) {
	s.record("apply_plan:" + req.Plan.Name)
	return s.apply(req)
}

func (s *planStore) DryRun(_ context.Context, req PlanRequest) (events.DryRun, error) {
	s.record("dry_run")
	return s.dryRun(req)
}

func newPlanHarness(t *testing.T, ps *planStore) *harness {
	t.Helper()
	h := newHarness(t, ps.scriptStore)
	h.rt.store = decorate(ps, h.rt.metrics)
	return h
}

var smallPlan = &events.Plan{Name: "small", Redis: &events.RedisPlan{DenyCategories: []string{"@slow"}}, MinIO: &events.MinIOPlan{BucketQuotaBytes: 1 << 20}}

func withPlan(p *events.Plan) func(*events.StoreCommand) {
	return func(c *events.StoreCommand) { c.Plan = p }
}

func TestApplyPlanRepliesWithTheLimitsReadBack(t *testing.T) {
	var got PlanRequest
	h := newPlanHarness(t, &planStore{scriptStore: &scriptStore{}, apply: func(req PlanRequest) (PlanResponse, error) {
		got = req
		return PlanResponse{Limits: req.Plan, Usage: map[string]int64{events.UsagePoints: 7}}, nil
	}})
	h.deliverCmd(t, command(events.ActionApplyPlan, withPlan(smallPlan)), 1)
	wantTrail(t, h, "publish:store.evt.redis.plan_applied", "ack")
	res, _ := h.reply(t)
	if res.Limits == nil || res.Limits.Name != "small" || res.Limits.Redis == nil || res.Usage[events.UsagePoints] != 7 {
		t.Fatalf("limits = %+v, usage %v", res.Limits, res.Usage)
	}
	if got.Plan.MinIO != nil || got.Tenant != "acme" || got.Generation != 2 {
		t.Fatalf("the store got %+v; want only the redis section, for acme generation 2", got)
	}
}

func TestApplyPlanFailuresAreAnswered(t *testing.T) {
	h := newPlanHarness(t, &planStore{scriptStore: &scriptStore{}, apply: func(PlanRequest) (PlanResponse, error) {
		return PlanResponse{}, Permanent(events.ReasonUnsupported, errors.New("redis cannot enforce max_connections"))
	}})
	h.deliverCmd(t, command(events.ActionApplyPlan, withPlan(smallPlan)), 1)
	wantTrail(t, h, "publish:store.evt.redis.apply_plan_failed", "term:unsupported")

	// A store without plans: unsupported, not a provision_failed.
	h2 := newHarness(t, &scriptStore{})
	h2.deliverCmd(t, command(events.ActionApplyPlan, withPlan(smallPlan)), 1)
	wantTrail(t, h2, "publish:store.evt.redis.apply_plan_failed", "term:unsupported")
	h3 := newHarness(t, &scriptStore{})
	h3.deliverCmd(t, command(events.ActionPlan), 1)
	wantTrail(t, h3, "publish:store.evt.redis.plan_failed", "term:unsupported")
}

func TestDryRunRepliesPlannedAndNeverProvisions(t *testing.T) {
	ps := &planStore{scriptStore: &scriptStore{}, dryRun: func(req PlanRequest) (events.DryRun, error) {
		return events.DryRun{
			Operations: []events.Operation{{Kind: "command", Text: "ACL SETUSER tenant_acme reset on #<redacted>"}},
			Names:      map[string]string{"user": "tenant_acme"},
			Conflicts:  []events.Conflict{{Kind: events.ConflictUnenforceable, Resource: "max_connections"}},
		}, nil
	}}
	h := newPlanHarness(t, ps)
	h.deliverCmd(t, command(events.ActionPlan, withPlan(smallPlan)), 1)
	wantTrail(t, h, "publish:store.evt.redis.planned", "ack")
	res, _ := h.reply(t)
	if res.DryRun == nil || len(res.DryRun.Operations) != 1 || res.DryRun.Conflicts[0].Resource != "max_connections" {
		t.Fatalf("dry run = %+v", res.DryRun)
	}
	if c := ps.Calls(); strings.Join(c, " ") != "dry_run" {
		t.Fatalf("store calls %v, want only dry_run", c)
	}
}

func TestProvisionAppliesItsPlanBeforeVerify(t *testing.T) {
	ps := &planStore{scriptStore: &scriptStore{}, apply: func(req PlanRequest) (PlanResponse, error) {
		return PlanResponse{Limits: req.Plan}, nil
	}}
	h := newPlanHarness(t, ps)
	h.deliverCmd(t, command(events.ActionProvision, withPlan(smallPlan)), 1)
	wantTrail(t, h, "publish:store.evt.redis.provisioned", "ack")
	res, _ := h.reply(t)
	if res.Limits == nil || res.Limits.Name != "small" {
		t.Fatalf("limits = %+v", res.Limits)
	}
	if c := ps.Calls(); strings.Join(c, " ") != "provision apply_plan:small verify" {
		t.Fatalf("store calls %v, want provision, apply_plan, verify", c)
	}

	// A plan that cannot be applied fails the provision, and the error
	// never carries the generated password.
	var pw secret.String
	ps2 := &planStore{scriptStore: &scriptStore{}}
	ps2.apply = func(PlanRequest) (PlanResponse, error) {
		pw = ps2.pws[0]
		return PlanResponse{}, Permanent(events.ReasonUnsupported, errors.New("refused: "+pw.Reveal()))
	}
	h2 := newPlanHarness(t, ps2)
	h2.deliverCmd(t, command(events.ActionProvision, withPlan(smallPlan)), 1)
	wantTrail(t, h2, "publish:store.evt.redis.provision_failed", "term:unsupported")
	res, m := h2.reply(t)
	if strings.Contains(string(m.Data), pw.Reveal()) || !strings.Contains(res.Error, "apply plan") {
		t.Fatalf("error %q (must name the plan step and not carry the password)", res.Error)
	}
}
