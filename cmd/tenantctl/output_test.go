package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/tenantprov/tenantprov/pkg/auditlog"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

// decodeDoc decodes out as exactly one JSON document.
func decodeDoc(t *testing.T, what, out string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: stdout is not JSON: %v\n%s", what, err, out)
	}
	if dec.More() {
		t.Fatalf("%s: more than one JSON document:\n%s", what, out)
	}
}

// hasFields fails unless the JSON object out has every field.
func hasFields(t *testing.T, what, out string, fields ...string) map[string]any {
	t.Helper()
	var m map[string]any
	decodeDoc(t, what, out, &m)
	for _, f := range fields {
		if _, ok := m[f]; !ok {
			t.Errorf("%s: no %q in %s", what, f, out)
		}
	}
	return m
}

// jsonError decodes stderr as the one JSON error line of a failed command.
func jsonError(t *testing.T, what, stderr string) errorDoc {
	t.Helper()
	var e errorDoc
	decodeDoc(t, what+" (stderr)", stderr, &e)
	if e.Error == "" || e.Code == 0 || e.Kind == "" {
		t.Errorf("%s: error document lacks error, code or kind: %s", what, stderr)
	}
	return e
}

// TestOutputJSON runs every command with -o json against a real NATS
// server: stdout is one JSON document with the expected fields (JSON lines
// for --wait), errors are one JSON document on stderr with the exit code
// and its kind, and secrets get keeps its formats. watch is TestWatch; audit
// is TestAuditOutputJSON.
func TestOutputJSON(t *testing.T) {
	n := testkit.StartNATS(t)
	b := newWatchBus(t, n.Connect(t))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	nats := []string{"--nats-url", n.URL}
	ok := func(t *testing.T, args ...string) string {
		t.Helper()
		code, out, errOut := tenantctl(t, append(args, nats...)...)
		if code != exitOK {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errOut)
		}
		if errOut != "" {
			t.Errorf("%v: stderr %q", args, errOut)
		}
		return out
	}

	t.Run("keys init", func(t *testing.T) {
		out := ok(t, "keys", "init", "-o", "json", "--dir", filepath.Join(t.TempDir(), "keys"))
		hasFields(t, "keys init", out, "control-plane_identity_file", "control-plane_recipient", "operator_identity_file", "operator_recipient")
		if strings.Contains(out, "AGE-SECRET-KEY") {
			t.Errorf("keys init printed a private key:\n%s", out)
		}
	})
	t.Run("bus init and issue", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "bus")
		hasFields(t, "bus init", ok(t, "bus", "init", "-o", "json", "--dir", dir), "server_config", "creds_dir")
		m := hasFields(t, "bus issue", ok(t, "bus", "issue", "requester", "--output", "json", "--dir", dir, "--out", filepath.Join(t.TempDir(), "r.creds")),
			"creds_file", "identity", "role")
		if m["role"] != "requester" {
			t.Errorf("bus issue role %v", m["role"])
		}
	})
	t.Run("provision and deprovision", func(t *testing.T) {
		for _, c := range []struct{ cmd, subject string }{{"provision", events.SubjectTenantRequested}, {"deprovision", events.SubjectTenantDeprovisionRequested}} {
			var ack requestAck
			decodeDoc(t, c.cmd, ok(t, c.cmd, "acme", "-o", "json"), &ack)
			if ack.Subject != c.subject || ack.TenantID != "acme" || ack.Stream != events.StreamTenants || ack.Sequence == 0 {
				t.Errorf("%s: %+v", c.cmd, ack)
			}
		}
	})

	// acme: active, with sealed secrets for the operator key.
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "operator.agekey")
	if err := os.WriteFile(keyFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sealed := sealForTest(t, []byte("tenant_id: acme\ngeneration: 1\npostgres:\n  password: pw-acme\n"), id.Recipient().String())
	obj, err := b.js.ObjectStore(ctx, events.ObjectStoreSecrets)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obj.PutBytes(ctx, "acme.sops.yaml", sealed); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(sealed)
	acme := record("acme", 1, events.TenantActive, map[events.Store]*events.StoreStatus{
		events.StorePostgres: {State: events.StoreProvisioned, Verified: true, DurationMS: 42, Resources: map[string]string{"database": "tenant_acme"}}})
	acme.Announced = events.TenantActive
	acme.Secrets = &events.SecretsRef{Bucket: events.ObjectStoreSecrets, Object: "acme.sops.yaml", SHA256: hex.EncodeToString(sum[:])}
	b.put(t, acme)

	t.Run("status", func(t *testing.T) {
		m := hasFields(t, "status", ok(t, "status", "acme", "-o", "json"), "tenant_id", "state", "generation", "stores", "revision", "secrets")
		if m["state"] != "active" || m["revision"].(float64) < 1 {
			t.Errorf("status: %v", m)
		}
	})
	t.Run("list", func(t *testing.T) {
		var list []map[string]any
		decodeDoc(t, "list", ok(t, "list", "-o", "json"), &list)
		if len(list) != 1 || list[0]["tenant_id"] != "acme" || list[0]["state"] != "active" {
			t.Errorf("list: %v", list)
		}
		// The older --json still works.
		decodeDoc(t, "list --json", ok(t, "list", "--json"), &list)
	})
	t.Run("secrets get", func(t *testing.T) {
		// -o json: the file as JSON (the default --format becomes json).
		var file struct {
			TenantID string            `json:"tenant_id"`
			Postgres map[string]string `json:"postgres"`
		}
		decodeDoc(t, "secrets get", ok(t, "secrets", "get", "acme", "-o", "json", "--identity", keyFile), &file)
		if file.TenantID != "acme" || file.Postgres["password"] != "pw-acme" {
			t.Errorf("secrets get -o json: %+v", file)
		}
		// An explicit --format wins: the output is the file itself.
		if out := ok(t, "secrets", "get", "acme", "-o", "json", "--format", "env", "--store", "postgres", "--identity", keyFile); out != "POSTGRES_PASSWORD='pw-acme'\n" {
			t.Errorf("secrets get -o json --format env: %q", out)
		}
		// An error is JSON on stderr and names no secret.
		code, out, errOut := tenantctl(t, append([]string{"secrets", "get", "acme", "-o", "json", "--store", "redis", "--identity", keyFile}, nats...)...)
		if e := jsonError(t, "secrets get --store redis", errOut); code != exitNotFound || e.Code != exitNotFound || e.Kind != "not_found" {
			t.Errorf("secrets get of a missing section: exit %d, %+v", code, e)
		}
		if out != "" || strings.Contains(errOut, "pw-acme") {
			t.Errorf("a failed secrets get printed:\n%s%s", out, errOut)
		}
	})
	t.Run("provision --wait", func(t *testing.T) {
		out := ok(t, "provision", "acme", "--wait", "-o", "json", "--timeout", "60s")
		evs := jsonLines(t, out)
		last := evs[len(evs)-1]
		if last.Kind != eventResult || last.State != "active" || last.Record == nil || last.Record.TenantID != "acme" {
			t.Errorf("last line of --wait: %+v\n%s", last, out)
		}
	})
	t.Run("provision --wait of a rollback", func(t *testing.T) {
		b.put(t, started("beta"))
		w := startTenantctl(t, append([]string{"provision", "beta", "--wait", "-o", "json", "--timeout", "60s"}, nats...)...)
		w.waitFor(t, `"state":"pending"`)
		rolled := record("beta", 1, events.TenantRollingBack, map[events.Store]*events.StoreStatus{
			events.StorePostgres: {State: events.StoreFailed, Attempt: 1, Error: "connection refused"}})
		b.put(t, rolled)
		failed := record("beta", 1, events.TenantFailed, rolled.Stores)
		failed.Announced, failed.Reason = events.TenantFailed, "postgres failed"
		b.put(t, failed)
		w.waitFor(t, `"kind":"result"`)
		code := w.stop(t)
		evs := jsonLines(t, w.out.String())
		if last := evs[len(evs)-1]; code != exitFailed || last.State != "failed" || last.Reason != "postgres failed" {
			t.Errorf("rollback: exit %d, last line %+v", code, last)
		}
		var sawStore bool
		for _, e := range evs {
			sawStore = sawStore || (e.Kind == eventStore && e.State == "failed" && e.Error == "connection refused")
		}
		if !sawStore {
			t.Errorf("no line for postgres failing:\n%s", w.out.String())
		}
		if e := jsonError(t, "rollback", w.err.String()); e.Kind != "failed" || !strings.Contains(e.Error, "rolled back") {
			t.Errorf("rollback error: %+v", e)
		}
	})
	t.Run("doctor", func(t *testing.T) {
		// No agent answers: a report all the same, and exit 1.
		code, out, errOut := tenantctl(t, append([]string{"doctor", "-o", "json", "--store-timeout", "1s"}, nats...)...)
		m := hasFields(t, "doctor", out, "ok", "findings", "counts", "tenants", "unanswered")
		if code != exitFailed || m["ok"] != false {
			t.Errorf("doctor without agents: exit %d, %v", code, m)
		}
		if e := jsonError(t, "doctor", errOut); e.Code != exitFailed {
			t.Errorf("doctor error: %+v", e)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			code int
			kind string
		}{
			{append([]string{"status", "ghost"}, nats...), exitNotFound, "not_found"},
			{[]string{"provision", "Bad_ID"}, exitUsage, "usage"},
			{[]string{"watch", "a1", "b2"}, exitUsage, "usage"},
			{[]string{"status", "acme", "--nats-url", "nats://127.0.0.1:1"}, exitUnavailable, "unavailable"},
			// Before cobra reads the flags: still JSON.
			{[]string{"nonsense"}, exitUsage, "usage"},
			{[]string{"status", "--bogus"}, exitUsage, "usage"},
		} {
			code, out, errOut := tenantctl(t, append([]string{"-o", "json"}, c.args...)...)
			e := jsonError(t, strings.Join(c.args, " "), errOut)
			if code != c.code || e.Code != c.code || e.Kind != c.kind || out != "" {
				t.Errorf("%v: exit %d, stdout %q, error %+v; want exit %d kind %s", c.args, code, out, e, c.code, c.kind)
			}
		}
		if code, _, errOut := tenantctl(t, "list", "--output", "yaml"); code != exitUsage || !strings.Contains(errOut, "want text or json") {
			t.Errorf("--output yaml: exit %d %s", code, errOut)
		}
	})
}

// TestAuditOutputJSON: audit -o json lists records with snake_case fields
// (hashes in hex), and audit --verify -o json reports the chain and its
// anchors; a broken chain is still a report on stdout, with a JSON error on
// stderr and exit 1.
func TestAuditOutputJSON(t *testing.T) {
	env := startAuditEnv(t)
	l := env.newLog(t)
	l.appendAndAnchor(t, 0, 3)
	t.Setenv("AUDIT_PG_URL", l.readerURL)

	code, out, errOut := tenantctl(t, "audit", "-o", "json", "--tenant", "acme")
	if code != exitOK {
		t.Fatalf("audit -o json: exit %d\n%s", code, errOut)
	}
	var rows []map[string]any
	decodeDoc(t, "audit", out, &rows)
	if len(rows) != 3 {
		t.Fatalf("audit -o json: %d rows, want 3\n%s", len(rows), out)
	}
	for _, f := range []string{"seq", "event_id", "type", "tenant_id", "generation", "store", "actor", "occurred_at", "details", "prev_hash", "hash", "recorded_at"} {
		if _, ok := rows[0][f]; !ok {
			t.Errorf("audit row lacks %q: %v", f, rows[0])
		}
	}
	if h, _ := rows[0]["hash"].(string); len(h) != 64 {
		t.Errorf("hash %q: want 64 hex digits", rows[0]["hash"])
	}
	code, out, _ = tenantctl(t, "audit", "-o", "json", "--tenant", "nobody")
	if strings.TrimSpace(out) != "[]" || code != exitOK {
		t.Errorf("audit of a tenant without events: exit %d %q, want []", code, out)
	}

	code, out, errOut = tenantctl(t, "audit", "--verify", "-o", "json", "--nats-url", l.natsURL)
	if code != exitOK {
		t.Fatalf("audit --verify -o json: exit %d\n%s%s", code, out, errOut)
	}
	var v struct {
		OK    bool `json:"ok"`
		Chain struct {
			Rows     int64  `json:"rows"`
			HeadSeq  int64  `json:"head_seq"`
			HeadHash string `json:"head_hash"`
		} `json:"chain"`
		Anchors *struct {
			Checked int `json:"checked"`
			Latest  *struct {
				Seq int64 `json:"seq"`
			} `json:"latest"`
		} `json:"anchors"`
	}
	decodeDoc(t, "audit --verify", out, &v)
	if !v.OK || v.Chain.Rows != 3 || v.Chain.HeadSeq != 3 || len(v.Chain.HeadHash) != 64 || v.Anchors == nil || v.Anchors.Checked == 0 || v.Anchors.Latest == nil || v.Anchors.Latest.Seq != 3 {
		t.Errorf("audit --verify -o json:\n%s", out)
	}

	tamper(t, l.ownerURL, `UPDATE `+auditlog.Table+` SET actor = 'mallory' WHERE seq = 2`)
	code, out, errOut = tenantctl(t, "audit", "--verify", "-o", "json", "--nats-url", l.natsURL)
	var broken struct {
		OK    bool `json:"ok"`
		Chain struct {
			Break *struct {
				Seq int64 `json:"seq"`
			} `json:"break"`
		} `json:"chain"`
	}
	decodeDoc(t, "audit --verify of a broken chain", out, &broken)
	if code != exitFailed || broken.OK || broken.Chain.Break == nil || broken.Chain.Break.Seq != 2 {
		t.Errorf("broken chain: exit %d\n%s", code, out)
	}
	if e := jsonError(t, "broken chain", errOut); e.Kind != "failed" || !strings.Contains(e.Error, "BROKEN") {
		t.Errorf("broken chain error: %+v", e)
	}
}
