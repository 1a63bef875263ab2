package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/tenantprov/tenantprov/pkg/busauth"
)

func newBusCmd(g *globals) *cobra.Command {
	bus := &cobra.Command{Use: "bus", Short: "Manage the NATS identities of the authenticated bus"}
	var dir string
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create the bus authority and one creds file per role",
		Long: `bus init makes --dir the bus authority of one deployment (DESIGN.md §11):

  keys/            operator, account and account signing keys (0600; keep them
                   where identities are issued, never on the NATS host)
  auth.conf        the nats-server configuration that trusts them
                   (nats-server -c auth.conf, or include it)
  creds/<role>.creds  one identity per role: orchestrator, minio-agent, pg-agent,
                   qdrant-agent, redis-agent, audit-sink, operator, requester,
                   observer. Give each service its own as NATS_CREDS.

Existing keys are kept; the creds files are issued again (earlier ones stay
valid), so permission changes reach the next start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := busauth.Init(dir); err != nil {
				return fail(exitFailed, "bus init: %v", err)
			}
			res := map[string]string{"server_config": filepath.Join(dir, busauth.ServerConfigFile), "creds_dir": filepath.Join(dir, "creds")}
			return g.emit(res, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "nats-server config: %s\ncreds:              %s\n", res["server_config"], res["creds_dir"])
				return err
			})
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", envOr("TENANTPROV_BUS_DIR", ".bus"), "authority directory (env TENANTPROV_BUS_DIR)")

	var name, out string
	var ttl time.Duration
	var force bool
	issueCmd := &cobra.Command{
		Use:   "issue ROLE",
		Short: "Issue a new identity (creds file) for a role, e.g. an upstream system's requester",
		Long: `bus issue writes a new creds file for ROLE, signed by the authority in --dir.
The running nats-server accepts it at once: no configuration change, no
restart. An upstream system (sign-up, billing) gets a requester:

  tenantctl bus issue requester --name requester-billing --out billing.creds

and publishes with it, e.g. nats --creds billing.creds pub tenant.requested
'{"tenant_id":"acme"}'. A requester may publish tenant.requested and
tenant.<verb>.requested only, and read nothing (requesters live in their
own NATS account, which imports the request subjects and nothing else).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			role, err := busauth.ParseRole(args[0])
			if err != nil {
				return fail(exitUsage, "%v", err)
			}
			a, err := busauth.LoadAuthority(dir)
			if err != nil {
				return fail(exitFailed, "bus issue: %v", err)
			}
			if name == "" {
				name = string(role)
			}
			if out == "" {
				out = name + ".creds"
			}
			creds, err := a.Issue(role, name, ttl)
			if err != nil {
				return fail(exitFailed, "bus issue: %v", err)
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			f, err := os.OpenFile(out, flags, 0o600)
			if errors.Is(err, os.ErrExist) {
				return fail(exitFailed, "%s exists; use --force to replace it", out)
			}
			if err != nil {
				return fail(exitFailed, "bus issue: %v", err)
			}
			if err := f.Chmod(0o600); err != nil {
				f.Close()
				return fail(exitFailed, "bus issue: %v", err)
			}
			if _, err := f.Write(creds); err != nil {
				f.Close()
				return fail(exitFailed, "bus issue: %v", err)
			}
			if err := f.Close(); err != nil {
				return fail(exitFailed, "bus issue: %v", err)
			}
			return g.emit(map[string]string{"creds_file": out, "identity": name, "role": string(role)}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s: identity %q, role %s\n", out, name, role)
				return err
			})
		},
	}
	issueCmd.Flags().StringVar(&dir, "dir", envOr("TENANTPROV_BUS_DIR", ".bus"), "authority directory (env TENANTPROV_BUS_DIR)")
	issueCmd.Flags().StringVar(&name, "name", "", "identity name (default: the role)")
	issueCmd.Flags().StringVar(&out, "out", "", "creds file to write, mode 0600 (default: <name>.creds)")
	issueCmd.Flags().DurationVar(&ttl, "ttl", 0, "validity (0: no expiry)")
	issueCmd.Flags().BoolVar(&force, "force", false, "replace an existing --out file")
	bus.AddCommand(initCmd, issueCmd)
	return bus
}
