package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/capture"
)

// Agent is a Store served end to end by the real agent runtime —
// agent.Run inside the service skeleton (service.RunWithLogger), as an
// agent's main runs it — against a test NATS server, with every message
// published on the server and every log line the agent writes captured.
type Agent struct {
	// Kind is the store the agent serves.
	Kind events.Store
	// Identity is the control plane's age identity: it opens the sealed
	// credentials in the agent's replies.
	Identity *age.X25519Identity
	// Config is the runtime configuration the agent runs with.
	Config agent.Config
	// JS is a test-side JetStream context (not the agent's connection).
	JS jetstream.JetStream
	// Logs holds the agent's log entries, structured.
	Logs *observer.ObservedLogs

	attemptsMu sync.Mutex
	attempts   map[string]int // commands sent by Provision/Deprovision, per tenant, generation and action

	svc     atomic.Pointer[service.Service]
	logText *capture.Log
	wire    *capture.Wire
	cancel  context.CancelFunc
	done    chan error
	stop    sync.Once
	stopErr error
	killed  atomic.Bool
}

// AgentOption adjusts RunAgent.
type AgentOption func(*agentOptions)

type agentOptions struct {
	identity  *age.X25519Identity
	configure []func(*agent.Config)
	name      string
	creds     string        // the agent's NATS_CREDS
	harness   []nats.Option // the test's own connection (capture, JetStream)
}

// WithNATSCreds runs the agent with its own NATS identity (NATS_CREDS =
// credsFile) on an authenticated server; harness are the options of the
// test's own connection (its identity), used for Agent.JS and the wire
// capture.
func WithNATSCreds(credsFile string, harness ...nats.Option) AgentOption {
	return func(o *agentOptions) { o.creds, o.harness = credsFile, harness }
}

// WithIdentity makes the agent seal credentials to id (for several
// replicas of one agent); by default each RunAgent makes a fresh identity.
func WithIdentity(id *age.X25519Identity) AgentOption {
	return func(o *agentOptions) { o.identity = id }
}

// WithConfig adjusts the runtime configuration after the test defaults
// (TestAgentConfig) are applied.
func WithConfig(f func(*agent.Config)) AgentOption {
	return func(o *agentOptions) { o.configure = append(o.configure, f) }
}

// WithName sets the service name (the Tenantprov-Source header and the
// logger's service field); the default is "<store>-agent".
func WithName(name string) AgentOption {
	return func(o *agentOptions) { o.name = name }
}

// TestAgentConfig is the runtime configuration RunAgent starts from: the
// production defaults (AckWait and ShutdownTimeout included) with retries
// short enough for tests.
func TestAgentConfig(recipient string) agent.Config {
	cfg := agent.DefaultConfig()
	cfg.ControlPlaneRecipient = recipient
	cfg.CommandTimeout = 60 * time.Second
	cfg.MaxDeliver = 5
	cfg.RetryBaseDelay = 50 * time.Millisecond
	cfg.RetryMaxDelay = time.Second
	return cfg
}

// RunAgent starts store behind the agent runtime on n and returns once the
// agent is ready (/readyz answers 200: the store pings and the consumer
// exists). The agent is stopped (drained) when the test ends; Stop stops
// it earlier.
func RunAgent(t testing.TB, n *testkit.NATS, store agent.Store, opts ...AgentOption) *Agent {
	t.Helper()
	return runAgent(t, n.URL, 1, func(o ...nats.Option) *nats.Conn { return n.Connect(t, o...) }, store, opts...)
}

// RunAgentOnCluster is RunAgent on a NATS cluster, as in production
// (DESIGN.md §12): the agent connects to every node and the topology has
// one replica per node (3 on a 3-node cluster).
func RunAgentOnCluster(t testing.TB, c *testkit.NATSCluster, store agent.Store, opts ...AgentOption) *Agent {
	t.Helper()
	return runAgent(t, c.URLs(), len(c.Nodes), func(o ...nats.Option) *nats.Conn { return c.Connect(t, o...) }, store, opts...)
}

// runAgent starts the agent; connect opens the test's own connection with
// the harness options (its identity on an authenticated server).
func runAgent(t testing.TB, url string, replicas int, connect func(...nats.Option) *nats.Conn, store agent.Store, opts ...AgentOption) *Agent {
	t.Helper()
	o := agentOptions{name: string(store.Kind()) + "-agent"}
	for _, opt := range opts {
		opt(&o)
	}
	if o.identity == nil {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatalf("storetest: generate age identity: %v", err)
		}
		o.identity = id
	}
	cfg := TestAgentConfig(o.identity.Recipient().String())
	for _, f := range o.configure {
		f(&cfg)
	}

	nc := connect(o.harness...)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("storetest: jetstream: %v", err)
	}
	a := &Agent{Kind: store.Kind(), Identity: o.identity, Config: cfg, JS: js, logText: &capture.Log{}, done: make(chan error, 1)}
	a.wire = capture.Bus(t, nc)

	obsCore, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(zapcore.NewTee(obsCore, a.logText.Core(zapcore.DebugLevel)), zap.Fields(zap.String("service", o.name)))
	a.Logs = logs

	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	svcCfg := service.Config{NATSURL: url, NATSCredsFile: o.creds, HTTPAddr: "127.0.0.1:0", LogLevel: "debug", JetStreamReplicas: replicas, ShutdownTimeout: cfg.ShutdownTimeout}
	go func() {
		a.done <- service.RunWithLogger(ctx, o.name, svcCfg, log, func(ctx context.Context, s *service.Service) error {
			a.svc.Store(s)
			return agent.Run(ctx, s, store, cfg)
		})
	}()
	t.Cleanup(func() {
		if err := a.Stop(); err != nil && !a.killed.Load() {
			t.Errorf("storetest: agent stopped with error: %v", err)
		}
		if t.Failed() {
			t.Logf("storetest: %s log:\n%s", o.name, a.LogText())
		}
	})

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-a.done:
			a.done <- err
			t.Fatalf("storetest: agent exited during start-up: %v\n%s", err, a.LogText())
		default:
		}
		if a.Ready() == nil {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("storetest: agent not ready after 30s: %v\n%s", a.Ready(), a.LogText())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Service is the agent's service skeleton (its metrics registry, HTTP
// address), or nil before it started.
func (a *Agent) Service() *service.Service { return a.svc.Load() }

// Ready asks the agent's /readyz and returns nil for 200, else an error
// with the body.
func (a *Agent) Ready() error {
	svc := a.Service()
	if svc == nil || svc.HTTPAddr() == "" {
		return errors.New("service not started")
	}
	client := http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + svc.HTTPAddr() + "/readyz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz %d: %s", resp.StatusCode, strings.TrimSpace(body.String()))
	}
	return nil
}

// Stop cancels the agent's context (as SIGTERM does) and waits until the
// agent has drained and its service has returned; it returns the service's
// error. Later calls return the same result.
func (a *Agent) Stop() error {
	a.stop.Do(func() {
		a.cancel()
		select {
		case a.stopErr = <-a.done:
		case <-time.After(2 * time.Minute):
			a.stopErr = errors.New("agent did not stop within 2 minutes")
		}
	})
	return a.stopErr
}

// Kill makes the agent vanish from NATS as a SIGKILLed process would: its
// connection is closed at once, so nothing it does afterwards (a reply, an
// ack, an InProgress signal, a lock refresh) reaches the server, and its
// context is cancelled. Commands it was working on go on in this process
// until their store calls return, but only JetStream's redelivery can
// finish them. The error the agent then stops with is expected and not
// reported.
func (a *Agent) Kill() {
	a.killed.Store(true)
	if svc := a.Service(); svc != nil && svc.NATS != nil {
		svc.NATS.Close()
	}
	a.cancel()
}

// StopAsync starts Stop in the background; the channel yields its result.
func (a *Agent) StopAsync() <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- a.Stop() }()
	return ch
}

// LogText is everything the agent logged, as the JSON lines a production
// logger would write.
func (a *Agent) LogText() string { return a.logText.String() }

// Captured is one message seen on the NATS server: its subject, headers
// (nil when it had none) and payload.
type Captured = capture.Message

// Published returns every message published on the server (subject ">")
// since RunAgent started, by anyone, JetStream API traffic included.
func (a *Agent) Published() []Captured { return a.wire.Messages() }

// NewCommand returns a valid command for this agent's store, issued now
// with a deadline two minutes away.
func (a *Agent) NewCommand(tenant events.TenantID, generation uint64, action events.Action) *events.StoreCommand {
	now := time.Now().UTC()
	return &events.StoreCommand{
		TenantID: string(tenant), Generation: generation, SagaID: fmt.Sprintf("saga-%s-g%d", tenant, generation),
		Store: a.Kind, Action: action, IssuedAt: now, Deadline: now.Add(2 * time.Minute),
	}
}

// nextCommand is NewCommand with Attempt counting the commands this Agent's
// Provision and Deprovision sent for the same tenant, generation and
// action, so that sending one again is a new command (and gets a new
// reply) rather than a duplicate JetStream drops — as the orchestrator
// does when it repeats a step.
func (a *Agent) nextCommand(tenant events.TenantID, generation uint64, action events.Action) *events.StoreCommand {
	cmd := a.NewCommand(tenant, generation, action)
	key := fmt.Sprintf("%s/%d/%s", tenant, generation, action)
	a.attemptsMu.Lock()
	defer a.attemptsMu.Unlock()
	if a.attempts == nil {
		a.attempts = map[string]int{}
	}
	cmd.Attempt = a.attempts[key]
	a.attempts[key]++
	return cmd
}

// Send publishes cmd on its subject with its deterministic Nats-Msg-Id
// and waits for the PubAck.
func (a *Agent) Send(ctx context.Context, t testing.TB, cmd *events.StoreCommand) {
	t.Helper()
	data, err := events.Encode(cmd)
	if err != nil {
		t.Fatalf("storetest: encode command: %v", err)
	}
	a.SendRaw(ctx, t, events.CommandSubject(cmd.Store, cmd.Action), data, events.CommandMsgID(cmd))
}

// sendAttemptTimeout bounds one publish attempt: a cluster whose stream
// leader is still settling can leave a request unanswered.
const sendAttemptTimeout = 5 * time.Second

// SendRaw publishes data on subject (a Nats-Msg-Id when msgID is not
// empty) and waits for the PubAck. With a message ID, an attempt left
// unanswered is sent again (the stream stores it once, as the saga's own
// publishes do); without one, a single attempt waits for ctx.
func (a *Agent) SendRaw(ctx context.Context, t testing.TB, subject string, data []byte, msgID string) {
	t.Helper()
	if msgID == "" {
		if _, err := a.JS.Publish(ctx, subject, data); err != nil {
			t.Fatalf("storetest: publish %s: %v", subject, err)
		}
		return
	}
	for {
		actx, cancel := context.WithTimeout(ctx, sendAttemptTimeout)
		_, err := a.JS.Publish(actx, subject, data, jetstream.WithMsgID(msgID))
		cancel()
		if err == nil {
			return
		}
		var api *jetstream.APIError
		retry := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
			errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) ||
			errors.As(err, &api) && api.ErrorCode == 10158 // Nats-Msg-Id in process on a replicated stream
		if !retry || ctx.Err() != nil {
			t.Fatalf("storetest: publish %s: %v", subject, err)
		}
		t.Logf("storetest: publish %s: %v; sending again", subject, err)
		select {
		case <-ctx.Done():
			t.Fatalf("storetest: publish %s: %v", subject, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Result is one reply in STORE_EVENTS.
type Result struct {
	*events.StoreResult
	Seq    uint64      // stream sequence in STORE_EVENTS
	Header nats.Header // headers as stored (Nats-Msg-Id included)
}

// Cursor returns the last sequence of STORE_EVENTS, to wait for replies
// published after it.
func (a *Agent) Cursor(ctx context.Context, t testing.TB) uint64 {
	t.Helper()
	s, err := a.JS.Stream(ctx, events.StreamStoreEvents)
	if err != nil {
		t.Fatalf("storetest: stream %s: %v", events.StreamStoreEvents, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("storetest: stream info: %v", err)
	}
	return info.State.LastSeq
}

// Results returns every reply of this agent's store in STORE_EVENTS after
// sequence after, in order. Each must decode as a valid StoreResult.
func (a *Agent) Results(ctx context.Context, t testing.TB, after uint64) []Result {
	t.Helper()
	s, err := a.JS.Stream(ctx, events.StreamStoreEvents)
	if err != nil {
		t.Fatalf("storetest: stream %s: %v", events.StreamStoreEvents, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatalf("storetest: stream info: %v", err)
	}
	prefix := "store.evt." + string(a.Kind) + "."
	var out []Result
	for seq := max(after+1, info.State.FirstSeq); seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("storetest: get message %d: %v", seq, err)
		}
		if !strings.HasPrefix(m.Subject, prefix) {
			continue
		}
		res, err := events.DecodeStoreResult(m.Data)
		if err != nil {
			t.Fatalf("storetest: reply %d on %s does not decode: %v", seq, m.Subject, err)
		}
		out = append(out, Result{StoreResult: res, Seq: seq, Header: m.Header})
	}
	return out
}

// Await polls STORE_EVENTS until a reply after sequence after matches, and
// returns it; it fails the test when ctx ends first.
func (a *Agent) Await(ctx context.Context, t testing.TB, after uint64, match func(*events.StoreResult) bool) Result {
	t.Helper()
	for {
		for _, r := range a.Results(ctx, t, after) {
			if match(r.StoreResult) {
				return r
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("storetest: no matching reply: %v\n%s", ctx.Err(), a.LogText())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// For matches replies about tenant's generation with one of outcomes (any
// outcome when none is given).
func For(tenant events.TenantID, generation uint64, outcomes ...events.Outcome) func(*events.StoreResult) bool {
	return func(r *events.StoreResult) bool {
		if r.TenantID != string(tenant) || r.Generation != generation {
			return false
		}
		if len(outcomes) == 0 {
			return true
		}
		for _, o := range outcomes {
			if r.Outcome == o {
				return true
			}
		}
		return false
	}
}

// Provision sends a provision command and waits for its reply; it fails
// the test unless the reply is provisioned, and returns the reply and its
// opened credential. Calling it again for the same tenant and generation
// sends a new command (the next Attempt), as a repeated step would.
func (a *Agent) Provision(ctx context.Context, t testing.TB, tenant events.TenantID, generation uint64) (Result, map[string]any) {
	t.Helper()
	after := a.Cursor(ctx, t)
	a.Send(ctx, t, a.nextCommand(tenant, generation, events.ActionProvision))
	r := a.Await(ctx, t, after, For(tenant, generation, events.OutcomeProvisioned, events.OutcomeProvisionFailed))
	if r.Outcome != events.OutcomeProvisioned {
		t.Fatalf("storetest: provision %s g%d: %s (%s): %s", tenant, generation, r.Outcome, r.Reason, r.Error)
	}
	return r, a.Open(t, r.StoreResult)
}

// Deprovision sends a deprovision command and waits for its reply; it
// fails the test unless the reply is deprovisioned. Like Provision, each
// call is a new command.
func (a *Agent) Deprovision(ctx context.Context, t testing.TB, tenant events.TenantID, generation uint64) Result {
	t.Helper()
	after := a.Cursor(ctx, t)
	a.Send(ctx, t, a.nextCommand(tenant, generation, events.ActionDeprovision))
	r := a.Await(ctx, t, after, For(tenant, generation, events.OutcomeDeprovisioned, events.OutcomeDeprovisionFailed))
	if r.Outcome != events.OutcomeDeprovisioned {
		t.Fatalf("storetest: deprovision %s g%d: %s (%s): %s", tenant, generation, r.Outcome, r.Reason, r.Error)
	}
	return r
}

// Open decrypts a provisioned reply's credential with Identity.
func (a *Agent) Open(t testing.TB, r *events.StoreResult) map[string]any {
	t.Helper()
	plain, err := secret.Open(r.Credential, a.Identity)
	if err != nil {
		t.Fatalf("storetest: open credential: %v", err)
	}
	var cred map[string]any
	if err := json.Unmarshal(plain, &cred); err != nil {
		t.Fatalf("storetest: credential is not a JSON object: %v", err)
	}
	return cred
}

// AssertNoSecret fails the test if any of secrets appears in any message
// seen on the server (subject, headers or payload) or in the agent's log.
func (a *Agent) AssertNoSecret(t testing.TB, secrets ...string) {
	t.Helper()
	logText := a.LogText()
	msgs := a.Published()
	for _, s := range secrets {
		if len(s) < 8 {
			t.Fatalf("storetest: AssertNoSecret(%d-character value): too short to search for meaningfully", len(s))
		}
		if i := strings.Index(logText, s); i >= 0 {
			line := logText[strings.LastIndexByte(logText[:i], '\n')+1:]
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			t.Errorf("a secret appears in the agent's log: %s", strings.ReplaceAll(line, s, "<SECRET>"))
		}
		for _, m := range msgs {
			where := ""
			switch {
			case strings.Contains(m.Subject, s):
				where = "subject"
			case strings.Contains(string(m.Data), s):
				where = "payload"
			default:
				for k, vs := range m.Header {
					if strings.Contains(k+strings.Join(vs, ","), s) {
						where = "header " + k
					}
				}
			}
			if where != "" {
				t.Errorf("a secret appears in the %s of a message on %s", where, m.Subject)
			}
		}
	}
}

// RunLeakCheck runs h.Store through the agent runtime on n — provision
// (with its Verify), a second provision of the same generation (a
// redelivered command), deprovision, and, when the harness can create a
// foreign resource, a provision that fails with a conflict — while
// capturing every message on the server and every log line, and fails the
// test if any credential secret the runtime generated or the store
// returned appears in any of them. It also checks that the captures are
// real: the replies were seen, and the sealed credential does hold the
// password.
func RunLeakCheck(t *testing.T, n *testkit.NATS, h *Harness) {
	t.Helper()
	if h == nil || h.Store == nil {
		t.Fatal("storetest: RunLeakCheck needs a Harness with a Store")
	}
	rec := &secretRecorder{next: h.Store}
	a := RunAgent(t, n, rec)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var b [4]byte
	_, _ = rand.Read(b[:])
	tenant := events.MustTenantID("leak-" + fmt.Sprintf("%x", b))
	_, cred := a.Provision(ctx, t, tenant, 1)
	_, cred2 := a.Provision(ctx, t, tenant, 1)
	a.Deprovision(ctx, t, tenant, 1)
	if h.CreateForeign != nil {
		foreign := events.MustTenantID("leakf-" + fmt.Sprintf("%x", b))
		if err := h.CreateForeign(ctx, foreign); err != nil {
			t.Fatalf("CreateForeign: %v", err)
		}
		after := a.Cursor(ctx, t)
		a.Send(ctx, t, a.NewCommand(foreign, 1, events.ActionProvision))
		r := a.Await(ctx, t, after, For(foreign, 1, events.OutcomeProvisioned, events.OutcomeProvisionFailed))
		if r.Outcome != events.OutcomeProvisionFailed || r.Reason != events.ReasonConflict {
			t.Errorf("provision over a foreign resource: %s (%s), want provision_failed (conflict)", r.Outcome, r.Reason)
		}
		a.Deprovision(ctx, t, foreign, 1)
	}
	if err := a.Stop(); err != nil {
		t.Fatalf("agent stop: %v", err)
	}

	secrets := rec.secrets()
	if len(secrets) < 2 {
		t.Fatalf("storetest: recorded %d secrets, want at least the two generated passwords", len(secrets))
	}
	sealed := fmt.Sprint(cred, cred2)
	if !strings.Contains(sealed, secrets[0]) && !strings.Contains(sealed, secrets[1]) {
		t.Logf("note: the sealed credential does not contain the generated password (a store with its own credential type, e.g. a JWT)")
	}
	replies := 0
	for _, m := range a.Published() {
		if strings.HasPrefix(m.Subject, "store.evt.") {
			replies++
		}
	}
	if replies < 3 {
		t.Fatalf("storetest: captured %d replies, want at least 3; the capture is broken", replies)
	}
	if a.LogText() == "" {
		t.Fatal("storetest: captured no log lines; the capture is broken")
	}
	a.AssertNoSecret(t, secrets...)
}

// secretRecorder remembers every password the runtime hands the store and
// every secret the store returns in a credential.
type secretRecorder struct {
	next agent.Store
	mu   sync.Mutex
	seen []string
}

var _ agent.Store = (*secretRecorder)(nil)

func (r *secretRecorder) add(s secret.String) {
	if s.IsZero() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, s.Reveal())
}

func (r *secretRecorder) secrets() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

func (r *secretRecorder) recordCredential(c agent.Credential) {
	for _, v := range c {
		if s, ok := v.(secret.String); ok {
			r.add(s)
		}
	}
}

func (r *secretRecorder) Kind() events.Store { return r.next.Kind() }

func (r *secretRecorder) Provision(ctx context.Context, req agent.ProvisionRequest) (agent.ProvisionResponse, error) {
	r.add(req.Password)
	resp, err := r.next.Provision(ctx, req)
	r.recordCredential(resp.Credential)
	return resp, err
}

func (r *secretRecorder) Verify(ctx context.Context, req agent.VerifyRequest) (agent.VerifyResponse, error) {
	r.recordCredential(req.Credential)
	return r.next.Verify(ctx, req)
}

func (r *secretRecorder) Deprovision(ctx context.Context, req agent.DeprovisionRequest) (agent.DeprovisionResponse, error) {
	return r.next.Deprovision(ctx, req)
}

func (r *secretRecorder) Ping(ctx context.Context) error { return r.next.Ping(ctx) }
