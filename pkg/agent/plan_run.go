package agent

import (
	"context"
	"fmt"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Plans and dry run in the runtime: store.cmd.<store>.apply_plan and
// store.cmd.<store>.plan, and the plan a provision command carries. They
// run under the tenant's lock like every command, with the same retry and
// reply rules (runtime.go); the store's optional PlanApplier and DryRunner
// do the work.

// isPlanAction reports whether a is served by runPlan.
func isPlanAction(a events.Action) bool {
	return a == events.ActionApplyPlan || a == events.ActionPlan
}

// runPlan serves apply_plan (answered plan_applied with the limits read
// back) and plan (answered planned with the dry run).
func (r *runtime) runPlan(ctx context.Context, id ident, tenant events.TenantID, cmd *events.StoreCommand, delivery uint64) verdict {
	req := PlanRequest{Tenant: tenant, Generation: cmd.Generation, Plan: cmd.Plan.ForStore(r.kind)}
	if cmd.Action == events.ActionPlan {
		dr, ok := unwrapStore(r.store).(DryRunner)
		if !ok {
			return r.fail(id, events.ReasonUnsupported, fmt.Sprintf("the %s agent has no dry run", r.kind))
		}
		out, err := dryRunSafely(ctx, dr, req)
		if err != nil {
			return r.storeFailure(ctx, id, cmd, delivery, err)
		}
		res := r.newResult(id, events.OutcomePlanned)
		res.DryRun = &out
		return verdict{reply: res, settle: settleAck}
	}
	resp, err := r.applyPlan(ctx, req)
	if err != nil {
		return r.storeFailure(ctx, id, cmd, delivery, err)
	}
	res := r.newResult(id, events.OutcomePlanApplied)
	res.Limits = resp.Limits
	res.Usage = resp.Usage
	res.Warnings = resp.Warnings
	return verdict{reply: res, settle: settleAck}
}

// provisionPlan applies a provision command's plan, after the resources
// exist and before they are verified. It returns the limits read back, or
// the verdict that ends the provision.
func (r *runtime) provisionPlan(ctx context.Context, id ident, tenant events.TenantID, cmd *events.StoreCommand, delivery uint64, secrets ...secret.String) (*events.Plan, *verdict) {
	if cmd.Plan == nil {
		return nil, nil
	}
	resp, err := r.applyPlan(ctx, PlanRequest{Tenant: tenant, Generation: cmd.Generation, Plan: cmd.Plan.ForStore(r.kind)})
	if err != nil {
		v := r.storeFailure(ctx, id, cmd, delivery, fmt.Errorf("apply plan %q: %w", cmd.Plan.Name, err), secrets...)
		return nil, &v
	}
	return resp.Limits, nil
}

// applyPlan calls the store's PlanApplier; a store without one accepts
// only a plan with nothing for it.
func (r *runtime) applyPlan(ctx context.Context, req PlanRequest) (PlanResponse, error) {
	pa, ok := unwrapStore(r.store).(PlanApplier)
	if !ok {
		if empty := req.Plan.ForStore(r.kind); empty.MinIO == nil && empty.Postgres == nil && empty.Qdrant == nil && empty.Redis == nil {
			return PlanResponse{Limits: empty}, nil
		}
		return PlanResponse{}, Permanent(events.ReasonUnsupported, fmt.Errorf("the %s agent cannot apply plans", r.kind))
	}
	resp, err := applyPlanSafely(ctx, pa, req)
	if err != nil {
		return resp, SanitizeError(err)
	}
	if resp.Limits == nil {
		return resp, Permanent(events.ReasonStoreError, fmt.Errorf("the %s store applied the plan but read back no limits", r.kind))
	}
	return resp, nil
}

func applyPlanSafely(ctx context.Context, pa PlanApplier, req PlanRequest) (resp PlanResponse, err error) {
	defer recoverInto("apply_plan", &err)
	return pa.ApplyPlan(ctx, req)
}

func dryRunSafely(ctx context.Context, dr DryRunner, req PlanRequest) (out events.DryRun, err error) {
	defer recoverInto("dry_run", &err)
	out, err = dr.DryRun(ctx, req)
	if err != nil {
		return out, SanitizeError(err)
	}
	for i := range out.Operations {
		out.Operations[i].Text = SanitizeText(out.Operations[i].Text)
	}
	if out.Operations == nil {
		out.Operations = []Operation{}
	}
	return out, nil
}

// Operation is one statement or admin call of a dry run.
type Operation = events.Operation
