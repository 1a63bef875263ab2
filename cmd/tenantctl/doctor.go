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
}

func newDoctorCmd(g *globals) *cobra.Command {
	var (
		storeWait time.Duration
		margin    time.Duration
		transient time.Duration
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
  unanswered           a store's agent did not answer within --store-timeout
  foreign              a look-alike tenantprov did not create (reported only)

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
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			c, err := g.connect(ctx)
			if err != nil {
				return err
			}
			defer c.close()
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
			dr := doctorReport{Tenant: tenant, OK: rep.OK() && len(bad) == 0, Report: rep, BadRecords: bad, Unanswered: gathered.Unanswered}
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
