package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// The lifecycle commands (DESIGN.md §10): rotate, suspend, resume, restore.
// deprovision --retain is in tenants.go. Each publishes its request and,
// with --wait, follows the tenant's record until the orchestrator has
// handled that request and the tenant settled.

func lifecycleCmds(g *globals) []*cobra.Command {
	return []*cobra.Command{newRotateCmd(g), newSuspendCmd(g), newResumeCmd(g), newRestoreCmd(g)}
}

func newRotateCmd(g *globals) *cobra.Command {
	var wait bool
	var requestID, grace string
	var stores []string
	cmd := &cobra.Command{
		Use:   "rotate <tenant-id>",
		Short: "Give a tenant new credentials (publishes tenant.rotate.requested)",
		Long: `rotate publishes tenant.rotate.requested. Each store (all, or those named
with --store) gets a new credential next to the old one; the new ones are
verified and sealed into the tenant's secrets file (which records each
store's credential version), then the old ones keep working for the grace
(--grace, default the orchestrator's ROTATE_GRACE_DEFAULT, 24h) and are
revoked when it ends — a step kept in the registry record, so it survives
restarts. --grace 0s revokes them at once.

A store whose rotation fails keeps its old credential and the tenant stays
active (audited CREDENTIALS_ROTATION_FAILED). Only an active tenant can be
rotated; a suspended one is rejected. A rotation while an earlier one's
grace is still running revokes the earlier one's old credentials first.

With --wait, tenantctl follows the record until the rotation is done: exit 0
when every store rotated, 1 when a store kept its old credential or the
request was rejected.`,
		Example: "  tenantctl rotate acme --wait\n  tenantctl rotate acme --store postgres --store redis --grace 1h --wait",
		Args:    exactID("rotate"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			req := &events.RotateRequested{TenantID: string(id), Grace: grace, RequestID: requestID, RequestedBy: requester()}
			for _, s := range stores {
				if !events.Store(s).Valid() {
					return fail(exitUsage, "--store %q: unknown store (want one of %s)", s, storeNames())
				}
				req.Stores = append(req.Stores, events.Store(s))
			}
			if _, err := events.ParseRequestDuration(grace); err != nil {
				return fail(exitUsage, "--grace: %v", err)
			}
			return g.lifecycleRequest(cmd.Context(), events.SubjectTenantRotateRequested, req, string(id), wait, events.TenantActive, true)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the rotation is done, showing progress")
	cmd.Flags().StringVar(&requestID, "request-id", "", "caller's request ID, recorded and audited")
	cmd.Flags().StringVar(&grace, "grace", "", "how long the old credentials keep working (e.g. 24h; 0s: revoke at once)")
	cmd.Flags().StringArrayVar(&stores, "store", nil, "rotate only this store (repeatable): minio, postgres, qdrant, redis")
	return cmd
}

func storeNames() string {
	var names []string
	for _, s := range events.Stores() {
		names = append(names, string(s))
	}
	return strings.Join(names, ", ")
}

// newSimpleLifecycleCmd builds suspend, resume and restore: a tenant ID, a
// request ID, --wait.
func newSimpleLifecycleCmd(g *globals, use, subject string, want events.TenantState, short, long, waitHelp string) *cobra.Command {
	var wait bool
	var requestID string
	cmd := &cobra.Command{
		Use:     use + " <tenant-id>",
		Short:   short,
		Long:    long,
		Example: fmt.Sprintf("  tenantctl %s acme --wait", use),
		Args:    exactID(use),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			req := &events.LifecycleRequested{TenantID: string(id), RequestID: requestID, RequestedBy: requester()}
			return g.lifecycleRequest(cmd.Context(), subject, req, string(id), wait, want, false)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, waitHelp)
	cmd.Flags().StringVar(&requestID, "request-id", "", "caller's request ID, recorded and audited")
	return cmd
}

func newSuspendCmd(g *globals) *cobra.Command {
	return newSimpleLifecycleCmd(g, "suspend", events.SubjectTenantSuspendRequested, events.TenantSuspended,
		"Refuse a tenant's credentials in every store, data untouched (publishes tenant.suspend.requested)",
		`suspend publishes tenant.suspend.requested: every store refuses the
tenant's credentials and ends its sessions; its data is untouched. A store
that fails is retried with backoff until it succeeds. Only an active tenant
can be suspended (a suspended one: nothing to do). resume undoes it.`,
		"wait until the tenant is suspended, showing progress")
}

func newResumeCmd(g *globals) *cobra.Command {
	return newSimpleLifecycleCmd(g, "resume", events.SubjectTenantResumeRequested, events.TenantActive,
		"Re-enable a suspended tenant's credentials (publishes tenant.resume.requested)",
		`resume publishes tenant.resume.requested: every store accepts the
tenant's same credentials again. Only a suspended tenant can be resumed (an
active one: nothing to do); a retained one comes back with restore.`,
		"wait until the tenant is active, showing progress")
}

func newRestoreCmd(g *globals) *cobra.Command {
	return newSimpleLifecycleCmd(g, "restore", events.SubjectTenantRestoreRequested, events.TenantActive,
		"Bring a retained tenant back with fresh credentials (publishes tenant.restore.requested)",
		`restore publishes tenant.restore.requested for a tenant deprovisioned with
--retain whose retention has not ended: every store re-enables it, gives it
fresh credentials (sealed) and revokes the old ones; its data is as it was.
A restore after the purge started is rejected.`,
		"wait until the tenant is active, showing progress")
}

// lifecycleRequest publishes a lifecycle request and, with wait, follows
// the record until the orchestrator handled it and the tenant is want.
func (g *globals) lifecycleRequest(ctx context.Context, subject string, p events.Payload, id string, wait bool, want events.TenantState, rotate bool) error {
	return g.publishRequest(ctx, subject, p, id, wait, func(ctx context.Context, c *conn, seq uint64, rejected <-chan *events.TenantOutcomeEvent) error {
		return g.followLifecycle(ctx, c, id, subject, seq, want, rotate, rejected)
	})
}

// handled reports whether rec shows the request at stream sequence seq on
// subject was taken up (an operation started by it), or — for a request
// that changes nothing in the tenant's present state — that the tenant is
// where the request wants it already.
func handled(rec *events.TenantRecord, subject string, seq uint64, want events.TenantState, rotate bool) bool {
	if subject == events.SubjectTenantDeprovisionRequested {
		return rec.DeprovisionSeq >= seq || (rec.State == want && rec.Lifecycle == nil)
	}
	if rec.LifecycleSeq >= seq {
		return true
	}
	return !rotate && rec.State == want && rec.Lifecycle == nil
}

// followLifecycle prints the tenant's state and each store's lifecycle
// step as they change, until the request is handled and the tenant is
// want with its outcome announced.
func (g *globals) followLifecycle(ctx context.Context, c *conn, id, subject string, seq uint64, want events.TenantState, rotate bool, rejected <-chan *events.TenantOutcomeEvent) error {
	w, err := c.kv.Watch(ctx, id)
	if err != nil {
		return fail(exitUnavailable, "watch registry: %v", err)
	}
	defer w.Stop()
	start := time.Now()
	seen := map[string]bool{}
	var last *events.TenantRecord
	taken := false
	for {
		select {
		case <-ctx.Done():
			state := "unknown"
			if last != nil {
				state = string(last.State)
			}
			return fail(exitTimeout, "timed out after %s waiting for %s to be %s (now %s)", g.timeout, id, want, state)
		case ev := <-rejected:
			return fail(exitFailed, "rejected: %s", ev.Reason)
		case e := <-w.Updates():
			if e == nil {
				if last == nil {
					return fail(exitNotFound, "tenant %q not found", id)
				}
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				continue
			}
			rec, err := events.DecodeTenantRecord(e.Value())
			if err != nil {
				continue
			}
			last = rec
			taken = taken || handled(rec, subject, seq, want, rotate)
			if !taken {
				continue
			}
			if !g.json {
				g.lifecycleProgress(rec, seen, start)
			}
			if rec.State != want || rec.Announced != want || rec.Lifecycle != nil {
				continue
			}
			if g.json {
				if err := g.printJSON(rec); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(g.stdout, "%s is %s after %s\n", id, rec.State, time.Since(start).Round(time.Millisecond))
			}
			if rotate {
				return rotationVerdict(rec)
			}
			return nil
		}
	}
}

// rotationVerdict: exit 1 when a store kept its old credential (the
// orchestrator says which in the record's reason, set when the rotation
// ends and cleared when the next operation starts).
func rotationVerdict(rec *events.TenantRecord) error {
	if rec.Reason != "" {
		return fail(exitFailed, "rotation incomplete: %s", rec.Reason)
	}
	return nil
}

func (g *globals) lifecycleProgress(rec *events.TenantRecord, seen map[string]bool, start time.Time) {
	line := func(key, text string) {
		if !seen[key] {
			seen[key] = true
			fmt.Fprintf(g.stdout, "%7s  %s\n", time.Since(start).Round(100*time.Millisecond), text)
		}
	}
	line("state "+string(rec.State), fmt.Sprintf("%s: %s", rec.TenantID, rec.State))
	for _, store := range events.Stores() {
		st := rec.Stores[store]
		if st == nil || st.Step == nil {
			continue
		}
		s := st.Step
		text := fmt.Sprintf("  %-8s %s %s (attempt %d)", store, s.Action, s.State, s.Attempt)
		if s.Action == events.ActionRotate && s.State == events.StepDone {
			text += fmt.Sprintf(" → credential version %d", st.CredentialVersion)
		}
		if r := strings.TrimSpace(s.Reason + " " + s.Error); r != "" {
			text += " — " + r
		}
		line(fmt.Sprintf("%s %s %d %s", store, s.Action, s.Attempt, s.State), text)
	}
	if sc := rec.Scheduled; sc != nil {
		line("sched "+string(sc.Kind)+sc.DueAt.String(), fmt.Sprintf("  %s scheduled at %s", sc.Kind, sc.DueAt.Format(time.RFC3339)))
	}
}

// retainRequest publishes a deprovision with retention and, with wait,
// follows the tenant until it is retained.
func (g *globals) retainRequest(ctx context.Context, req *events.DeprovisionRequested, wait bool) error {
	d, err := events.ParseRequestDuration(req.Retain)
	if err != nil || d <= 0 {
		if err == nil {
			err = fmt.Errorf("must be positive")
		}
		return fail(exitUsage, "--retain: %v", err)
	}
	return g.lifecycleRequest(ctx, events.SubjectTenantDeprovisionRequested, req, req.TenantID, wait, events.TenantRetained, false)
}

// printLifecycle prints, for `tenantctl status`, what the lifecycle keeps
// in the record: the operation in flight, the step scheduled, the last
// error, and each store's credential version and last lifecycle step.
func printLifecycle(w io.Writer, rec *events.TenantRecord) {
	if op := rec.Lifecycle; op != nil {
		phase := ""
		if op.Phase < len(op.Phases) {
			phase = string(op.Phases[op.Phase])
		}
		fmt.Fprintf(w, "\noperation:   %s (%s) since %s, phase %s\n", op.Kind, op.ID, op.StartedAt.Format(time.RFC3339), dash(phase))
	}
	if sc := rec.Scheduled; sc != nil {
		stores := ""
		if len(sc.Stores) > 0 {
			var names []string
			for _, s := range sc.Stores {
				names = append(names, string(s))
			}
			stores = " (" + strings.Join(names, ", ") + ")"
		}
		fmt.Fprintf(w, "scheduled:   %s at %s%s\n", sc.Kind, sc.DueAt.Format(time.RFC3339), stores)
	}
	if rec.LastError != "" {
		fmt.Fprintf(w, "last error:  %s\n", rec.LastError)
	}
	shown := false
	for _, store := range events.Stores() {
		if st := rec.Stores[store]; st != nil && (st.Step != nil || st.CredentialVersion > 1) {
			shown = true
		}
	}
	if !shown {
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSTORE\tCREDENTIAL\tLAST STEP\tATTEMPT\tSTATE\tREASON")
	for _, store := range events.Stores() {
		st := rec.Stores[store]
		if st == nil {
			continue
		}
		step, attempt, state, reason := "-", "-", "-", ""
		if s := st.Step; s != nil {
			step, attempt, state, reason = string(s.Action), fmt.Sprint(s.Attempt), s.State, strings.TrimSpace(s.Reason+" "+s.Error)
		}
		fmt.Fprintf(tw, "%s\tv%d\t%s\t%s\t%s\t%s\n", store, max(st.CredentialVersion, 1), step, attempt, state, reason)
	}
	_ = tw.Flush()
}
