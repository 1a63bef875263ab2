package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"
)

type globals struct {
	natsURL string
	creds   string
	// output is --output/-o: text or json (see output.go).
	output string
	// json is true with -o json (or the older --json).
	json    bool
	timeout time.Duration
	stdout  io.Writer
	stderr  io.Writer
}

var traverseHooks sync.Once

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func newRoot(stdout, stderr io.Writer) (*cobra.Command, *globals) {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "tenantctl",
		Short: "Operate tenantprov: provision tenants, read their records and secrets, audit",
		Long: `tenantctl drives tenantprov, which gives each tenant an isolated slice of
MinIO, PostgreSQL, Qdrant and Redis with its own credentials.

A first session (after ` + "`make up; source .dev/env`" + `):

  tenantctl provision acme --wait            # request a tenant, watch each store
  tenantctl status acme                      # the registry record
  tenantctl secrets get acme --store postgres --format env
  tenantctl audit --tenant acme              # what happened, from the audit trail
  tenantctl audit --verify                   # check the audit hash chain
  tenantctl watch acme                       # its events, live, until Ctrl-C
  tenantctl deprovision acme --wait

Every command prints for people by default; -o json (--output json) prints
one JSON document instead (JSON lines for watch and --wait), and errors as
one JSON line on stderr: {"error": "...", "code": 4, "kind": "not_found"}.

Connection settings come from the environment (.dev/env sets them all):
NATS_URL, NATS_CREDS, SOPS_AGE_KEY_FILE (operator key, for secrets get) and
AUDIT_PG_URL (for audit).

Exit codes: 0 success; 1 the operation failed (e.g. the tenant was rolled
back); 2 bad usage or invalid input; 3 timed out; 4 not found; 5 NATS or
PostgreSQL unreachable.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(lifecycleCmds(g)...) // rotate, suspend, resume, restore (lifecycle.go)
	pf := root.PersistentFlags()
	pf.StringVar(&g.natsURL, "nats-url", envOr("NATS_URL", "nats://127.0.0.1:4222"), "NATS server URL (env NATS_URL)")
	pf.StringVar(&g.creds, "creds", os.Getenv("NATS_CREDS"), "NATS credentials file (env NATS_CREDS)")
	pf.StringVarP(&g.output, "output", "o", outputText, "output format: text or json (JSON lines for watch and --wait)")
	pf.BoolVar(&g.json, "json", false, "same as --output json")
	root.PersistentPreRunE = func(*cobra.Command, []string) error { return g.resolveOutput() }
	// A subcommand with its own persistent hook still gets the output
	// format resolved by the root's (a cobra global: set once).
	traverseHooks.Do(func() { cobra.EnableTraverseRunHooks = true })
	pf.DurationVar(&g.timeout, "timeout", 2*time.Minute, "how long to wait for NATS and for --wait")
	root.AddCommand(newUpdateCmd(g)) // plans (plan.go)
	root.AddCommand(newKeysCmd(g), withPlanFlags(g, newProvisionCmd(g)), newDeprovisionCmd(g), newStatusCmd(g), newListCmd(g), newSecretsCmd(g), newAuditCmd(g), newBusCmd(g), newDoctorCmd(g), newWatchCmd(g))
	return root, g
}

func exactID(use string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			return fmt.Errorf("%s needs exactly one tenant ID (see --help)", use)
		}
		return nil
	}
}
