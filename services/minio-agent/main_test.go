package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
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

// TestServiceEndToEnd runs minio-agent as a service against real NATS and
// MinIO: a provision command yields a provisioned reply whose sealed
// credential opens with the control plane's age identity and reaches the
// tenant's bucket; a foreign bucket yields provision_failed (conflict) and
// survives the compensating deprovision; a deprovision removes the tenant.
// Every message on the bus and every log line is then searched for the
// tenant secret and the root password.
func TestServiceEndToEnd(t *testing.T) {
	mi := testkit.StartMinIO(t)
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
		"MINIO_ENDPOINT":          mi.Endpoint,
		"MINIO_ROOT_USER":         mi.RootUser,
		"MINIO_ROOT_PASSWORD":     mi.RootPassword,
		"AGENT_ACK_WAIT":          "30s",
		"AGENT_RETRY_BASE_DELAY":  "100ms",
	})
	if err != nil {
		t.Fatal(err)
	}

	log, logs := capture.NewLogger(zap.DebugLevel)
	nc := ns.Connect(t)
	w := capture.Bus(t, nc)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
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
	send := func(tenant string, action events.Action) {
		t.Helper()
		now := time.Now().UTC()
		cmd := &events.StoreCommand{TenantID: tenant, Generation: 1, SagaID: "saga-" + tenant, Store: events.StoreMinIO,
			Action: action, IssuedAt: now, Deadline: now.Add(30 * time.Second)}
		data, _ := json.Marshal(cmd)
		msg := nats.NewMsg(events.CommandSubject(events.StoreMinIO, action))
		msg.Data = data
		msg.Header.Set(events.HeaderMsgID, events.CommandMsgID(cmd))
		for { // the stream appears once the service has ensured the topology
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := js.PublishMsg(pctx, msg)
			cancel()
			if err == nil {
				return
			}
			t.Logf("publish %s: %v", action, err)
			if ctx.Err() != nil {
				t.Fatalf("publish %s: %v\n%s", action, err, logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
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
			if res.Outcome != want || m.Subject != events.EventSubject(events.StoreMinIO, want) {
				t.Fatalf("reply %s on %s: %s %s, want %s", res.Outcome, m.Subject, res.Reason, res.Error, want)
			}
			return res
		}
	}

	// Provision.
	tenant := events.MustTenantID("e2e-acme")
	send(tenant.String(), events.ActionProvision)
	res := await(tenant.String(), events.OutcomeProvisioned)
	if res.Verification == nil || !res.Verification.Passed || len(res.Verification.Checks) < 4 {
		t.Fatalf("verification: %+v", res.Verification)
	}
	plain, err := secret.Open(res.Credential, identity)
	if err != nil {
		t.Fatal(err)
	}
	var cred struct {
		Endpoint  string `json:"endpoint"`
		Secure    bool   `json:"secure"`
		Bucket    string `json:"bucket"`
		AccessKey string `json:"access_key"`
		SecretKey string `json:"secret_key"`
	}
	if err := json.Unmarshal(plain, &cred); err != nil {
		t.Fatal(err)
	}
	if cred.Endpoint != mi.Endpoint || cred.Secure || cred.Bucket != tenant.MinIOBucket() || cred.AccessKey != tenant.MinIOUser() || len(cred.SecretKey) != 43 {
		t.Fatalf("sealed credential: endpoint=%s secure=%v bucket=%s access_key=%s secret length %d", cred.Endpoint, cred.Secure, cred.Bucket, cred.AccessKey, len(cred.SecretKey))
	}
	tc, err := minio.New(cred.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(cred.AccessKey, cred.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tc.PutObject(ctx, cred.Bucket, "hello.txt", strings.NewReader("hi"), 2, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("the sealed credential does not write to its bucket: %v", err)
	}

	// A foreign bucket: provision_failed (conflict); the rollback leaves it.
	foreign := events.MustTenantID("e2e-foreign")
	root, err := minio.New(mi.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(mi.RootUser, mi.RootPassword, "")})
	if err != nil {
		t.Fatal(err)
	}
	if err := root.MakeBucket(ctx, foreign.MinIOBucket(), minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	send(foreign.String(), events.ActionProvision)
	if res := await(foreign.String(), events.OutcomeProvisionFailed); res.Reason != events.ReasonConflict {
		t.Errorf("foreign bucket: reason %q (%s), want conflict", res.Reason, res.Error)
	}
	send(foreign.String(), events.ActionDeprovision)
	await(foreign.String(), events.OutcomeDeprovisioned)
	if ok, err := root.BucketExists(ctx, foreign.MinIOBucket()); err != nil || !ok {
		t.Errorf("foreign bucket gone after deprovision: %v %v", ok, err)
	}

	// Deprovision.
	send(tenant.String(), events.ActionDeprovision)
	await(tenant.String(), events.OutcomeDeprovisioned)
	if ok, err := root.BucketExists(ctx, tenant.MinIOBucket()); err != nil || ok {
		t.Errorf("bucket still there after deprovision: %v %v", ok, err)
	}

	// Nothing secret on the bus or in the logs.
	stop()
	if err := <-done; err != nil {
		t.Errorf("service: %v", err)
	}
	done <- nil // for the deferred wait
	logText, wireText := logs.String(), w.Text()
	if !strings.Contains(logText, "e2e-acme") || !strings.Contains(wireText, "store.evt.minio.provisioned") {
		t.Fatalf("the capture is empty: %d bytes of logs, %d bytes of messages", len(logText), len(wireText))
	}
	for what, s := range map[string]string{"tenant secret": cred.SecretKey, "root password": mi.RootPassword} {
		if strings.Contains(logText, s) {
			t.Errorf("the logs contain the %s", what)
		}
		if strings.Contains(wireText, s) {
			t.Errorf("a NATS message contains the %s", what)
		}
	}
}

// TestMaxInFlightDefault: the MinIO agent runs 32 commands at once unless
// AGENT_MAX_IN_FLIGHT says otherwise.
func TestMaxInFlightDefault(t *testing.T) {
	identity, _ := age.GenerateX25519Identity()
	for _, tc := range []struct {
		env  map[string]string
		want int
	}{
		{map[string]string{}, 32},
		{map[string]string{"AGENT_MAX_IN_FLIGHT": "8"}, 8},
	} {
		environment := map[string]string{"CONTROL_PLANE_RECIPIENT": identity.Recipient().String(),
			"MINIO_ENDPOINT": "minio:9000", "MINIO_ROOT_USER": "admin", "MINIO_ROOT_PASSWORD": "root-secret"}
		maps.Copy(environment, tc.env)
		cfg, err := config.LoadFrom(defaults(), environment)
		if err != nil {
			t.Fatal(err)
		}
		cfg = withStoreDefaults(cfg, func(k string) (string, bool) { v, ok := environment[k]; return v, ok })
		if cfg.Agent.MaxInFlight != tc.want {
			t.Errorf("with %v: AGENT_MAX_IN_FLIGHT %d, want %d", tc.env, cfg.Agent.MaxInFlight, tc.want)
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("with %v: %v", tc.env, err)
		}
	}
}

// TestConfigFromEnvironment: every variable is read, and all problems are
// reported at once.
func TestConfigFromEnvironment(t *testing.T) {
	identity, _ := age.GenerateX25519Identity()
	cfg, err := config.LoadFrom(defaults(), map[string]string{
		"CONTROL_PLANE_RECIPIENT": identity.Recipient().String(),
		"MINIO_ENDPOINT":          "minio:9000",
		"MINIO_ROOT_USER":         "admin",
		"MINIO_ROOT_PASSWORD":     "root-secret",
		"MINIO_SECURE":            "true",
		"MINIO_PUBLIC_ENDPOINT":   "s3.example.com:443",
		"MINIO_BUCKET_QUOTA":      "10GiB",
	})
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.MinIO
	if m.Endpoint != "minio:9000" || m.RootUser != "admin" || m.RootPassword.Reveal() != "root-secret" || !m.Secure ||
		m.PublicEndpoint != "s3.example.com:443" || m.BucketQuota != 10<<30 {
		t.Errorf("minio config: %+v", m)
	}
	if cfg.HTTPAddr != "127.0.0.1:9181" {
		t.Errorf("HTTP_ADDR default %s", cfg.HTTPAddr)
	}
	if s := fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg); strings.Contains(s, "root-secret") {
		t.Error("formatting the configuration reveals MINIO_ROOT_PASSWORD")
	}

	_, err = config.LoadFrom(defaults(), map[string]string{
		"MINIO_ENDPOINT":        "http://minio:9000",
		"MINIO_PUBLIC_ENDPOINT": "nohost",
		"MINIO_PUBLIC_SECURE":   "maybe",
		"MINIO_BUCKET_QUOTA":    "lots",
	})
	for _, v := range []string{"CONTROL_PLANE_RECIPIENT", "MINIO_ENDPOINT", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MINIO_PUBLIC_ENDPOINT", "MINIO_PUBLIC_SECURE", "MINIO_BUCKET_QUOTA"} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("error does not name %s: %v", v, err)
		}
	}
}
