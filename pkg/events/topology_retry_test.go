package events

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/testkit"
)

// TestEnsureRetriesTransientPlacement: a cluster that cannot place a
// stream yet (a peer not seen online, JetStream briefly unavailable) is
// asked again; any other refusal is final at once.
func TestEnsureRetriesTransientPlacement(t *testing.T) {
	calls := 0
	err := retryTransient(context.Background(), time.Second, func(context.Context) error {
		calls++
		switch calls {
		case 1:
			return &jetstream.APIError{Code: 400, ErrorCode: jsErrCodeNoSuitablePeers, Description: "no suitable peers for placement, peer offline"}
		case 2:
			return &jetstream.APIError{Code: 503, ErrorCode: jsErrCodeTempUnavailable, Description: "JetStream system temporarily unavailable"}
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("after two transient refusals: %v after %d calls, want success on the third", err, calls)
	}

	calls = 0
	final := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamNameInUse, Description: "stream name already in use"}
	err = retryTransient(context.Background(), time.Second, func(context.Context) error { calls++; return final })
	if !errors.Is(err, final) || calls != 1 {
		t.Fatalf("a final refusal: %v after %d calls, want it at once", err, calls)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls = 0
	err = retryTransient(ctx, time.Second, func(context.Context) error {
		calls++
		return &jetstream.APIError{Code: 400, ErrorCode: jsErrCodeNoSuitablePeers}
	})
	if err == nil || calls != 1 {
		t.Fatalf("with the context ended: %v after %d calls, want the refusal after one", err, calls)
	}
}

// unansweredOnce is a JetStream client whose first stream create-or-update
// request goes unanswered, as a settling 3-node cluster sometimes leaves one
// (seen on the testkit's cluster: a KV create waited out its caller's whole
// context); it blocks until that request's context ends.
type unansweredOnce struct {
	jetstream.JetStream
	mu        sync.Mutex
	asked     bool
	deadlines []time.Duration // how long each request was allowed
}

func (u *unansweredOnce) CreateOrUpdateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	u.mu.Lock()
	first := !u.asked
	u.asked = true
	if d, ok := ctx.Deadline(); ok {
		u.deadlines = append(u.deadlines, time.Until(d))
	} else {
		u.deadlines = append(u.deadlines, -1)
	}
	u.mu.Unlock()
	if first {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return u.JetStream.CreateOrUpdateStream(ctx, cfg)
}

// TestEnsureAsksAgainWhenUnanswered: a create request that gets no answer
// is bounded and asked again, on a real server, instead of holding Ensure
// (and the orchestrator's start) until the caller's context ends.
func TestEnsureAsksAgainWhenUnanswered(t *testing.T) {
	nc := testkit.StartNATS(t).Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	u := &unansweredOnce{JetStream: js}
	// Without a bound per request, Ensure waits out this whole minute.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := (Topology{}).Ensure(ctx, u); err != nil {
		t.Fatalf("Ensure with its first request unanswered: %v", err)
	}
	for _, cfg := range (Topology{}).Streams() {
		if _, err := js.Stream(ctx, cfg.Name); err != nil {
			t.Errorf("stream %s after Ensure: %v", cfg.Name, err)
		}
	}
	if want := 1 + len((Topology{}).Streams()); len(u.deadlines) != want {
		t.Errorf("%d stream requests, want %d (the first stream asked twice)", len(u.deadlines), want)
	}
	for i, d := range u.deadlines {
		if d < 0 || d > ensureAttemptTimeout {
			t.Errorf("request %d was allowed %s, want at most %s", i, d, ensureAttemptTimeout)
		}
	}
}
