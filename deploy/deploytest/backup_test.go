package deploytest

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

// The backup and restore of docs/PRODUCTION.md §6–§7, as written there,
// with the pinned nats CLI on a 3-node cluster: the registry and the sealed
// secrets survive losing their streams, and come back at R3.
func TestProductionGuideBackupRestore(t *testing.T) {
	natsCLI := testkit.RequireBinary(t, "nats", "make tools")
	cluster := testkit.StartNATSCluster(t, 3)
	nc := cluster.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := (events.Topology{Replicas: 3}).Ensure(ctx, js); err != nil {
		t.Fatalf("ensure topology: %v", err)
	}
	kv, err := js.KeyValue(ctx, events.KVTenants)
	if err != nil {
		t.Fatal(err)
	}
	record := `{"tenant_id":"acme","state":"active","generation":1}`
	if _, err := kv.PutString(ctx, "acme", record); err != nil {
		t.Fatal(err)
	}
	obj, err := js.ObjectStore(ctx, events.ObjectStoreSecrets)
	if err != nil {
		t.Fatal(err)
	}
	sealed := "tenant_id: acme\nsops: {}\n"
	if _, err := obj.PutString(ctx, "acme.sops.yaml", sealed); err != nil {
		t.Fatal(err)
	}

	streams := []string{"KV_" + events.KVTenants, "OBJ_" + events.ObjectStoreSecrets}
	backup := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, natsCLI, append([]string{"-s", cluster.URLs()}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("nats %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, s := range streams {
		run("backup", "stream", s, filepath.Join(backup, s), "--no-progress")
	}
	for _, s := range streams {
		run("stream", "rm", "-f", s)
	}
	if _, err := kv.Get(ctx, "acme"); err == nil {
		t.Fatal("the registry still answers after its stream was removed; the test proves nothing")
	}
	for _, s := range streams {
		run("backup", "restore", "stream", filepath.Join(backup, s), "--replicas", "3", "--no-progress")
	}

	kv, err = js.KeyValue(ctx, events.KVTenants)
	if err != nil {
		t.Fatalf("registry after restore: %v", err)
	}
	e, err := kv.Get(ctx, "acme")
	if err != nil || string(e.Value()) != record {
		t.Fatalf("registry record after restore: %v %q, want %q", err, e, record)
	}
	obj, err = js.ObjectStore(ctx, events.ObjectStoreSecrets)
	if err != nil {
		t.Fatalf("secrets store after restore: %v", err)
	}
	got, err := obj.GetString(ctx, "acme.sops.yaml")
	if err != nil || got != sealed {
		t.Fatalf("sealed secrets after restore: %v %q, want %q", err, got, sealed)
	}
	for _, s := range streams {
		st, err := js.Stream(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.CachedInfo().Config.Replicas; r != 3 {
			t.Errorf("%s restored at R%d, want R3", s, r)
		}
	}
}
