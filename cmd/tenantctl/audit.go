package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/auditlog"
	"github.com/tenantprov/tenantprov/pkg/events"
)

func newAuditCmd(g *globals) *cobra.Command {
	var (
		tenant, typ, dbURL string
		verify             bool
		limit              int
		since              time.Duration
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List the audit trail, or verify its hash chain",
		Long: `audit reads the audit trail the audit sink keeps in PostgreSQL
(AUDIT_PG_URL, or --db), newest first.

With --verify it walks the whole hash chain from the first row and reports
the first row that was changed, removed or forged (exit 1), or the head it
verified (exit 0): record the printed head somewhere else now and then — a
chain cannot by itself reveal rows removed from its end.`,
		Example: "  tenantctl audit --tenant acme\n  tenantctl audit --type TENANT_PROVISIONED --since 24h\n  tenantctl audit --verify",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dbURL == "" {
				return fail(exitUsage, "no audit database: set AUDIT_PG_URL (make up writes it to .dev/env) or pass --db")
			}
			if tenant != "" {
				if _, err := events.ParseTenantID(tenant); err != nil {
					return fail(exitUsage, "--tenant: %v", err)
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			conn, err := pgx.Connect(ctx, dbURL)
			if err != nil {
				// pgx errors can quote the connection string; say only where.
				return fail(exitUnavailable, "connect to the audit database: %s", pgErrorText(err))
			}
			defer conn.Close(context.WithoutCancel(ctx))
			if verify {
				return g.verifyAudit(ctx, conn)
			}
			f := auditlog.Filter{TenantID: tenant, Type: events.AuditType(typ), Limit: limit}
			if since > 0 {
				f.Since = time.Now().Add(-since)
			}
			page, err := auditlog.List(ctx, conn, f)
			if err != nil {
				return fail(exitFailed, "list audit events: %v", err)
			}
			if g.json {
				return g.printJSON(page.Records)
			}
			tw := tabwriter.NewWriter(g.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tOCCURRED\tTYPE\tTENANT\tGEN\tSTORE\tACTOR\tDETAILS")
			for _, r := range page.Records {
				details := string(r.Details)
				if len(details) > 120 {
					details = details[:117] + "..."
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Seq, r.OccurredAt.Format(time.RFC3339), r.Type, r.TenantID, r.Generation, dash(string(r.Store)), r.Actor, details)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.Next != 0 {
				fmt.Fprintf(g.stderr, "(more: raise --limit, or narrow with --tenant/--type/--since)\n")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "only events of this tenant")
	cmd.Flags().StringVar(&typ, "type", "", "only events of this type, e.g. TENANT_PROVISIONED")
	cmd.Flags().DurationVar(&since, "since", 0, "only events of the last duration, e.g. 24h")
	cmd.Flags().IntVar(&limit, "limit", 50, "how many events to show")
	cmd.Flags().BoolVar(&verify, "verify", false, "walk the hash chain and report the first broken row")
	cmd.Flags().StringVar(&dbURL, "db", os.Getenv("AUDIT_PG_URL"), "audit database URL (env AUDIT_PG_URL)")
	return cmd
}

func (g *globals) verifyAudit(ctx context.Context, conn *pgx.Conn) error {
	rep, err := auditlog.Verify(ctx, conn)
	if err != nil {
		return fail(exitFailed, "verify: %v", err)
	}
	if g.json {
		if err := g.printJSON(rep); err != nil {
			return err
		}
	}
	if rep.Break != nil {
		return fail(exitFailed, "audit chain BROKEN at seq %d (event %s): %s — %s", rep.Break.Seq, rep.Break.EventID, rep.Break.Problem, rep.Break.Detail)
	}
	if !g.json {
		fmt.Fprintf(g.stdout, "audit chain intact: %d rows; head seq %d hash %s\n", rep.Rows, rep.HeadSeq, hex.EncodeToString(rep.HeadHash))
	}
	return nil
}

// pgErrorText is a connection error fit to print: pgx masks the password of
// a URL it quotes, and the sanitiser removes anything else secret-shaped.
func pgErrorText(err error) string { return agent.SanitizeText(err.Error()) }
