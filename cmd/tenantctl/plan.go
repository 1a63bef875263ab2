package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Plans and the dry run (DESIGN.md §10): provision --plan / --dry-run and
// update --plan.

// withPlanFlags adds --plan and --dry-run to the provision command. With
// either, the request is built here (the same flags as provision's own);
// without, provision runs as before.
func withPlanFlags(g *globals, cmd *cobra.Command) *cobra.Command {
	var plan string
	var dryRun bool
	cmd.Flags().StringVar(&plan, "plan", "", "the tenant's plan, from the orchestrator's PLANS_FILE (default: the default plan)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "ask every store what the provision would do and every conflict, changing nothing (answers tenant.planned)")
	cmd.Long += `

With --plan, the tenant gets the named plan's limits (bucket quota,
connection limit, statement timeout, collection limits, …), applied and read
back per store. With --dry-run, nothing is created: every agent reports the
operations it would run, the names, and every conflict (a foreign resource
holding a name, a limit its server cannot enforce); exit 1 if there is a
conflict or a store could not answer.`
	cmd.Example += "\n  tenantctl provision acme --plan small --dry-run\n  tenantctl provision acme --plan small --wait"
	inner := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if plan == "" && !dryRun {
			return inner(c, args)
		}
		id, err := parseID(args[0])
		if err != nil {
			return err
		}
		f := c.Flags()
		requestID, _ := f.GetString("request-id")
		wait, _ := f.GetBool("wait")
		labels, _ := f.GetStringArray("label")
		req := &events.TenantRequested{TenantID: string(id), RequestID: requestID, RequestedBy: requester(), Labels: map[string]string{}, Plan: plan, DryRun: dryRun}
		for _, l := range labels {
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				return fail(exitUsage, "--label %q: want key=value", l)
			}
			req.Labels[k] = v
		}
		if dryRun {
			if wait {
				return fail(exitUsage, "--dry-run always waits for the answer; --wait is for a provision")
			}
			return g.dryRun(c.Context(), req)
		}
		return g.request(c.Context(), events.SubjectTenantRequested, req, string(id), wait, events.TenantActive)
	}
	return cmd
}

func newUpdateCmd(g *globals) *cobra.Command {
	var wait bool
	var requestID, plan string
	cmd := &cobra.Command{
		Use:   "update <tenant-id> --plan <plan>",
		Short: "Change an active tenant's plan (publishes tenant.update.requested)",
		Long: `update publishes tenant.update.requested: every store applies the plan's
limits, reads them back and verifies them; the record then holds the plan
and each store's limits (tenantctl status). A store that fails is retried
with backoff; a store that cannot enforce the plan ends the update (exit 1
with --wait): the tenant stays active on its previous plan and is never
rolled back. Only an active tenant can be updated.`,
		Example: "  tenantctl update acme --plan large --wait",
		Args:    exactID("update"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			if plan == "" {
				return fail(exitUsage, "--plan is required")
			}
			req := &events.UpdateRequested{TenantID: string(id), Plan: plan, RequestID: requestID, RequestedBy: requester()}
			// Followed like a rotation: an active tenant is where the
			// request wants it already, so wait for this request to be
			// taken up; a refused plan sets the record's reason.
			err = g.lifecycleRequest(cmd.Context(), events.SubjectTenantUpdateRequested, req, string(id), wait, events.TenantActive, true)
			if !wait || (err != nil && !strings.HasPrefix(err.Error(), "rotation incomplete")) {
				return err
			}
			// Settled active: on the new plan, or the update was refused.
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			c, err := g.connect(ctx)
			if err != nil {
				return err
			}
			defer c.close()
			rec, _, err := c.record(ctx, string(id))
			if err != nil {
				return err
			}
			if rec.Plan != plan {
				return fail(exitFailed, "plan %s was not applied: %s", plan, dash(rec.Reason))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&plan, "plan", "", "the new plan, from the orchestrator's PLANS_FILE")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the plan is applied (or refused), showing progress")
	cmd.Flags().StringVar(&requestID, "request-id", "", "caller's request ID, recorded and audited")
	return cmd
}

// dryRun publishes the dry run and prints tenant.planned.
func (g *globals) dryRun(ctx context.Context, req *events.TenantRequested) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	if req.RequestID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		req.RequestID = "dry-run-" + hex.EncodeToString(b[:])
	}
	c, err := g.connect(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	answers := make(chan *events.TenantOutcomeEvent, 1)
	for _, subject := range []string{events.TenantOutcomeSubject(events.TenantOutcomePlanned), events.SubjectTenantRejected} {
		sub, err := c.nc.Subscribe(subject, func(m *nats.Msg) {
			ev, err := events.DecodeTenantOutcomeEvent(m.Data)
			if err != nil || ev.TenantID != req.TenantID || (ev.Outcome == events.TenantOutcomePlanned && ev.RequestID != req.RequestID) {
				return
			}
			select {
			case answers <- ev:
			default:
			}
		})
		if err != nil {
			return fail(exitUnavailable, "subscribe %s: %v", subject, err)
		}
		defer sub.Unsubscribe()
	}
	data, err := events.Encode(req)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	if _, err := c.js.Publish(ctx, events.SubjectTenantRequested, data); err != nil {
		return fail(exitUnavailable, "publish %s: %v", events.SubjectTenantRequested, err)
	}
	var ev *events.TenantOutcomeEvent
	select {
	case <-ctx.Done():
		return fail(exitTimeout, "timed out after %s waiting for the dry run of %s (tenant.planned)", g.timeout, req.TenantID)
	case ev = <-answers:
	}
	if ev.Outcome == events.TenantOutcomeRejected {
		return fail(exitFailed, "rejected: %s", ev.Reason)
	}
	if err := g.emit(ev, func(w io.Writer) error { return printDryRun(w, ev) }); err != nil {
		return err
	}
	conflicts := 0
	for _, dr := range ev.DryRun {
		conflicts += len(dr.Conflicts)
	}
	if conflicts > 0 || len(ev.Failed) > 0 {
		return fail(exitFailed, "the provision would not succeed: %d conflict(s), %d store(s) did not answer", conflicts, len(ev.Failed))
	}
	return nil
}

// printDryRun prints a dry run per store: names, operations (a skipped one
// says why), conflicts.
func printDryRun(w io.Writer, ev *events.TenantOutcomeEvent) error {
	fmt.Fprintf(w, "dry run of %s with plan %s (nothing was changed)\n", ev.TenantID, dash(ev.Plan))
	for _, store := range events.Stores() {
		fmt.Fprintf(w, "\n%s\n", store)
		if why, ok := ev.Failed[store]; ok {
			fmt.Fprintf(w, "  NO ANSWER: %s\n", why)
			continue
		}
		dr := ev.DryRun[store]
		if dr == nil {
			fmt.Fprintf(w, "  no answer\n")
			continue
		}
		keys := make([]string, 0, len(dr.Names))
		for k := range dr.Names {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  name %s = %s\n", k, dr.Names[k])
		}
		for _, op := range dr.Operations {
			if op.Skip != "" {
				fmt.Fprintf(w, "  skip  %-10s %s (%s)\n", op.Kind, op.Text, op.Skip)
			} else {
				fmt.Fprintf(w, "  run   %-10s %s\n", op.Kind, op.Text)
			}
		}
		for _, c := range dr.Conflicts {
			fmt.Fprintf(w, "  CONFLICT %s %s: %s\n", c.Kind, c.Resource, c.Detail)
		}
	}
	return nil
}

// printPlan prints the tenant's plan and, per store, the limits read back
// and the usage reported (status).
func printPlan(w io.Writer, rec *events.TenantRecord) {
	if rec.Plan == "" {
		return
	}
	fmt.Fprintf(w, "\nplan:        %s\n", rec.Plan)
	for _, store := range events.Stores() {
		st := rec.Stores[store]
		if st == nil || (st.Limits == nil && len(st.Usage) == 0) {
			continue
		}
		limits := "-"
		if st.Limits != nil {
			if b, err := json.Marshal(st.Limits.ForStore(store)); err == nil {
				limits = strings.TrimSuffix(strings.TrimPrefix(string(b), `{"name":"`+st.Limits.Name+`"`), "}")
				limits = strings.TrimPrefix(limits, ",")
			}
		}
		var usage []string
		for k, v := range st.Usage {
			usage = append(usage, fmt.Sprintf("%s=%d", k, v))
		}
		sort.Strings(usage)
		fmt.Fprintf(w, "  %-9s limits %s", store, dash(limits))
		if len(usage) > 0 {
			fmt.Fprintf(w, "  usage %s", strings.Join(usage, " "))
		}
		fmt.Fprintln(w)
	}
}
