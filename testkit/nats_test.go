package testkit

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestNATSJetStreamPublishReadBackAndRestart(t *testing.T) {
	n := StartNATS(t)
	// No reconnect buffer: a publish while the server is down must fail, not
	// be delivered after the restart.
	nc := n.Connect(t, nats.ReconnectBufSize(-1))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     "KIT",
		Subjects: []string{"kit.>"},
		Storage:  jetstream.FileStorage,
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	ack, err := js.Publish(ctx, "kit.one", []byte("hello"))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if ack.Stream != "KIT" || ack.Sequence != 1 {
		t.Fatalf("ack = %+v, want stream KIT sequence 1", ack)
	}
	assertStreamMsg(ctx, t, js, "KIT", 1, "kit.one", "hello")

	n.Shutdown()
	if n.Running() {
		t.Fatal("server still running after Shutdown")
	}
	downCtx, downCancel := context.WithTimeout(ctx, time.Second)
	_, err = js.Publish(downCtx, "kit.two", []byte("lost"), jetstream.WithRetryAttempts(0))
	downCancel()
	if err == nil {
		t.Fatal("publish acked while the server was shut down")
	}

	url := n.URL
	n.Restart(t)
	if n.URL != url {
		t.Fatalf("URL changed across restart: %s -> %s", url, n.URL)
	}
	// The stream and its message survive the restart (same store dir).
	assertStreamMsg(ctx, t, js, "KIT", 1, "kit.one", "hello")
	ack, err = js.Publish(ctx, "kit.two", []byte("again"))
	if err != nil {
		t.Fatalf("publish after restart: %v", err)
	}
	if ack.Sequence != 2 {
		t.Fatalf("sequence after restart = %d, want 2", ack.Sequence)
	}
}

func assertStreamMsg(ctx context.Context, t *testing.T, js jetstream.JetStream, stream string, seq uint64, subject, data string) {
	t.Helper()
	var msg *jetstream.RawStreamMsg
	// The client may still be reconnecting after a restart.
	err := waitFor(10*time.Second, func() error {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return err
		}
		msg, err = s.GetMsg(ctx, seq)
		return err
	})
	if err != nil {
		t.Fatalf("get %s #%d: %v", stream, seq, err)
	}
	if msg.Subject != subject || string(msg.Data) != data {
		t.Fatalf("%s #%d = %s %q, want %s %q", stream, seq, msg.Subject, msg.Data, subject, data)
	}
}

func TestNATSClusterSurvivesNodeLossAndRejoin(t *testing.T) {
	c := StartNATSCluster(t, 3)
	if len(c.Nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(c.Nodes))
	}
	nc := c.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A settling cluster can leave a create unanswered: each attempt is
	// bounded, and asking again with the same config is idempotent.
	if err := waitFor(30*time.Second, func() error {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		_, err := js.CreateOrUpdateStream(cctx, jetstream.StreamConfig{
			Name:     "R3",
			Subjects: []string{"r3.>"},
			Storage:  jetstream.FileStorage,
			Replicas: 3,
		})
		return err
	}); err != nil {
		t.Fatalf("create R3 stream: %v", err)
	}
	// The stream leader is elected shortly after CreateStream returns.
	var victim *NATS
	if err := waitFor(10*time.Second, func() error {
		for _, n := range c.Nodes {
			if n.Server().JetStreamIsStreamLeader("$G", "R3") {
				victim = n
				return nil
			}
		}
		return errors.New("no stream leader for R3")
	}); err != nil {
		t.Fatal(err)
	}
	// A new leader may not answer the first publish yet ("no response
	// from stream"); JetStream clients retry that, and so does this test.
	if err := waitFor(10*time.Second, func() error {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		_, err := js.Publish(pctx, "r3.a", []byte("1"), jetstream.WithMsgID("r3.a-1"))
		return err
	}); err != nil {
		t.Fatalf("publish: %v", err)
	}

	// Lose the stream leader: the hardest node to lose.
	victim.Shutdown()
	t.Logf("shut down %s (leader of R3)", victim.Name)

	// Two of three replicas remain: a publish is still acked once a new
	// stream leader is elected. A publish whose ack was lost is retried
	// with the same message ID, so it cannot be stored twice.
	var ack *jetstream.PubAck
	if err := waitFor(20*time.Second, func() error {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		defer pcancel()
		var err error
		ack, err = js.Publish(pctx, "r3.b", []byte("2"), jetstream.WithMsgID("r3.b-1"))
		return err
	}); err != nil {
		t.Fatalf("publish with one node down: %v", err)
	}
	if ack.Sequence != 2 {
		t.Fatalf("sequence = %d, want 2", ack.Sequence)
	}

	victim.Restart(t)

	// The restarted node rejoins: it is a current replica of R3 again and
	// has caught up with the message published while it was down.
	s, err := js.Stream(ctx, "R3")
	if err != nil {
		t.Fatal(err)
	}
	if err := waitFor(30*time.Second, func() error {
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.Cluster == nil {
			return errors.New("no cluster info")
		}
		peers := []string{info.Cluster.Leader}
		for _, r := range info.Cluster.Replicas {
			if !r.Current || r.Offline {
				return fmt.Errorf("replica %s current=%v offline=%v", r.Name, r.Current, r.Offline)
			}
			peers = append(peers, r.Name)
		}
		for _, p := range peers {
			if p == victim.Name {
				if !victim.Server().JetStreamIsStreamCurrent("$G", "R3") {
					return fmt.Errorf("%s not current on R3", victim.Name)
				}
				return nil
			}
		}
		return fmt.Errorf("%s not among R3 peers %v", victim.Name, peers)
	}); err != nil {
		t.Fatalf("restarted node did not rejoin: %v", err)
	}
	c.WaitForMetaLeader(t)
}
