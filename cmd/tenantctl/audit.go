package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"regexp"
	"strings"
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
		tenant, typ, dbURL, dbFile string
		verify, noAnchors          bool
		limit                      int
		since                      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List the audit trail, or verify its hash chain against its anchors",
		Long: `audit reads the audit trail the audit sink keeps in PostgreSQL, newest
first. Use the read-only audit URL (make up puts it in .dev/env as
AUDIT_PG_URL).

The database URL comes from, first found: --db-file <file>, AUDIT_PG_URL_FILE,
AUDIT_PG_URL, --db. A password never belongs on the command line (every
local user can read a process's arguments): --db with a password is
refused; leave the password out of the URL and let PostgreSQL's PGPASSFILE
(or ~/.pgpass) supply it, or put the whole URL in a 0600 file or in
AUDIT_PG_URL.

With --verify it walks the whole hash chain from the first row and compares
it with the chain heads the audit sink anchored outside the database (JetStream
KV bucket audit-anchors, read over NATS_URL with NATS_CREDS): it reports the
first row that was changed, removed or forged, an anchored head that is
missing (rows cut from the end) or whose hash differs (the chain was
recomputed), or the absence of any anchor — each with exit 1 — or the
verified head and the latest anchor (exit 0). Rows written after the latest
anchor (at most a few seconds' worth) cannot be vouched for yet.
--no-anchors checks the chain alone, which cannot reveal rows cut from its
end or a chain recomputed by whoever can disable the table's triggers.`,
		Example: "  tenantctl audit --tenant acme\n  tenantctl audit --type TENANT_PROVISIONED --since 24h\n  tenantctl audit --verify",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			url, err := auditURL(dbURL, cmd.Flags().Changed("db"), dbFile)
			if err != nil {
				return err
			}
			if tenant != "" {
				if _, err := events.ParseTenantID(tenant); err != nil {
					return fail(exitUsage, "--tenant: %v", err)
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			// Anchors first: each then names a row that existed before
			// the walk of the chain begins.
			var anchors []auditlog.Anchor
			if verify && !noAnchors {
				if anchors, err = g.readAnchors(ctx); err != nil {
					return err
				}
			}
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				// pgx errors can quote the connection string; say only where.
				return fail(exitUnavailable, "connect to the audit database: %s", pgErrorText(err))
			}
			defer conn.Close(context.WithoutCancel(ctx))
			if verify {
				return g.verifyAudit(ctx, conn, anchors, !noAnchors)
			}
			f := auditlog.Filter{TenantID: tenant, Type: events.AuditType(typ), Limit: limit}
			if since > 0 {
				f.Since = time.Now().Add(-since)
			}
			page, err := auditlog.List(ctx, conn, f)
			if err != nil {
				return fail(exitFailed, "list audit events: %v", err)
			}
			recs := page.Records
			if recs == nil {
				recs = []auditlog.Record{} // -o json: [] when there is none
			}
			return g.emit(auditRows(recs), func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "SEQ\tOCCURRED\tTYPE\tTENANT\tGEN\tSTORE\tACTOR\tDETAILS")
				for _, r := range recs {
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
			})
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "only events of this tenant")
	cmd.Flags().StringVar(&typ, "type", "", "only events of this type, e.g. TENANT_PROVISIONED")
	cmd.Flags().DurationVar(&since, "since", 0, "only events of the last duration, e.g. 24h")
	cmd.Flags().IntVar(&limit, "limit", 50, "how many events to show")
	cmd.Flags().BoolVar(&verify, "verify", false, "verify the hash chain and compare it with its anchors")
	cmd.Flags().BoolVar(&noAnchors, "no-anchors", false, "with --verify: check the chain alone, without NATS (weaker: see above)")
	cmd.Flags().StringVar(&dbURL, "db", "", "audit database URL WITHOUT a password (default: env AUDIT_PG_URL)")
	cmd.Flags().StringVar(&dbFile, "db-file", "", "file holding the audit database URL (default: env AUDIT_PG_URL_FILE)")
	return cmd
}

// auditURL picks the audit database URL: --db-file, AUDIT_PG_URL_FILE,
// AUDIT_PG_URL, then --db, which must not carry a password.
func auditURL(flag string, flagSet bool, file string) (string, error) {
	if flagSet && flag != "" {
		if hasPassword(flag) {
			return "", fail(exitUsage, "--db carries a password, and every local user can read a process's arguments: put the URL in AUDIT_PG_URL or a 0600 file (--db-file, AUDIT_PG_URL_FILE), or leave the password out and let PGPASSFILE (~/.pgpass) supply it")
		}
		return flag, nil
	}
	if file == "" {
		file = os.Getenv("AUDIT_PG_URL_FILE")
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fail(exitUsage, "read the audit database URL: %v", err)
		}
		if u := strings.TrimSpace(string(b)); u != "" {
			return u, nil
		}
		return "", fail(exitUsage, "%s is empty: it should hold the audit database URL", file)
	}
	if u := os.Getenv("AUDIT_PG_URL"); u != "" {
		return u, nil
	}
	return "", fail(exitUsage, "no audit database: set AUDIT_PG_URL (make up writes the read-only one to .dev/env), AUDIT_PG_URL_FILE or --db-file")
}

// hasPassword reports whether a PostgreSQL URL or keyword/value string
// holds a password.
func hasPassword(conn string) bool {
	if strings.HasPrefix(conn, "postgres://") || strings.HasPrefix(conn, "postgresql://") {
		u, err := neturl.Parse(conn)
		if err != nil {
			return true // unparseable: assume the worst, and never echo it
		}
		if _, ok := u.User.Password(); ok {
			return true
		}
		return u.Query().Has("password")
	}
	return kvPassword.MatchString(conn)
}

var kvPassword = regexp.MustCompile(`(^|\s)password\s*=`)

// readAnchors reads the anchored chain heads over NATS.
func (g *globals) readAnchors(ctx context.Context) ([]auditlog.Anchor, error) {
	c, err := g.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.close()
	kv, err := auditlog.OpenAnchors(ctx, c.js)
	if err != nil {
		return nil, fail(exitFailed, "audit anchors: %v: without them rows cut from the end of the chain, or a recomputed chain, go unnoticed (is the audit sink running? --no-anchors checks the chain alone)", err)
	}
	anchors, err := auditlog.ReadAnchors(ctx, kv)
	if errors.Is(err, auditlog.ErrAnchorMismatch) {
		return nil, fail(exitFailed, "audit anchors TAMPERED: %v", err)
	}
	if err != nil {
		return nil, fail(exitUnavailable, "audit anchors: %v", err)
	}
	return anchors, nil
}

func (g *globals) verifyAudit(ctx context.Context, conn *pgx.Conn, anchors []auditlog.Anchor, withAnchors bool) error {
	rep, err := auditlog.Verify(ctx, conn)
	if err != nil {
		return fail(exitFailed, "verify: %v", err)
	}
	out := auditVerification{Chain: newChainReport(rep)}
	switch {
	case rep.Break != nil:
		out.Problem = fmt.Sprintf("audit chain BROKEN at seq %d (event %s): %s — %s", rep.Break.Seq, rep.Break.EventID, rep.Break.Problem, rep.Break.Detail)
	case withAnchors:
		arep, err := auditlog.CheckAnchors(ctx, conn, anchors)
		if err != nil {
			return fail(exitFailed, "verify anchors: %v", err)
		}
		out.Anchors = newAnchorReport(arep)
		switch {
		case !arep.OK():
			var lines []string
			for _, m := range arep.Mismatches {
				lines = append(lines, m.Error())
			}
			out.Problem = fmt.Sprintf("audit chain TAMPERED: it verifies by itself, but %d of %d anchors kept outside the database contradict it:\n  %s",
				len(arep.Mismatches), arep.Checked, strings.Join(lines, "\n  "))
		case arep.Latest == nil && rep.Rows > 0:
			out.Problem = fmt.Sprintf("audit chain has %d rows but no anchor in %s: rows cut from its end, or a recomputed chain, cannot be detected (is the audit sink running and anchoring? wait a few seconds and retry)", rep.Rows, events.KVAuditAnchors)
		}
	}
	out.OK = out.Problem == ""
	if g.json {
		if err := g.printJSON(out); err != nil {
			return err
		}
	}
	if !out.OK {
		return fail(exitFailed, "%s", out.Problem)
	}
	if g.json {
		return nil
	}
	if rep.Rows == 0 {
		fmt.Fprintln(g.stdout, "audit chain empty: nothing recorded yet")
	} else {
		fmt.Fprintf(g.stdout, "audit chain intact: %d rows; head seq %d hash %s\n", rep.Rows, rep.HeadSeq, hex.EncodeToString(rep.HeadHash))
	}
	if a := out.Anchors; a != nil && a.Latest != nil {
		fmt.Fprintf(g.stdout, "anchors agree: %d checked; latest seq %d anchored %s by %s; %d newer rows not anchored yet\n",
			a.Checked, a.Latest.Seq, a.Latest.AnchoredAt.Format(time.RFC3339), a.Latest.AnchoredBy, a.Unanchored)
	} else if !withAnchors {
		fmt.Fprintln(g.stderr, "warning: anchors not checked (--no-anchors): rows cut from the end, or a recomputed chain, would go unnoticed")
	}
	return nil
}

// pgErrorText is a connection error fit to print: pgx masks the password of
// a URL it quotes, and the sanitiser removes anything else secret-shaped.
func pgErrorText(err error) string { return agent.SanitizeText(err.Error()) }
