package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/testkit"
)

func defaults() Config {
	return Config{Config: service.Defaults(name), Agent: agent.DefaultConfig()}
}

func TestConfigLoad(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadFrom(defaults(), map[string]string{
		"NATS_URL":                "nats://10.0.0.1:4222",
		"CONTROL_PLANE_RECIPIENT": id.Recipient().String(),
		"AGENT_MAX_IN_FLIGHT":     "4",
		"REDIS_ADDR":              "10.0.0.2:6379",
		"REDIS_ADMIN_USER":        "tpadmin",
		"REDIS_ADMIN_PASSWORD":    "admin-secret",
		"REDIS_PUBLIC_ADDR":       "redis.example:6379",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATSURL != "nats://10.0.0.1:4222" || cfg.HTTPAddr != "127.0.0.1:9184" || cfg.Agent.MaxInFlight != 4 ||
		cfg.Redis.Addr != "10.0.0.2:6379" || cfg.Redis.TenantAddr() != "redis.example:6379" || cfg.Redis.AdminPassword.Reveal() != "admin-secret" {
		t.Errorf("cfg = %+v", cfg)
	}
}

// TestConfigReportsEverything: one error names every missing setting of
// every part (service, runtime, Redis).
func TestConfigReportsEverything(t *testing.T) {
	_, err := config.LoadFrom(defaults(), map[string]string{"LOG_LEVEL": "loud"})
	if err == nil {
		t.Fatal("empty environment accepted")
	}
	for _, want := range []string{"LOG_LEVEL", "CONTROL_PLANE_RECIPIENT", "REDIS_ADDR", "REDIS_ADMIN_PASSWORD"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

// TestRun starts the service as main does, from the environment, against a
// real NATS server and redis-server, sends it a provision command and
// expects a provisioned reply whose sealed credential works; then stops it
// as SIGTERM would.
func TestRun(t *testing.T) {
	r := testkit.StartRedis(t)
	n := testkit.StartNATS(t)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"NATS_URL": n.URL, "HTTP_ADDR": "127.0.0.1:0", "LOG_LEVEL": "error",
		"CONTROL_PLANE_RECIPIENT": id.Recipient().String(),
		"REDIS_ADDR":              r.Addr, "REDIS_ADMIN_USER": r.AdminUser, "REDIS_ADMIN_PASSWORD": r.AdminPassword,
	} {
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx) }()

	nc := n.Connect(t)
	replies := make(chan *nats.Msg, 8)
	sub, err := nc.ChanSubscribe(events.EventSubject(events.StoreRedis, events.OutcomeProvisioned), replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	cmd := &events.StoreCommand{TenantID: "acme", Generation: 1, SagaID: "saga-run", Store: events.StoreRedis,
		Action: events.ActionProvision, IssuedAt: now, Deadline: now.Add(time.Minute)}
	data, err := events.Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	// The service creates the streams when it starts: retry until it has.
	for {
		_, err := js.Publish(ctx, events.CommandSubject(cmd.Store, cmd.Action), data, jetstream.WithMsgID(events.CommandMsgID(cmd)))
		if err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("run exited: %v", err)
		case <-ctx.Done():
			t.Fatalf("publish command: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	var res events.StoreResult
	select {
	case m := <-replies:
		if err := json.Unmarshal(m.Data, &res); err != nil {
			t.Fatal(err)
		}
	case err := <-done:
		t.Fatalf("run exited: %v", err)
	case <-ctx.Done():
		t.Fatal("no provisioned reply")
	}
	plain, err := secret.Open(res.Credential, id)
	if err != nil {
		t.Fatal(err)
	}
	var cred struct{ Addr, Username, Password string }
	if err := json.Unmarshal(plain, &cred); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: cred.Addr, Username: cred.Username, Password: cred.Password, DisableIdentity: true})
	defer c.Close()
	if err := c.Set(ctx, "tenant:acme:x", "1", 0).Err(); err != nil {
		t.Errorf("tenant credential from the reply: %v", err)
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context was cancelled")
	}
}
