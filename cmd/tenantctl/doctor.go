package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
)

// doctorReport is what `tenantctl doctor --output json` prints.
type doctorReport struct {
	Tenant string `json:"tenant,omitempty"`
	OK     bool   `json:"ok"`
	inventory.Report
	// BadRecords are registry values that do not decode (key: why).
	BadRecords map[string]string       `json:"bad_records,omitempty"`
	Unanswered map[events.Store]string `json:"unanswered,omitempty"`
	// Orphans is what the orchestrator's orphan sweep keeps (KV bucket
	// orphans): when each was first seen, whether its removal is pending.
	Orphans []events.Orphan `json:"orphans,omitempty"`
	// Observation says what --observe asked for and got.
	Observation *observeStatus `json:"observation,omitempty"`
}

func newDoctorCmd(g *globals) *cobra.Command {
	var (
		storeWait   time.Duration
		margin      time.Duration
		transient   time.Duration
		observe     bool
		observeWait time.Duration
	)
	cmd := &cobra.Command{
		Use:   "doctor [<tenant-id>]",
		Short: "Compare every store with the registry: leaks, missing resources, stuck sagas, foreign look-alikes",
		Long: `doctor asks each store's agent for its inventory (every resource that carries
tenantprov's marker or has a tenant-shaped name), reads the registry, and
reports:

  leaked               a resource tenantprov created whose tenant is not live (an orphan)
  missing              an active tenant lacks a resource in a store
  stuck                a saga past its deadline (or idle) by more than --margin
  generation_mismatch  a resource's marker records another generation
  drift                a store's last observation found differences still open
                       (not repaired: lost data, or DRIFT_REPAIR=report)
  expiring             a credential expires soon or has expired (Qdrant's token exp)
  observe_failed       a store could not observe the tenant's slice
  unanswered           a store's agent did not answer within --store-timeout
  foreign              a look-alike tenantprov did not create (reported only)

Drift comes from the observations in the records: the orchestrator observes
every settled tenant once per OBSERVE_INTERVAL. With --observe (one tenant
only) doctor first asks for an observation now (tenant.observe.requested) and
waits up to --observe-timeout for every provisioned store's answer. The
orphan sweep's own list (first sighting, removal) is printed as well.

It exits 1 when anything but foreign was found, 0 otherwise.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tenant := ""
			if len(args) == 1 {
				id, err := parseID(args[0])
				if err != nil {
					return err
				}
				tenant = string(id)
			}
			if observe && tenant == "" {
				return fail(exitUsage, "--observe needs a tenant ID (every tenant is observed periodically; see OBSERVE_INTERVAL)")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			c, err := g.connect(ctx)
			if err != nil {
				return err
			}
			defer c.close()
			var obs *observeStatus
			if observe {
				if obs, err = observeNow(ctx, c, tenant, observeWait); err != nil {
					return err
				}
			}
			cl := &inventory.Client{NC: c.nc, Timeout: storeWait}
			gathered := cl.Gather(ctx, tenant)
			records, bad, err := inventory.LoadRecords(ctx, c.js)
			if err != nil {
				return fail(exitUnavailable, "read registry: %v", err)
			}
			rep := inventory.Compare(inventory.Input{
				Records: records, Inventories: gathered.Inventories, Unanswered: gathered.Unanswered,
				Tenant: tenant, Now: time.Now(),
				Options: inventory.Options{Margin: margin, TransientTimeout: transient},
			})
			rep.Merge(inventory.ObservationFindings(records, tenant))
			if obs != nil {
				var missing []inventory.Finding
				for _, st := range obs.Missing {
					missing = append(missing, inventory.Finding{Category: inventory.ObserveFailed, TenantID: tenant, Store: st,
						Detail: fmt.Sprintf("no observation within %s of the request (is the orchestrator's observer running, and does the %s agent observe?)", observeWait, st)})
				}
				rep.Merge(missing)
			}
			orphans, err := loadOrphans(ctx, c, tenant)
			if err != nil {
				return fail(exitUnavailable, "read the orphan sweep's bucket: %v", err)
			}
			dr := doctorReport{Tenant: tenant, OK: rep.OK() && len(bad) == 0, Report: rep, BadRecords: bad, Unanswered: gathered.Unanswered,
				Orphans: orphans, Observation: obs}
			if err := g.emit(dr, func(w io.Writer) error { printDoctor(w, dr); return nil }); err != nil {
				return err
			}
			if !dr.OK {
				return &exitError{code: exitFailed, err: fmt.Errorf("doctor found problems: %s", summary(rep.Counts, len(bad)))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&storeWait, "store-timeout", inventory.DefaultTimeout, "how long to wait for each store's inventory")
	f.DurationVar(&margin, "margin", inventory.DefaultMargin, "how far past its deadline a saga must be to count as stuck")
	f.DurationVar(&transient, "idle", inventory.DefaultTransientTimeout, "how long a rollback or deprovision may go without an update before it counts as stuck")
	f.BoolVar(&observe, "observe", false, "observe the tenant's slices now (tenant.observe.requested) and wait for the observations")
	f.DurationVar(&observeWait, "observe-timeout", time.Minute, "how long --observe waits for every store's observation")
	return cmd
}

func summary(counts map[inventory.Category]int, bad int) string {
	var parts []string
	for _, c := range inventory.Categories() {
		if counts[c] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[c], c))
		}
	}
	if bad > 0 {
		parts = append(parts, fmt.Sprintf("%d unreadable record(s)", bad))
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

func printDoctor(w io.Writer, r doctorReport) {
	scope := "all tenants"
	if r.Tenant != "" {
		scope = "tenant " + r.Tenant
	}
	stores := make([]string, 0, len(r.Items))
	for _, st := range events.Stores() {
		if n, ok := r.Items[st]; ok {
			stores = append(stores, fmt.Sprintf("%s %d", st, n))
		} else if _, un := r.Unanswered[st]; !un {
			stores = append(stores, fmt.Sprintf("%s 0", st))
		}
	}
	fmt.Fprintf(w, "doctor: %s — %d record(s); items per store: %s\n", scope, r.Tenants, strings.Join(stores, ", "))
	if len(r.Findings) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CATEGORY\tTENANT\tSTORE\tKIND\tNAME\tSTATE\tDETAIL")
		for _, f := range r.Findings {
			state := string(f.State)
			if f.Generation > 0 {
				state = fmt.Sprintf("%s/g%d", f.State, f.Generation)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Category, dash(f.TenantID), dash(string(f.Store)), dash(string(f.Kind)), dash(f.Name), dash(state), f.Detail)
		}
		_ = tw.Flush()
	}
	printSweep(w, r)
	keys := make([]string, 0, len(r.BadRecords))
	for k := range r.BadRecords {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "unreadable record %s: %s\n", k, r.BadRecords[k])
	}
	if r.OK {
		fmt.Fprintf(w, "OK: %s found\n", summary(r.Counts, 0))
	} else {
		fmt.Fprintf(w, "PROBLEMS: %s\n", summary(r.Counts, len(r.BadRecords)))
	}
}
