package capture_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/capture"
)

// TestLoggerWritesJSONLinesFromManyGoroutines: every entry at or above the
// level arrives whole, as one JSON line, whatever goroutine logged it.
func TestLoggerWritesJSONLinesFromManyGoroutines(t *testing.T) {
	log, text := capture.NewLogger(zap.InfoLevel, zap.Fields(zap.String("service", "test")))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				log.Info("hello", zap.Int("g", i), zap.Int("n", j))
				log.Debug("below the level")
			}
		}()
	}
	wg.Wait()
	_ = log.Sync()
	lines := strings.Split(strings.TrimSuffix(text.String(), "\n"), "\n")
	if len(lines) != 8*50 {
		t.Fatalf("%d lines, want %d", len(lines), 8*50)
	}
	for _, l := range lines {
		var e struct {
			Level, Msg, Service string
		}
		if err := json.Unmarshal([]byte(l), &e); err != nil || e.Level != "info" || e.Msg != "hello" || e.Service != "test" {
			t.Fatalf("line %q: %+v, %v", l, e, err)
		}
	}
}

// TestBusRecordsEveryMessage: a Wire sees every client's messages, with
// their headers, in order, and Next walks the ones under a prefix.
func TestBusRecordsEveryMessage(t *testing.T) {
	n := testkit.StartNATS(t)
	w := capture.Bus(t, n.Connect(t))
	other := n.Connect(t)

	m := nats.NewMsg("store.evt.redis.provisioned")
	m.Header.Set("Nats-Msg-Id", "id-1")
	m.Data = []byte(`{"tenant_id":"acme"}`)
	for _, msg := range []*nats.Msg{{Subject: "store.cmd.redis.provision", Data: []byte("cmd")}, m, {Subject: "store.evt.redis.deprovisioned", Data: []byte("bye")}} {
		if err := other.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.Flush(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := w.Next(ctx, "store.evt.")
	if err != nil || first.Subject != "store.evt.redis.provisioned" || first.Header.Get("Nats-Msg-Id") != "id-1" || string(first.Data) != `{"tenant_id":"acme"}` {
		t.Fatalf("first reply: %+v, %v", first, err)
	}
	second, err := w.Next(ctx, "store.evt.")
	if err != nil || second.Subject != "store.evt.redis.deprovisioned" {
		t.Fatalf("second reply: %+v, %v", second, err)
	}
	if cmd, err := w.Next(ctx, "store.cmd."); err != nil || string(cmd.Data) != "cmd" {
		t.Fatalf("a prefix has its own place: %+v, %v", cmd, err)
	}
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if _, err := w.Next(short, "store.evt."); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next with nothing left: %v, want the context's error", err)
	}

	msgs := w.Messages()
	if len(msgs) != 3 || msgs[0].Subject != "store.cmd.redis.provision" || msgs[0].Header != nil || msgs[2].Subject != "store.evt.redis.deprovisioned" {
		t.Fatalf("messages: %+v", msgs)
	}
	text := w.Text()
	for _, want := range []string{"store.cmd.redis.provision map[] cmd\n", "id-1", `{"tenant_id":"acme"}`} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}

// TestMessagesIsCurrent: Messages holds what the server routed before the
// call, without anyone waiting for it first.
func TestMessagesIsCurrent(t *testing.T) {
	n := testkit.StartNATS(t)
	nc := n.Connect(t)
	w := capture.Bus(t, nc)
	for range 500 {
		if err := nc.Publish("a.b", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(w.Messages()); got != 500 {
		t.Fatalf("%d messages, want 500", got)
	}
}
