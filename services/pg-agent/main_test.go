package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/capture"
)

// TestServiceEndToEnd runs pg-agent as a service against real NATS and
// PostgreSQL: a provision command yields a provisioned reply whose sealed
// credential opens with the control plane's age identity and logs in; a
// deprovision removes it; a foreign role yields provision_failed (conflict).
// Every message on the bus and every log line is then searched for the
// password, the tenant URL, the admin password and any SCRAM verifier.
func TestServiceEndToEnd(t *testing.T) {
	pg := testkit.StartPostgres(t)
	ns := testkit.StartNATS(t)
	identity, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := config.LoadFrom(defaults(), map[string]string{
		"NATS_URL":                ns.URL,
		"HTTP_ADDR":               "127.0.0.1:0",
		"LOG_LEVEL":               "debug",
		"CONTROL_PLANE_RECIPIENT": identity.Recipient().String(),
		"PG_ADMIN_URL":            pg.AdminURL(),
		"PG_SSLMODE":              "disable",
		"AGENT_ACK_WAIT":          "30s",
		"AGENT_RETRY_BASE_DELAY":  "100ms",
	})
	if err != nil {
		t.Fatal(err)
	}

	log, logs := capture.NewLogger(zap.DebugLevel)

	nc := ns.Connect(t)
	w := capture.Bus(t, nc)

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- service.RunWithLogger(runCtx, name, cfg.Config, log, work(cfg)) }()
	defer func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("service: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("service did not stop within 20s of cancellation")
		}
	}()

	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	send := func(tenant string, gen uint64, action events.Action) {
		t.Helper()
		now := time.Now().UTC()
		cmd := &events.StoreCommand{TenantID: tenant, Generation: gen, SagaID: "saga-" + tenant, Store: events.StorePostgres,
			Action: action, IssuedAt: now, Deadline: now.Add(30 * time.Second)}
		data, _ := json.Marshal(cmd)
		msg := nats.NewMsg(events.CommandSubject(events.StorePostgres, action))
		msg.Data = data
		msg.Header.Set(events.HeaderMsgID, events.CommandMsgID(cmd))
		// A JetStream publish before the stream exists would hang (the
		// ">" capture subscription counts as a responder), so each try is
		// short.
		for {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := js.PublishMsg(pctx, msg)
			cancel()
			if err == nil {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("publish %s: %v\n%s", action, err, logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Wait for the agent's consumer: the topology and the agent are up.
	for {
		if _, err := js.Consumer(ctx, events.StreamStoreCommands, events.AgentConsumer(events.StorePostgres)); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the agent's consumer never appeared:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	await := func(tenant string, want events.Outcome) *events.StoreResult {
		t.Helper()
		for {
			m, err := w.Next(ctx, "store.evt.")
			if err != nil {
				t.Fatalf("no %s reply for %s:\n%s", want, tenant, logs.String())
			}
			res, err := events.DecodeStoreResult(m.Data)
			if err != nil {
				t.Fatalf("reply on %s does not decode: %v", m.Subject, err)
			}
			if res.TenantID != tenant {
				continue
			}
			if res.Outcome != want || m.Subject != events.EventSubject(events.StorePostgres, want) {
				t.Fatalf("reply %s on %s: %s %s, want %s", res.Outcome, m.Subject, res.Reason, res.Error, want)
			}
			return res
		}
	}

	// Provision.
	tenant := events.MustTenantID("e2e-acme")
	send(tenant.String(), 1, events.ActionProvision)
	res := await(tenant.String(), events.OutcomeProvisioned)
	if res.Verification == nil || !res.Verification.Passed || len(res.Verification.Checks) < 4 {
		t.Fatalf("verification: %+v", res.Verification)
	}
	// Resource names are not secrets: they must reach the registry as they
	// are, even though the (secret) URL contains them.
	wantRes := map[string]string{"database": "tenant_e2e-acme", "role": "tenant_e2e-acme", "pg_hba": "hostssl tenant_e2e-acme tenant_e2e-acme 0.0.0.0/0 scram-sha-256"}
	for k, v := range wantRes {
		if res.Resources[k] != v {
			t.Errorf("resources[%s] = %q, want %q", k, res.Resources[k], v)
		}
	}
	plain, err := secret.Open(res.Credential, identity)
	if err != nil {
		t.Fatal(err)
	}
	var cred struct {
		Host     string `json:"host"`
		Port     int    `json:"port"`
		Database string `json:"database"`
		User     string `json:"user"`
		Password string `json:"password"`
		URL      string `json:"url"`
	}
	if err := json.Unmarshal(plain, &cred); err != nil {
		t.Fatal(err)
	}
	if cred.Host != pg.Host || cred.Port != pg.Port || cred.Database != tenant.PostgresDatabase() || cred.User != tenant.PostgresRole() || len(cred.Password) != 43 {
		t.Fatalf("sealed credential: host=%s port=%d db=%s user=%s password length %d", cred.Host, cred.Port, cred.Database, cred.User, len(cred.Password))
	}
	conn, err := pgx.Connect(ctx, cred.URL)
	if err != nil {
		t.Fatalf("the sealed URL does not log in: %v", errors.Unwrap(err))
	}
	conn.Close(ctx)

	// A foreign role: provision_failed, conflict.
	foreign := events.MustTenantID("e2e-foreign")
	admin, err := pgx.Connect(ctx, pg.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, `CREATE ROLE "tenant_e2e-foreign"`); err != nil {
		t.Fatal(err)
	}
	send(foreign.String(), 1, events.ActionProvision)
	if res := await(foreign.String(), events.OutcomeProvisionFailed); res.Reason != events.ReasonConflict {
		t.Errorf("foreign role: reason %q (%s), want conflict", res.Reason, res.Error)
	}

	// Deprovision.
	send(tenant.String(), 1, events.ActionDeprovision)
	await(tenant.String(), events.OutcomeDeprovisioned)
	var n int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname = $1", tenant.PostgresRole()).Scan(&n); err != nil || n != 0 {
		t.Errorf("role still there after deprovision: %d, %v", n, err)
	}

	// Nothing secret on the bus or in the logs.
	stop()
	if err := <-done; err != nil {
		t.Errorf("service: %v", err)
	}
	done <- nil // for the deferred wait
	logText, wireText := logs.String(), w.Text()
	if !strings.Contains(logText, "e2e-acme") || !strings.Contains(wireText, "store.evt.postgres.provisioned") {
		t.Fatalf("the capture is empty: %d bytes of logs, %d bytes of messages", len(logText), len(wireText))
	}
	for what, s := range map[string]string{"password": cred.Password, "url": cred.URL, "admin password": pg.AdminPassword, "a SCRAM verifier": "SCRAM-SHA-256$"} {
		if strings.Contains(logText, s) {
			t.Errorf("the logs contain the %s", what)
		}
		if strings.Contains(wireText, s) {
			t.Errorf("a NATS message contains the %s", what)
		}
	}
}

// TestConfigFromEnvironment: every variable is read, and all problems are
// reported at once.
func TestConfigFromEnvironment(t *testing.T) {
	identity, _ := age.GenerateX25519Identity()
	cfg, err := config.LoadFrom(defaults(), map[string]string{
		"CONTROL_PLANE_RECIPIENT": identity.Recipient().String(),
		"PG_ADMIN_URL":            "postgres://admin:pw@db:5432/postgres",
		"PG_PUBLIC_HOST":          "pg.example.com",
		"PG_PUBLIC_PORT":          "6432",
		"PG_CONNECTION_LIMIT":     "5",
		"PG_TENANT_CIDR":          "10.0.0.0/8",
		"PG_SSLMODE":              "verify-full",
	})
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Postgres
	if p.PublicHost != "pg.example.com" || p.PublicPort != 6432 || p.ConnectionLimit != 5 || p.TenantCIDR != "10.0.0.0/8" || p.SSLMode != "verify-full" {
		t.Errorf("postgres config: %+v", p)
	}
	if cfg.HTTPAddr != "127.0.0.1:9182" {
		t.Errorf("HTTP_ADDR default %s", cfg.HTTPAddr)
	}

	_, err = config.LoadFrom(defaults(), map[string]string{"PG_CONNECTION_LIMIT": "0"})
	for _, v := range []string{"CONTROL_PLANE_RECIPIENT", "PG_ADMIN_URL", "PG_CONNECTION_LIMIT"} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("error does not name %s: %v", v, err)
		}
	}
}
