// Package capture records what a service under test says, so that a test
// can search it afterwards: every log line it writes (Log, NewLogger) and
// every message published on its NATS server (Bus).
//
// The leak tests use both to prove that no credential reaches a log or the
// bus; the end-to-end tests also use Wire.Next to wait for replies.
package capture

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Log is an in-memory log sink that several goroutines may write to at
// once. It is an io.Writer and a zapcore.WriteSyncer; the zero value is
// ready to use.
type Log struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p to the log.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// Sync does nothing: the log is in memory.
func (l *Log) Sync() error { return nil }

// String returns everything written so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Core returns a zap core that writes the entries enabled by level to l as
// the JSON lines a production logger writes (zap's production encoder).
// Tee it with other cores to capture the text alongside them.
func (l *Log) Core(level zapcore.LevelEnabler) zapcore.Core {
	return zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), l, level)
}

// NewLogger returns a JSON logger for the entries enabled by level (e.g.
// zap.DebugLevel) and the Log it writes to.
func NewLogger(level zapcore.LevelEnabler, opts ...zap.Option) (*zap.Logger, *Log) {
	l := &Log{}
	return zap.New(l.Core(level), opts...), l
}

// Message is one message seen on the bus, copied out of the client.
type Message struct {
	Subject string      // the subject it was published on
	Header  nats.Header // its headers (nil when it had none)
	Data    []byte      // its payload
}

// Wire records every message published on a NATS server, as seen by one
// subscription to ">" on a test connection: every client's messages,
// JetStream API traffic and replies included. It reads the subscription
// synchronously, so what it returns is complete up to the moment of the
// call. A Wire is safe for concurrent use; a Next that is waiting holds it.
type Wire struct {
	nc      *nats.Conn
	sub     *nats.Subscription
	mu      sync.Mutex
	msgs    []Message
	cursors map[string]int // per Next prefix: the index of the first message it has not looked at
}

// Bus subscribes to every subject (">") on nc and returns the Wire that
// records what arrives. The subscription has no pending limits (it never
// drops a message) and lives as long as nc; the server knows of it when Bus
// returns. Note that it counts as a responder for every subject, so a
// JetStream publish to a subject no stream captures waits for its timeout
// instead of failing fast.
func Bus(t testing.TB, nc *nats.Conn) *Wire {
	t.Helper()
	sub, err := nc.SubscribeSync(">")
	if err != nil {
		t.Fatalf("capture: subscribe to \">\": %v", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatalf("capture: pending limits: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("capture: flush: %v", err)
	}
	return &Wire{nc: nc, sub: sub, cursors: map[string]int{}}
}

// Messages returns every message seen since Bus, in the order the server
// delivered them. It first flushes the connection (best effort), so the
// result holds every message the server had routed by then.
func (w *Wire) Messages() []Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.nc.IsConnected() {
		_ = w.nc.FlushTimeout(5 * time.Second)
	}
	for {
		m, err := w.sub.NextMsg(10 * time.Millisecond)
		if err != nil {
			break
		}
		w.add(m)
	}
	return append([]Message(nil), w.msgs...)
}

// Text returns every message seen since Bus as one line each: subject,
// headers and payload, for searching and for failure messages.
func (w *Wire) Text() string {
	var b strings.Builder
	for _, m := range w.Messages() {
		fmt.Fprintf(&b, "%s %v %s\n", m.Subject, m.Header, m.Data)
	}
	return b.String()
}

// Next returns the next message whose subject starts with prefix, waiting
// for it until ctx ends (then it returns ctx's error). Each prefix has its
// own place in the recording: successive calls with one prefix return its
// messages one after the other, from the first seen since Bus.
func (w *Wire) Next(ctx context.Context, prefix string) (Message, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		for i := w.cursors[prefix]; i < len(w.msgs); i++ {
			if strings.HasPrefix(w.msgs[i].Subject, prefix) {
				w.cursors[prefix] = i + 1
				return w.msgs[i], nil
			}
		}
		w.cursors[prefix] = len(w.msgs)
		m, err := w.sub.NextMsgWithContext(ctx)
		if err != nil {
			return Message{}, err
		}
		w.add(m)
	}
}

// add records a copy of m; w.mu is held.
func (w *Wire) add(m *nats.Msg) {
	cp := Message{Subject: m.Subject, Data: append([]byte(nil), m.Data...)}
	if m.Header != nil {
		cp.Header = nats.Header{}
		for k, v := range m.Header {
			cp.Header[k] = append([]string(nil), v...)
		}
	}
	w.msgs = append(w.msgs, cp)
}
