package events

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestEnsureRetriesTransientPlacement: a cluster that cannot place a
// stream yet (a peer not seen online, JetStream briefly unavailable) is
// asked again; any other refusal is final at once.
func TestEnsureRetriesTransientPlacement(t *testing.T) {
	calls := 0
	err := retryTransient(context.Background(), func() error {
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
	err = retryTransient(context.Background(), func() error { calls++; return final })
	if !errors.Is(err, final) || calls != 1 {
		t.Fatalf("a final refusal: %v after %d calls, want it at once", err, calls)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls = 0
	err = retryTransient(ctx, func() error {
		calls++
		return &jetstream.APIError{Code: 400, ErrorCode: jsErrCodeNoSuitablePeers}
	})
	if err == nil || calls != 1 {
		t.Fatalf("with the context ended: %v after %d calls, want the refusal after one", err, calls)
	}
}
