package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

func tenantctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code = run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageAndExitCodes(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, exitOK, "Exit codes"},
		{[]string{"provision"}, exitUsage, "exactly one tenant ID"},
		{[]string{"provision", "Bad_ID"}, exitUsage, "invalid tenant id"},
		{[]string{"provision", "tenantprov-x"}, exitUsage, "reserved"},
		{[]string{"secrets", "get", "acme", "--store", "mysql"}, exitUsage, "unknown store"},
		{[]string{"secrets", "get", "acme", "--format", "xml"}, exitUsage, "want yaml, json or env"},
		{[]string{"audit", "--db", ""}, exitUsage, "AUDIT_PG_URL"},
		{[]string{"status", "acme", "--nats-url", "nats://127.0.0.1:1"}, exitUnavailable, "connect to NATS"},
		{[]string{"nonsense"}, exitUsage, "unknown command"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, out, errOut := tenantctl(t, c.args...)
			if code != c.code || !strings.Contains(out+errOut, c.want) {
				t.Fatalf("exit %d (want %d); output lacks %q:\n%s%s", code, c.code, c.want, out, errOut)
			}
		})
	}
}

func TestKeysInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	code, out, errOut := tenantctl(t, "keys", "init", "--dir", dir, "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got map[string]string
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"control-plane", "operator"} {
		st, err := os.Stat(filepath.Join(dir, name+".agekey"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s key file: %v, mode %v", name, err, st.Mode())
		}
		if !strings.HasPrefix(got[name+"_recipient"], "age1") {
			t.Fatalf("%s recipient %q", name, got[name+"_recipient"])
		}
	}
	// A second run keeps the keys (a replaced control-plane key could not
	// open anything sealed before).
	_, out2, _ := tenantctl(t, "keys", "init", "--dir", dir, "--json")
	if out2 != out {
		t.Fatalf("keys init replaced existing keys:\n%s\n%s", out, out2)
	}
}

func TestProvisionPublishesAndStatusReads(t *testing.T) {
	n := testkit.StartNATS(t)
	js, err := jetstream.New(n.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := (events.Topology{}).Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := tenantctl(t, "provision", "acme", "--label", "plan=pro", "--request-id", "r-1", "--nats-url", n.URL)
	if code != exitOK {
		t.Fatalf("provision exit %d: %s", code, errOut)
	}
	st, _ := js.Stream(ctx, events.StreamTenants)
	msg, err := st.GetLastMsgForSubject(ctx, events.SubjectTenantRequested)
	if err != nil {
		t.Fatal(err)
	}
	req, err := events.DecodeTenantRequested(msg.Data)
	if err != nil || req.TenantID != "acme" || req.RequestID != "r-1" || req.Labels["plan"] != "pro" || !strings.HasPrefix(req.RequestedBy, "tenantctl:") {
		t.Fatalf("published request %+v, %v", req, err)
	}

	if code, _, errOut := tenantctl(t, "status", "acme", "--nats-url", n.URL); code != exitNotFound {
		t.Fatalf("status of an unregistered tenant: exit %d (%s), want %d", code, errOut, exitNotFound)
	}
	kv, _ := js.KeyValue(ctx, events.KVTenants)
	now := time.Now().UTC()
	rec := &events.TenantRecord{TenantID: "acme", State: events.TenantActive, Generation: 1, SagaID: "acme-g1", CreatedAt: now, UpdatedAt: now,
		Stores: map[events.Store]*events.StoreStatus{events.StorePostgres: {State: events.StoreProvisioned, Verified: true, DurationMS: 42, Resources: map[string]string{"database": "tenant_acme"}}}}
	data, _ := events.Encode(rec)
	if _, err := kv.Put(ctx, "acme", data); err != nil {
		t.Fatal(err)
	}
	code, out, _ := tenantctl(t, "status", "acme", "--nats-url", n.URL)
	if code != exitOK || !strings.Contains(out, "active") || !strings.Contains(out, "database=tenant_acme") {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	code, out, _ = tenantctl(t, "list", "--json", "--nats-url", n.URL)
	var list []events.TenantRecord
	if code != exitOK || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].TenantID != "acme" {
		t.Fatalf("list: exit %d\n%s", code, out)
	}
	// --wait returns at once for a tenant that is already where asked.
	rec.Announced = events.TenantActive
	data, _ = events.Encode(rec)
	_, _ = kv.Put(ctx, "acme", data)
	if code, _, errOut := tenantctl(t, "provision", "acme", "--wait", "--nats-url", n.URL, "--timeout", "10s"); code != exitOK {
		t.Fatalf("provision --wait of an active tenant: exit %d %s", code, errOut)
	}
	if code, _, _ := tenantctl(t, "secrets", "get", "acme", "--nats-url", n.URL, "--identity", "/nonexistent"); code != exitNotFound {
		t.Fatalf("secrets of a tenant without sealed secrets: exit %d, want %d", code, exitNotFound)
	}
}
