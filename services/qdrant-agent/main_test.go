package main

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit"
)

// TestConfigLoadsEverySection: one Load reads and validates the service,
// agent and Qdrant settings, and reports their problems together.
func TestConfigLoadsEverySection(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadFrom(defaults(), map[string]string{
		"CONTROL_PLANE_RECIPIENT": id.Recipient().String(),
		"QDRANT_API_KEY":          "k",
		"QDRANT_HOST":             "qdrant.internal",
		"AGENT_MAX_IN_FLIGHT":     "4",
		"NATS_URL":                "nats://nats:4222",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Qdrant.Host != "qdrant.internal" || cfg.Qdrant.APIKey.Reveal() != "k" || cfg.Agent.MaxInFlight != 4 || cfg.NATSURL != "nats://nats:4222" || cfg.HTTPAddr != "127.0.0.1:9183" {
		t.Fatalf("loaded %+v", cfg)
	}

	_, err = config.LoadFrom(defaults(), map[string]string{"QDRANT_ISOLATION": "none", "LOG_LEVEL": "loud"})
	for _, v := range []string{"CONTROL_PLANE_RECIPIENT", "QDRANT_API_KEY", "QDRANT_ISOLATION", "LOG_LEVEL"} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("error does not name %s: %v", v, err)
		}
	}
}

// TestServiceProcessesCommands runs the whole service — NATS (embedded
// nats-server with JetStream), the agent runtime, the Qdrant store — and
// drives it with real store commands: provision answers provisioned with a
// sealed credential that works, deprovision answers deprovisioned and the
// credential stops working.
func TestServiceProcessesCommands(t *testing.T) {
	n := testkit.StartNATS(t)
	q := testkit.StartQdrant(t)
	t.Run("qdrant="+q.Kind, func(t *testing.T) {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range map[string]string{
			"NATS_URL": n.URL, "HTTP_ADDR": "127.0.0.1:0", "LOG_LEVEL": "warn",
			"CONTROL_PLANE_RECIPIENT": id.Recipient().String(),
			"QDRANT_HOST":             q.Host, "QDRANT_GRPC_PORT": strconv.Itoa(q.GRPCPort), "QDRANT_API_KEY": q.APIKey,
			"QDRANT_VECTOR_SIZE": "8",
		} {
			t.Setenv(k, v)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- run(ctx) }()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("service did not stop within 30s of cancellation")
			}
		})

		nc := n.Connect(t)
		replies, err := nc.SubscribeSync(events.EventSubject(events.StoreQdrant, "*"))
		if err != nil {
			t.Fatal(err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}

		res := roundTrip(t, js, replies, events.ActionProvision)
		if res.Outcome != events.OutcomeProvisioned || !res.Verification.Passed || res.IsolationMode != "jwt_rbac" || res.Resources["collection"] != "tenant_acme" {
			t.Fatalf("provision result: %+v", res)
		}
		if q.Standin() && !strings.Contains(strings.Join(res.Warnings, " "), "STAND-IN") {
			t.Errorf("record does not name the stand-in: %v", res.Warnings)
		}
		plain, err := secret.Open(res.Credential, id)
		if err != nil {
			t.Fatal(err)
		}
		var cred struct {
			Host       string `json:"host"`
			GRPCPort   int    `json:"grpc_port"`
			Collection string `json:"collection"`
			APIKey     string `json:"api_key"`
		}
		if err := json.Unmarshal(plain, &cred); err != nil {
			t.Fatal(err)
		}
		if cred.Host != q.Host || cred.GRPCPort != q.GRPCPort || cred.Collection != "tenant_acme" || strings.Count(cred.APIKey, ".") != 2 {
			t.Fatalf("sealed credential: host %q port %d collection %q", cred.Host, cred.GRPCPort, cred.Collection)
		}
		if err := tenantScroll(t, cred.Host, cred.GRPCPort, cred.APIKey, cred.Collection); err != nil {
			t.Fatalf("tenant token: %v", err)
		}

		res = roundTrip(t, js, replies, events.ActionDeprovision)
		if res.Outcome != events.OutcomeDeprovisioned {
			t.Fatalf("deprovision result: %+v", res)
		}
		if err := tenantScroll(t, cred.Host, cred.GRPCPort, cred.APIKey, cred.Collection); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("token after deprovision: %v, want Unauthenticated", err)
		}
	})
}

// roundTrip publishes one command for tenant acme (retrying until the
// service has created the streams) and returns the reply.
func roundTrip(t *testing.T, js jetstream.JetStream, replies *nats.Subscription, action events.Action) *events.StoreResult {
	t.Helper()
	now := time.Now()
	cmd := &events.StoreCommand{TenantID: "acme", Generation: 1, SagaID: "saga-e2e", Store: events.StoreQdrant, Action: action, IssuedAt: now, Deadline: now.Add(time.Minute)}
	data, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := js.Publish(ctx, events.CommandSubject(events.StoreQdrant, action), data, jetstream.WithMsgID(events.CommandMsgID(cmd)))
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrNoStreamResponse) || ctx.Err() != nil {
			t.Fatalf("publish %s: %v", action, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	msg, err := replies.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no reply to %s: %v", action, err)
	}
	res, err := events.DecodeStoreResult(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// tenantScroll reads the collection as the tenant would, with the JWT.
func tenantScroll(t *testing.T, host string, port int, token, collection string) error {
	t.Helper()
	c, err := qdrant.NewClient(&qdrant.Config{Host: host, Port: port, PoolSize: 1, SkipCompatibilityCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.Scroll(metadata.AppendToOutgoingContext(ctx, "api-key", token), &qdrant.ScrollPoints{CollectionName: collection, Limit: qdrant.PtrOf(uint32(1))})
	return err
}
