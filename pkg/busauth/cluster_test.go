package busauth_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/busauth"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

// TestThreeNodeClusterWithAuth: the production topology (DESIGN.md §12) with
// the same authorization: R3 topology by the orchestrator, an agent's
// commands and results, and a forged result refused.
func TestThreeNodeClusterWithAuth(t *testing.T) {
	dir := t.TempDir()
	if _, err := busauth.Init(dir); err != nil {
		t.Fatal(err)
	}
	c := testkit.StartNATSCluster(t, 3, testkit.NATSConfigFile(filepath.Join(dir, busauth.ServerConfigFile)))
	conn := func(r busauth.Role) (*nats.Conn, jetstream.JetStream) {
		nc := c.Connect(t, nats.UserCredentials(busauth.CredsPath(dir, r)), nats.CustomInboxPrefix(r.InboxPrefix()))
		js, err := jetstream.New(nc)
		must(t, "jetstream", err)
		return nc, js
	}
	ctx := ctxT(t, 3*time.Minute)
	_, orch := conn(busauth.RoleOrchestrator)
	must(t, "orchestrator ensures the R3 topology", (events.Topology{Replicas: 3}).Ensure(ctx, orch))
	st, err := orch.Stream(ctx, events.StreamStoreCommands)
	must(t, "bind", err)
	if info, err := st.Info(ctx); err != nil || info.Config.Replicas != 3 {
		t.Fatalf("STORE_COMMANDS: %v, %v; want 3 replicas", info, err)
	}
	_, err = orch.Publish(ctx, events.CommandSubject(events.StorePostgres, events.ActionProvision), []byte(`{}`))
	must(t, "command", err)

	_, pg := conn(busauth.RolePGAgent)
	cons, err := pg.CreateOrUpdateConsumer(ctx, events.StreamStoreCommands, events.AgentConsumerConfig(events.StorePostgres, 30*time.Second, 8))
	must(t, "pg-agent consumer", err)
	m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	must(t, "pg-agent fetch", err)
	must(t, "pg-agent ack", m.DoubleAck(ctx))
	_, err = pg.Publish(ctx, events.EventSubject(events.StorePostgres, events.OutcomeProvisioned), []byte(`{}`))
	must(t, "pg-agent result", err)

	nc, minio := conn(busauth.RoleMinIOAgent)
	errs := make(chan error, 8)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = minio.Publish(pctx, events.EventSubject(events.StorePostgres, events.OutcomeProvisioned), []byte(`{}`))
	cancel()
	if err == nil {
		t.Fatal("minio-agent published a postgres result on the cluster")
	}
	select {
	case e := <-errs:
		t.Logf("refused: %v", e)
	case <-time.After(10 * time.Second):
		t.Fatal("no permissions violation for the forged result")
	}
	res, err := orch.Stream(ctx, events.StreamStoreEvents)
	must(t, "bind STORE_EVENTS", err)
	if info, err := res.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("STORE_EVENTS holds %v messages (%v), want only the postgres agent's", info, err)
	}
}
