package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/tenantprov/tenantprov/pkg/events"
)

type conn struct {
	nc *nats.Conn
	js jetstream.JetStream
	kv jetstream.KeyValue
}

func (g *globals) connect(ctx context.Context) (*conn, error) {
	opts := []nats.Option{nats.Name("tenantctl"), nats.Timeout(5 * time.Second)}
	if g.creds != "" {
		opts = append(opts, nats.UserCredentials(g.creds))
	}
	nc, err := nats.Connect(g.natsURL, opts...)
	if err != nil {
		return nil, fail(exitUnavailable, "connect to NATS at %s: %v (is the system up? `make up`, then `source .dev/env`)", g.natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fail(exitUnavailable, "jetstream: %v", err)
	}
	kv, err := js.KeyValue(ctx, events.KVTenants)
	if err != nil {
		nc.Close()
		return nil, fail(exitUnavailable, "open registry %q: %v (has the orchestrator started?)", events.KVTenants, err)
	}
	return &conn{nc: nc, js: js, kv: kv}, nil
}

func (c *conn) close() { c.nc.Close() }

func (c *conn) record(ctx context.Context, id string) (*events.TenantRecord, uint64, error) {
	e, err := c.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fail(exitNotFound, "tenant %q not found", id)
	}
	if err != nil {
		return nil, 0, fail(exitUnavailable, "read registry: %v", err)
	}
	rec, err := events.DecodeTenantRecord(e.Value())
	if err != nil {
		return nil, 0, fail(exitFailed, "registry record for %q is invalid: %v", id, err)
	}
	return rec, e.Revision(), nil
}

func parseID(arg string) (events.TenantID, error) {
	id, err := events.ParseTenantID(arg)
	if err != nil {
		return "", fail(exitUsage, "%v", err)
	}
	return id, nil
}

func newProvisionCmd(g *globals) *cobra.Command {
	var wait bool
	var requestID string
	var labels []string
	cmd := &cobra.Command{
		Use:   "provision <tenant-id>",
		Short: "Request a tenant (publishes tenant.requested)",
		Long: `provision publishes tenant.requested for the tenant. The orchestrator
creates its bucket, database, collection and key space, verifies isolation
and seals the credentials. Requesting a tenant that is already active or in
flight changes nothing; one that failed or was deprovisioned starts a new
generation.

With --wait, tenantctl follows the tenant's record and prints each store's
progress until it is active (exit 0) or rolled back (exit 1).

Tenant IDs: 3-32 characters, lowercase letters, digits and hyphens, starting
with a letter, no "--", not starting with "tenantprov".`,
		Example: "  tenantctl provision acme --wait\n  tenantctl provision acme --label plan=pro --request-id signup-42",
		Args:    exactID("provision"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			req := &events.TenantRequested{TenantID: string(id), RequestID: requestID, RequestedBy: requester(), Labels: map[string]string{}}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok {
					return fail(exitUsage, "--label %q: want key=value", l)
				}
				req.Labels[k] = v
			}
			return g.request(cmd.Context(), events.SubjectTenantRequested, req, string(id), wait, events.TenantActive)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the tenant is active or rolled back, showing progress")
	cmd.Flags().StringVar(&requestID, "request-id", "", "caller's request ID, recorded and audited")
	cmd.Flags().StringArrayVar(&labels, "label", nil, "label key=value (repeatable)")
	return cmd
}

func newDeprovisionCmd(g *globals) *cobra.Command {
	var wait bool
	var requestID, retain string
	cmd := &cobra.Command{
		Use:   "deprovision <tenant-id>",
		Short: "Remove a tenant (publishes tenant.deprovision.requested)",
		Long: `deprovision publishes tenant.deprovision.requested. Every store's resources
are removed and the credentials revoked; the sealed secrets are deleted last.
Only an active tenant can be deprovisioned: a tenant whose provisioning is
still running is rejected (retry once it settles), and an unknown tenant is
rejected too. With --wait, tenantctl follows the record until the tenant is
deprovisioned.

With --retain (e.g. 168h, within the orchestrator's RETAIN_MAX) the
credentials are refused now and the data is kept: the tenant is retained
until the retention ends, then purged; ` + "`tenantctl restore`" + ` brings it back
before that. Deprovisioning a retained tenant without --retain purges it now.`,
		Example: "  tenantctl deprovision acme --wait\n  tenantctl deprovision acme --retain 168h --wait",
		Args:    exactID("deprovision"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			req := &events.DeprovisionRequested{TenantID: string(id), RequestID: requestID, RequestedBy: requester(), Retain: retain}
			if retain != "" {
				return g.retainRequest(cmd.Context(), req, wait) // lifecycle.go
			}
			return g.request(cmd.Context(), events.SubjectTenantDeprovisionRequested, req, string(id), wait, events.TenantDeprovisioned)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the tenant is deprovisioned (retained with --retain), showing progress")
	cmd.Flags().StringVar(&retain, "retain", "", "keep the data this long, restorable (e.g. 168h); then purge")
	cmd.Flags().StringVar(&requestID, "request-id", "", "caller's request ID, recorded and audited")
	return cmd
}

func requester() string {
	return "tenantctl:" + envOr("USER", "operator")
}

// request publishes a request and, with wait, follows the record until it
// reaches want (or fails).
func (g *globals) request(ctx context.Context, subject string, p events.Payload, id string, wait bool, want events.TenantState) error {
	return g.publishRequest(ctx, subject, p, id, wait, func(ctx context.Context, c *conn, _ uint64, rejected <-chan *events.TenantOutcomeEvent) error {
		return g.follow(ctx, c, id, want, rejected)
	})
}

// publishRequest publishes request p for tenant id on subject. Without
// wait it prints the acknowledgement; with wait it listens for the
// request's rejection first and then hands over to follow, with the
// request's stream sequence, until the command's timeout.
func (g *globals) publishRequest(ctx context.Context, subject string, p events.Payload, id string, wait bool,
	follow func(ctx context.Context, c *conn, seq uint64, rejected <-chan *events.TenantOutcomeEvent) error) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	c, err := g.connect(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	var rejected chan *events.TenantOutcomeEvent
	if wait {
		rejected = make(chan *events.TenantOutcomeEvent, 1)
		sub, err := c.nc.Subscribe(events.SubjectTenantRejected, func(m *nats.Msg) {
			if ev, err := events.DecodeTenantOutcomeEvent(m.Data); err == nil && ev.TenantID == id {
				select {
				case rejected <- ev:
				default:
				}
			}
		})
		if err == nil {
			defer sub.Unsubscribe()
		}
	}
	data, err := events.Encode(p)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	ack, err := c.js.Publish(ctx, subject, data)
	if err != nil {
		return fail(exitUnavailable, "publish %s: %v", subject, err)
	}
	if !wait {
		res := requestAck{Subject: subject, TenantID: id, Stream: ack.Stream, Sequence: ack.Sequence}
		return g.emit(res, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "requested: %s %s (stream %s seq %d); follow with `tenantctl status %s` or `tenantctl watch %s`\n", subject, id, ack.Stream, ack.Sequence, id, id)
			return err
		})
	}
	return follow(ctx, c, ack.Sequence, rejected)
}

// requestAck is what provision and deprovision print without --wait.
type requestAck struct {
	Subject  string `json:"subject"`
	TenantID string `json:"tenant_id"`
	Stream   string `json:"stream"`
	Sequence uint64 `json:"sequence"`
}

// follow watches the tenant's record and prints its progress (the events
// watch prints, with the time since the start) until the tenant settles;
// the last line (kind result, with the record) says where.
func (g *globals) follow(ctx context.Context, c *conn, id string, want events.TenantState, rejected <-chan *events.TenantOutcomeEvent) error {
	w, err := c.kv.Watch(ctx, id)
	if err != nil {
		return fail(exitUnavailable, "watch registry: %v", err)
	}
	defer w.Stop()
	start := time.Now()
	inflight := false
	var prev, last *events.TenantRecord
	progress := func(e tenantEvent) error {
		e.ElapsedMS = time.Since(start).Milliseconds()
		return g.line(e, func(w io.Writer) {
			text := e.describe()
			if e.Kind == eventState {
				text = printable(e.TenantID) + ": " + text
			}
			fmt.Fprintf(w, "%7s  %s\n", time.Since(start).Round(100*time.Millisecond), text)
		})
	}
	result := func(rec *events.TenantRecord) error {
		e := tenantEvent{Time: time.Now(), Kind: eventResult, TenantID: rec.TenantID, Generation: rec.Generation, SagaID: rec.SagaID,
			State: string(rec.State), Reason: rec.Reason, ElapsedMS: time.Since(start).Milliseconds(), Record: rec}
		return g.line(e, func(w io.Writer) {
			if rec.State == want {
				fmt.Fprintf(w, "%s is %s (generation %d) after %s\n", id, rec.State, rec.Generation, time.Since(start).Round(time.Millisecond))
			}
		})
	}
	for {
		select {
		case <-ctx.Done():
			state := "unknown"
			if last != nil {
				state = string(last.State)
			}
			return fail(exitTimeout, "timed out after %s waiting for %s to be %s (now %s)", g.timeout, id, want, state)
		case ev := <-rejected:
			if err := progress(outcomeEvent(events.SubjectTenantRejected, ev)); err != nil {
				return err
			}
			return fail(exitFailed, "rejected: %s", ev.Reason)
		case e := <-w.Updates():
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			rec, err := events.DecodeTenantRecord(e.Value())
			if err != nil {
				continue
			}
			last = rec
			for _, ev := range recordEvents(prev, rec, e.Revision(), e.Created()) {
				if err := progress(ev); err != nil {
					return err
				}
			}
			prev = rec
			switch {
			case rec.State == want && rec.Announced == want:
				return result(rec)
			case rec.State == events.TenantFailed && rec.Announced == events.TenantFailed && want == events.TenantActive && inflight:
				if err := result(rec); err != nil {
					return err
				}
				return fail(exitFailed, "%s failed and was rolled back: %s", id, rec.Reason)
			case rec.State.InFlight():
				inflight = true
			}
		}
	}
}

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status <tenant-id>",
		Short: "Show a tenant's record: state, per-store status, timings, errors",
		Args:  exactID("status"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			c, err := g.connect(ctx)
			if err != nil {
				return err
			}
			defer c.close()
			rec, rev, err := c.record(ctx, string(id))
			if err != nil {
				return err
			}
			return g.emit(statusDoc{TenantRecord: rec, Revision: rev}, func(w io.Writer) error {
				printRecord(w, rec, rev)
				return nil
			})
		},
	}
}

// statusDoc is what status prints with -o json: the registry record (as
// `nats kv get tenants <id>` shows it) and its revision.
type statusDoc struct {
	*events.TenantRecord
	Revision uint64 `json:"revision"`
}

func printRecord(w io.Writer, rec *events.TenantRecord, rev uint64) {
	fmt.Fprintf(w, "tenant:      %s\nstate:       %s\ngeneration:  %d\nsaga:        %s\nrevision:    %d\ncreated:     %s\nupdated:     %s\n",
		rec.TenantID, rec.State, rec.Generation, rec.SagaID, rev, rec.CreatedAt.Format(time.RFC3339), rec.UpdatedAt.Format(time.RFC3339))
	if rec.Reason != "" {
		fmt.Fprintf(w, "reason:      %s\n", rec.Reason)
	}
	if rec.Deadline != nil {
		fmt.Fprintf(w, "deadline:    %s\n", rec.Deadline.Format(time.RFC3339))
	}
	if rec.Secrets != nil {
		fmt.Fprintf(w, "secrets:     %s/%s sha256:%s\n", rec.Secrets.Bucket, rec.Secrets.Object, rec.Secrets.SHA256)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSTORE\tSTATE\tVERIFIED\tMODE\tTOOK\tRESOURCES\tERROR")
	for _, store := range events.Stores() {
		st := rec.Stores[store]
		if st == nil {
			continue
		}
		var res []string
		for k, v := range st.Resources {
			res = append(res, k+"="+v)
		}
		sort.Strings(res)
		errText := strings.TrimSpace(st.Reason + " " + st.Error)
		for _, w := range st.Warnings {
			errText = strings.TrimSpace(errText + " warning: " + w)
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%dms\t%s\t%s\n", store, st.State, st.Verified, dash(st.IsolationMode), st.DurationMS, strings.Join(res, " "), errText)
	}
	_ = tw.Flush()
	printLifecycle(w, rec)
	printPlan(w, rec) // plan.go
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List every tenant with its state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			c, err := g.connect(ctx)
			if err != nil {
				return err
			}
			defer c.close()
			lister, err := c.kv.ListKeys(ctx)
			if err != nil {
				return fail(exitUnavailable, "list registry: %v", err)
			}
			recs := []*events.TenantRecord{} // -o json: [] when there is none
			for k := range lister.Keys() {
				rec, _, err := c.record(ctx, k)
				if err != nil {
					continue
				}
				recs = append(recs, rec)
			}
			sort.Slice(recs, func(i, j int) bool { return recs[i].TenantID < recs[j].TenantID })
			return g.emit(recs, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TENANT\tSTATE\tGENERATION\tUPDATED\tREASON")
				for _, r := range recs {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.TenantID, r.State, r.Generation, r.UpdatedAt.Format(time.RFC3339), r.Reason)
				}
				return tw.Flush()
			})
		},
	}
}
