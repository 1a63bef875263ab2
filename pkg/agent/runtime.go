package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"filippo.io/age"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/pkg/telemetry"
)

const (
	// publishTimeout bounds one reply publish (including its PubAck) and
	// one DoubleAck.
	publishTimeout = 10 * time.Second
	// maxErrorText keeps a result's Error field inside the contract's
	// limit (events: 1024 bytes).
	maxErrorText = 1000
	// maxFetchWait bounds one pull request, and so how long a stopping
	// agent waits before it stops fetching.
	maxFetchWait = 2 * time.Second
)

// Run is a store agent's work: it serves store's commands from the
// store's durable consumer on STORE_COMMANDS until ctx is cancelled, then
// stops fetching, lets the commands in flight finish (their replies are
// published and they are acked) until shortly before cfg.ShutdownTimeout,
// hands back (Nak) those still unfinished for another replica, and returns
// nil. It returns an error only if it cannot start (invalid configuration,
// svc incomplete) or the NATS connection is closed under it.
//
// Guarantees, per command delivery:
//   - at most cfg.MaxInFlight commands run at once in this replica, and a
//     command is pulled only when one of those workers is free; all
//     replicas share the consumer events.AgentConsumer(store.Kind()), which
//     Run creates or updates;
//   - one owner per tenant: the store is called only while the command
//     holds its tenant's lock in events.KVAgentLocks (key
//     events.AgentLockKey), across all replicas; a command whose tenant is
//     locked waits for it, and is handed back after a while; a lock whose
//     holder died expires within events.AgentLockTTL, and a holder that
//     cannot keep its lock stops its store call and hands the command back;
//   - while a command runs it is kept alive with InProgress every
//     cfg.AckWait/4, so a command is redelivered (to any replica) within
//     about cfg.AckWait only when the replica working on it is gone;
//   - a provision's store calls end at its Deadline (or after
//     cfg.CommandTimeout, whichever is first); one cut by its deadline is
//     answered provision_failed, reason store_error; a deprovision is bound
//     by cfg.CommandTimeout only;
//   - while its loop fetches or a command is in its hands (waiting for
//     the tenant's lock included), a replica publishes an
//     events.AgentProgress on events.ProgressSubject(store) every few
//     seconds (about cfg.AckWait/4): the orchestrator extends a saga's
//     deadline while the agents it waits for show that evidence;
//   - every reply carries Run, the delivery count of the command it
//     answers;
//   - a command is acked only after its reply's publish is acknowledged by
//     JetStream; replies carry the deterministic Nats-Msg-Id
//     events.ResultMsgID and the tenant, generation, saga and source
//     headers;
//   - a provision that arrives after its deadline is answered
//     provision_failed (reason "expired") without touching the store;
//   - a lifecycle command (rotate, retire, suspend, resume, observe) is
//     run like a provision — deadline, lock, retries, Run — by
//     lifecycle_run.go; one whose store does not implement the interface is
//     answered <action>_failed, reason "unsupported";
//   - a provision generates a fresh credential (secret.Generate), calls
//     Provision then Verify, and answers provisioned only if every check,
//     including all of RequiredChecks, passed; the credential leaves the
//     process only sealed with age to cfg.ControlPlaneRecipient;
//   - permanent errors (Classify) are answered *_failed and terminated;
//     transient ones are redelivered with exponential, jittered backoff,
//     except that a provision past its deadline, or any command on its
//     cfg.MaxDeliver-th delivery, is answered *_failed (reason
//     store_error) instead: every command is eventually answered;
//   - a command that cannot be decoded, or does not belong to this store,
//     is terminated (never retried), and answered *_failed (reason
//     "invalid") when its tenant, generation and saga can be read;
//   - every error text in a reply or a log line has been through
//     SanitizeText; no credential is ever logged.
//
// Run registers readiness checks (the store's Ping and the consumer) and
// the metrics of NewMetrics on svc.
func Run(ctx context.Context, svc *service.Service, store Store, cfg Config) error {
	if svc == nil || svc.JS == nil || svc.Log == nil || svc.Metrics == nil {
		return errors.New("agent: service is missing its JetStream context, logger or metrics registry")
	}
	if store == nil {
		return errors.New("agent: no store")
	}
	kind := store.Kind()
	if !kind.Valid() {
		return fmt.Errorf("agent: store kind %q is not one of %v", kind, events.Stores())
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("agent configuration: %w", err)
	}
	recipients, err := cfg.Recipients()
	if err != nil {
		return err
	}
	metrics, err := NewMetrics(svc.Metrics)
	if err != nil {
		return err
	}
	r := newRuntime(svc, decorate(store, metrics), cfg, recipients, metrics)

	var consumerReady atomic.Bool
	svc.AddReadiness(string(kind), r.store.Ping)
	svc.WatchConsumer(events.StreamStoreCommands, events.AgentConsumer(kind))
	svc.AddReadiness("agent consumer", func(context.Context) error {
		if !consumerReady.Load() {
			return errors.New("consumer " + events.AgentConsumer(kind) + " not created yet")
		}
		return nil
	})

	locks, err := r.openLocker(ctx)
	if err != nil {
		return err
	}
	r.useLocker(locks)
	cons, err := r.ensureConsumer(ctx)
	if err != nil {
		return err
	}
	if inv, ok := store.(Inventorier); ok && svc.NATS != nil {
		stop, err := ServeInventory(ctx, svc.NATS, kind, inv, r.log)
		if err != nil {
			return err
		}
		defer stop()
	}
	consumerReady.Store(true)
	r.log.Info("agent started",
		zap.String("consumer", events.AgentConsumer(kind)),
		zap.Int("max_in_flight", cfg.MaxInFlight),
		zap.Duration("ack_wait", cfg.AckWait),
		zap.Duration("heartbeat", r.progressEvery),
		zap.Duration("lock_ttl", r.lockTTL),
		zap.Duration("command_timeout", cfg.CommandTimeout),
		zap.Duration("shutdown_timeout", cfg.ShutdownTimeout),
		zap.Int("max_deliver", cfg.MaxDeliver))
	err = r.loop(ctx, cons)
	r.log.Info("agent stopped")
	return err
}

// runtime is one replica's command loop.
type runtime struct {
	store      Store // decorated: sanitised, instrumented, panic-safe
	kind       events.Store
	cfg        Config
	recipients []age.Recipient
	js         jetstream.JetStream
	log        *zap.Logger
	metrics    *Metrics
	source     string

	fetchWait     time.Duration
	progressEvery time.Duration
	now           func() time.Time

	// locks serialises the commands of one tenant across replicas; lockTTL
	// is its entries' lifetime and lockWait how long a command waits for
	// its tenant's lock before it is handed back.
	locks    locker
	lockTTL  time.Duration
	lockWait time.Duration
	holder   string // this replica in a lock's value

	stopping chan struct{} // closed when the loop stops fetching
	stopOnce sync.Once

	// inFlight counts the commands this replica holds; lastBeat is when it
	// last published its progress (unix nanoseconds).
	inFlight atomic.Int64
	lastBeat atomic.Int64
	// publishProgress sends a heartbeat on core NATS; nil without a
	// connection (unit tests).
	publishProgress func(subject string, data []byte) error
}

func newRuntime(svc *service.Service, store Store, cfg Config, recipients []age.Recipient, m *Metrics) *runtime {
	source := svc.Name
	if source == "" {
		source = string(store.Kind()) + "-agent"
	}
	r := &runtime{
		store:         store,
		kind:          store.Kind(),
		cfg:           cfg,
		recipients:    recipients,
		js:            svc.JS,
		log:           svc.Log.With(zap.String("store", string(store.Kind()))),
		metrics:       m,
		source:        source,
		fetchWait:     min(maxFetchWait, cfg.AckWait/2),
		progressEvery: cfg.AckWait / 4,
		now:           time.Now,
		holder:        source + "/" + newCredentialID()[:8],
		stopping:      make(chan struct{}),
	}
	if svc.NATS != nil {
		r.publishProgress = svc.NATS.Publish
	}
	return r
}

// useLocker sets the tenant locks and the waits derived from their TTL.
func (r *runtime) useLocker(l locker) {
	r.locks = l
	r.lockTTL = events.AgentLockTTL
	if kl, ok := l.(*kvLocker); ok {
		r.lockTTL = kl.ttl
	}
	// The longest an abandoned lock can block a command, plus a little.
	r.lockWait = r.lockTTL + time.Second
}

// ensureConsumer creates or updates the shared consumer, retrying until ctx
// is done: NATS may still be electing a stream leader.
func (r *runtime) ensureConsumer(ctx context.Context) (jetstream.Consumer, error) {
	cc := events.AgentConsumerConfig(r.kind, r.cfg.AckWait, ConsumerMaxAckPending)
	backoff := 250 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		cons, err := r.js.CreateOrUpdateConsumer(cctx, events.StreamStoreCommands, cc)
		cancel()
		if err == nil {
			return cons, nil
		}
		r.log.Warn("cannot create the agent consumer; retrying",
			zap.String("consumer", cc.Durable), zap.String("error", SanitizeText(err.Error())), zap.Duration("in", backoff))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("create consumer %s: %w", cc.Durable, errors.Join(ctx.Err(), err))
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// loop fetches one command per free slot — a command is pulled only when a
// worker is free to run it, so no delivered command waits (with its ack
// timer running) for a worker — and handles each on its own goroutine.
// Commands run on a context detached from ctx: cancelling ctx stops
// fetching and lets them finish until cfg.ShutdownTimeout (see drain).
func (r *runtime) loop(ctx context.Context, cons jetstream.Consumer) error {
	slots := make(chan struct{}, r.cfg.MaxInFlight)
	fl := &flight{set: map[*delivery]struct{}{}}
	work := context.WithoutCancel(ctx)
	// SHUTDOWN_TIMEOUT counts from the signal, not from when the loop
	// notices it (a pull may be waiting up to fetchWait).
	var stopAt atomic.Pointer[time.Time]
	defer context.AfterFunc(ctx, func() { now := r.now(); stopAt.Store(&now) })()
	since := func() time.Time {
		if p := stopAt.Load(); p != nil {
			return *p
		}
		return r.now()
	}
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			r.log.Info("stopping: fetching no more commands, finishing those in flight", zap.Int("in_flight", fl.len()))
			r.drain(fl, since())
			return nil
		case slots <- struct{}{}:
		}
		msg, err := cons.Next(jetstream.FetchMaxWait(r.fetchWait))
		r.beat() // fetching: alive, and free to take a command
		if err != nil {
			<-slots
			switch {
			case errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoMessages):
				backoff = 100 * time.Millisecond
				continue
			case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, jetstream.ErrConnectionClosed):
				r.drain(fl, since())
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("fetch commands: %w", err)
			case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
				r.log.Warn("agent consumer is gone; creating it again")
				c, cerr := r.ensureConsumer(ctx)
				if cerr != nil {
					continue // ctx is done
				}
				cons = c
				continue
			}
			r.log.Warn("fetch failed; retrying", zap.String("error", SanitizeText(err.Error())), zap.Duration("in", backoff))
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		if ctx.Err() != nil {
			// Delivered while stopping: hand it straight back so another
			// replica (or this one, restarted) takes it without waiting
			// out AckWait.
			_ = msg.Nak()
			<-slots
			r.metrics.commandDone(r.kind, actionLabel(subjectAction(msg.Subject())), OutcomeInterrupted, 0)
			continue
		}
		d := newDelivery(work, msg)
		fl.add(d)
		go func() {
			defer fl.done(d)
			defer func() { <-slots }()
			r.handle(d)
		}()
	}
}

// errShuttingDown is the cause a command's context is cancelled with when
// the agent stops before the command finished.
var errShuttingDown = errors.New("agent stopping: SHUTDOWN_TIMEOUT reached")

// drain stops lock waits at once, lets the commands in flight finish until
// most of cfg.ShutdownTimeout has passed, then cancels those still running
// (each hands its command back with Nak as its store call returns) and,
// shortly after, hands back whatever is still unsettled itself. It returns
// within cfg.ShutdownTimeout of since (the stop signal), leaving the rest
// of it for the NATS drain.
func (r *runtime) drain(fl *flight, since time.Time) {
	r.stopOnce.Do(func() { close(r.stopping) })
	reserve := min(r.cfg.ShutdownTimeout/5, 2*time.Second)
	if fl.wait(since.Add(r.cfg.ShutdownTimeout - reserve).Sub(r.now())) {
		return
	}
	left := fl.each(func(d *delivery) { d.cancel(errShuttingDown) })
	r.log.Warn("SHUTDOWN_TIMEOUT reached; interrupting the commands still running", zap.Int("in_flight", left))
	if fl.wait(reserve / 2) {
		return
	}
	fl.each(func(d *delivery) {
		if !d.claim() {
			return // its reply is being published and the command settled
		}
		if err := d.msg.Nak(); err != nil {
			r.log.Warn("could not hand an unfinished command back; JetStream redelivers it after AckWait",
				zap.String("error", SanitizeText(err.Error())))
		}
		r.metrics.commandDone(r.kind, actionLabel(subjectAction(d.msg.Subject())), OutcomeInterrupted, 0)
	})
	r.log.Warn("stopped with commands unfinished; they were handed back for redelivery")
}

// delivery is one command delivery in flight.
type delivery struct {
	msg    jetstream.Msg
	n      uint64 // JetStream delivery count (StoreResult.Run)
	ctx    context.Context
	cancel context.CancelCauseFunc
	lease  lease      // the tenant's lock while held
	span   trace.Span // the command's span (the tenant's trace)

	claimed atomic.Bool
}

func newDelivery(work context.Context, msg jetstream.Msg) *delivery {
	d := &delivery{msg: msg, n: 1}
	if md, err := msg.Metadata(); err == nil && md.NumDelivered > 0 {
		d.n = md.NumDelivered
	}
	ctx, span := startCommandSpan(work, msg, d.n)
	d.span = span
	d.ctx, d.cancel = context.WithCancelCause(ctx)
	return d
}

// claim reserves the right to settle the message: the handler claims it
// before it publishes a reply, drain before it hands an unfinished command
// back. Only the first claim succeeds.
func (d *delivery) claim() bool { return d.claimed.CompareAndSwap(false, true) }

// flight is the set of deliveries being handled.
type flight struct {
	mu  sync.Mutex
	set map[*delivery]struct{}
	wg  sync.WaitGroup
}

func (f *flight) add(d *delivery) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.set[d] = struct{}{}
	f.wg.Add(1)
}

func (f *flight) done(d *delivery) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.set, d)
	d.cancel(nil)
	f.wg.Done()
}

func (f *flight) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.set)
}

// each calls fn on every delivery in flight and returns how many there were.
func (f *flight) each(fn func(*delivery)) int {
	f.mu.Lock()
	ds := make([]*delivery, 0, len(f.set))
	for d := range f.set {
		ds = append(ds, d)
	}
	f.mu.Unlock()
	for _, d := range ds {
		fn(d)
	}
	return len(ds)
}

// wait waits up to d for every delivery to finish and reports whether they
// did.
func (f *flight) wait(d time.Duration) bool {
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// ident is what the log and the reply say about a command.
type ident struct {
	tenant     string // empty unless valid
	generation uint64
	saga       string
	action     events.Action // empty if unknown
	attempt    int
	run        uint64 // the delivery count: StoreResult.Run
}

type settlement int

const (
	settleAck  settlement = iota // reply published: ack (DoubleAck)
	settleTerm                   // never redeliver
	settleNak                    // redeliver after delay
)

// verdict is what one delivery comes to.
type verdict struct {
	reply  *events.StoreResult // published before the command is settled; nil for none
	settle settlement
	delay  time.Duration // settleNak only
	reason string        // failure reason code, "" on success
	err    string        // sanitised error text, for the log
	label  string        // metrics outcome of a Nak other than OutcomeRetried
}

// handle works on one delivery from start to settlement, and releases the
// tenant's lock once the command is settled.
func (r *runtime) handle(d *delivery) {
	start := r.now()
	r.metrics.inFlightAdd(r.kind, 1)
	defer r.metrics.inFlightAdd(r.kind, -1)
	r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	stopProgress := r.keepAlive(d.msg)
	id, v := r.decide(d)
	label := r.settle(d, id, &v, start, stopProgress)
	if d.lease != nil {
		d.lease.release(d.ctx)
	}
	took := r.now().Sub(start)
	r.metrics.commandDone(r.kind, actionLabel(id.action), label, took)
	r.logOutcome(id, v, label, d.n, took, telemetry.LogFields(d.ctx)...)
	d.span.SetAttributes(attribute.String("tenantprov.tenant", id.tenant), attribute.String("tenantprov.outcome", label))
	if v.reason != "" {
		d.span.SetAttributes(attribute.String("tenantprov.reason", v.reason))
	}
	if strings.HasSuffix(label, "_failed") || label == OutcomePublishFailed {
		d.span.SetStatus(codes.Error, label)
	}
	d.span.End()
}

func (r *runtime) logOutcome(id ident, v verdict, label string, delivery uint64, d time.Duration, extra ...zap.Field) {
	fields := []zap.Field{
		zap.String("tenant", id.tenant),
		zap.Uint64("generation", id.generation),
		zap.String("saga", id.saga),
		zap.String("action", actionLabel(id.action)),
		zap.String("outcome", label),
		zap.Uint64("delivery", delivery),
		zap.Duration("duration", d),
	}
	if v.reason != "" {
		fields = append(fields, zap.String("reason", v.reason))
	}
	if v.err != "" {
		fields = append(fields, zap.String("error", v.err))
	}
	if v.reply != nil && v.reply.CredentialID != "" {
		fields = append(fields, zap.String("credential_id", v.reply.CredentialID))
	}
	fields = append(fields, extra...)
	switch o := events.Outcome(label); {
	case o.Valid() && o.Succeeded():
		r.log.Info("command done", fields...)
	case label == OutcomeRetried:
		r.log.Warn("command failed; will be redelivered", append(fields, zap.Duration("retry_in", v.delay))...)
	case label == OutcomeLocked:
		r.log.Info("tenant locked by another command; handed back", append(fields, zap.Duration("retry_in", v.delay))...)
	case label == OutcomeInterrupted:
		r.log.Warn("command interrupted; handed back for redelivery", fields...)
	case label == OutcomePublishFailed:
		r.log.Error("reply not published; command will be redelivered", fields...)
	default:
		r.log.Warn("command failed", fields...)
	}
}

// keepAlive signals InProgress every progressEvery until the returned stop
// is called; stop waits for the signalling goroutine to end.
func (r *runtime) keepAlive(msg jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(r.progressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := msg.InProgress(); err != nil {
					r.log.Debug("in-progress signal failed", zap.String("error", SanitizeText(err.Error())))
				}
				r.beat()
			}
		}
	})
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// beat publishes this replica's progress (events.AgentProgress on
// events.ProgressSubject) unless it did so less than progressEvery/2 ago.
// It is called by the fetch loop each time a pull returns and by every
// command's keepAlive, so a replica beats while it fetches or holds a
// command, and falls silent when it dies or its loop and commands are all
// stuck. The orchestrator extends a saga's deadline only while every store
// it waits for beats (services/orchestrator/saga). Best effort: a lost beat
// is covered by the next ones.
func (r *runtime) beat() {
	if r.publishProgress == nil {
		return
	}
	now := r.now()
	last := r.lastBeat.Load()
	if now.UnixNano()-last < int64(r.progressEvery/2) || !r.lastBeat.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	data, err := events.Encode(&events.AgentProgress{Store: r.kind, Source: r.holder, InFlight: int(r.inFlight.Load()), At: now.UTC()})
	if err != nil {
		return
	}
	if err := r.publishProgress(events.ProgressSubject(r.kind), data); err != nil {
		r.log.Debug("progress not published", zap.String("error", SanitizeText(err.Error())))
	}
}

// partialCommand is read from a command that failed validation, to answer
// it if possible.
type partialCommand struct {
	TenantID   string        `json:"tenant_id"`
	Generation uint64        `json:"generation"`
	SagaID     string        `json:"saga_id"`
	Action     events.Action `json:"action"`
	Attempt    int           `json:"attempt"`
}

// decide decodes the command and runs it.
func (r *runtime) decide(d *delivery) (ident, verdict) {
	cmd, err := events.DecodeStoreCommand(d.msg.Data())
	if err == nil {
		err = r.checkRoute(cmd, d.msg.Subject())
	}
	if err != nil {
		return r.invalid(d, err)
	}
	id := ident{tenant: cmd.TenantID, generation: cmd.Generation, saga: cmd.SagaID, action: cmd.Action, attempt: cmd.Attempt, run: d.n}
	return id, r.execute(d, id, cmd)
}

// checkRoute rejects a valid command that does not belong here.
func (r *runtime) checkRoute(cmd *events.StoreCommand, subject string) error {
	if cmd.Store != r.kind {
		return &events.PayloadError{Type: "StoreCommand", Field: "store",
			Reason: fmt.Sprintf("command for store %q delivered to the %s agent", cmd.Store, r.kind)}
	}
	if want := events.CommandSubject(r.kind, cmd.Action); subject != want {
		return &events.PayloadError{Type: "StoreCommand", Field: "action",
			Reason: fmt.Sprintf("action %q does not match subject %q", cmd.Action, events.Truncate(subject, 128))}
	}
	return nil
}

// invalid answers a command that failed decoding or routing, if it can,
// and terminates it.
func (r *runtime) invalid(d *delivery, cause error) (ident, verdict) {
	text := errorText(cause)
	v := verdict{settle: settleTerm, reason: events.ReasonInvalid, err: text}
	var p partialCommand
	if data := d.msg.Data(); len(data) <= events.MaxPayloadBytes {
		_ = json.Unmarshal(data, &p)
	}
	id := ident{action: subjectAction(d.msg.Subject()), run: d.n}
	if !id.action.Valid() && p.Action.Valid() {
		id.action = p.Action
	}
	if _, err := events.ParseTenantID(p.TenantID); err != nil {
		return id, v
	}
	id.tenant, id.generation, id.attempt = p.TenantID, p.Generation, max(p.Attempt, 0)
	if len(p.SagaID) <= 128 && utf8.ValidString(p.SagaID) && !strings.ContainsFunc(p.SagaID, unicode.IsControl) {
		id.saga = p.SagaID
	}
	if id.generation == 0 || id.saga == "" || !id.action.Valid() {
		return id, v
	}
	res := r.newResult(id, failedOutcome(id.action))
	res.Reason = events.ReasonInvalid
	res.Error = text
	v.reply = res
	return id, v
}

// execute runs one valid command of this store: checks that need no store
// call first, then the store work under the tenant's lock.
func (r *runtime) execute(d *delivery, id ident, cmd *events.StoreCommand) verdict {
	delivery := d.n
	if delivery > uint64(r.cfg.MaxDeliver) {
		return r.fail(id, events.ReasonStoreError, fmt.Sprintf(
			"gave up: delivered %d times, more than AGENT_MAX_DELIVER=%d, without an answer (an agent may have crashed or stalled on it); the store was not called on this delivery",
			delivery, r.cfg.MaxDeliver))
	}
	tenant, err := events.ParseTenantID(cmd.TenantID)
	if err != nil { // DecodeStoreCommand validated it; kept for safety
		return r.fail(id, events.ReasonInvalid, errorText(err))
	}
	if !cmd.Action.Valid() {
		return r.fail(id, events.ReasonInvalid, fmt.Sprintf("unknown action %q", cmd.Action))
	}
	// A provision (or a lifecycle command, lifecycle_run.go) never touches
	// the store after its deadline: the saga has given up on it by then. A
	// deprovision (compensation included) is bound only by CommandTimeout.
	ctx := d.ctx
	if deadlineBound(cmd.Action) {
		if r.now().After(cmd.Deadline) {
			return r.expired(id, cmd, delivery, "")
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, cmd.Deadline)
		defer cancel()
	}

	waitStart := r.now()
	lctx, lspan := startSpan(ctx, "lock "+events.AgentLockKey(r.kind, cmd.TenantID))
	l, err := r.lock(lctx, id, cmd)
	endSpan(lspan, err)
	lockWait := r.now().Sub(waitStart)
	r.metrics.lockWaited(r.kind, lockWait)
	if err != nil {
		switch {
		case errors.Is(err, errShuttingDown):
			return verdict{settle: settleNak, reason: "interrupted", err: errorText(err), label: OutcomeInterrupted}
		case deadlineBound(cmd.Action) && r.now().After(cmd.Deadline):
			return r.expired(id, cmd, delivery, " while waiting for the tenant's lock")
		}
		// Held elsewhere for longer than lockWait (or the bucket is
		// unreachable): hand the command back for a moment.
		return verdict{settle: settleNak, delay: backoff(1, time.Second, time.Second), reason: "locked", err: errorText(err), label: OutcomeLocked}
	}
	d.lease = l
	ctx, cancel := context.WithTimeout(ctx, r.cfg.CommandTimeout)
	defer cancel()
	// Losing the lock stops the store work: another replica may take it.
	ctx, cancelCause := context.WithCancelCause(ctx)
	defer cancelCause(nil)
	go func() {
		select {
		case <-l.lost():
			cancelCause(errLockLost)
		case <-ctx.Done():
		}
	}()

	var v verdict
	switch {
	case cmd.Action == events.ActionProvision:
		v = r.provision(ctx, id, tenant, cmd, delivery)
	case isPlanAction(cmd.Action): // plan_run.go
		v = r.runPlan(ctx, id, tenant, cmd, delivery)
	case cmd.Action.Lifecycle(): // lifecycle_run.go
		v = r.lifecycle(ctx, id, tenant, cmd, delivery)
	default:
		v = r.deprovision(ctx, id, tenant, cmd, delivery)
	}
	if v.reply != nil {
		v.reply.TimingsMS = stepTimings(v.reply.TimingsMS, d.msg, waitStart, lockWait)
	}
	return v
}

// expired answers a provision whose deadline passed before this delivery
// called the store.
func (r *runtime) expired(id ident, cmd *events.StoreCommand, delivery uint64, where string) verdict {
	if delivery == 1 {
		return r.fail(id, events.ReasonExpired, fmt.Sprintf(
			"deadline %s passed%s; the store was not touched", cmd.Deadline.UTC().Format(time.RFC3339), where))
	}
	return r.fail(id, events.ReasonStoreError, fmt.Sprintf(
		"deadline %s passed%s while retrying (delivery %d); the store was not called on this delivery", cmd.Deadline.UTC().Format(time.RFC3339), where, delivery))
}

// lockValue is what a tenant's lock holds, for a person reading the
// bucket (`nats kv get agent-locks redis.acme`).
type lockValue struct {
	Holder     string        `json:"holder"`
	Action     events.Action `json:"action"`
	Generation uint64        `json:"generation"`
	SagaID     string        `json:"saga_id"`
	Run        uint64        `json:"run"`
	Since      time.Time     `json:"since"`
}

// lock takes the tenant's lock in this store, waiting up to lockWait while
// another command holds it. It gives up early when ctx ends (a provision's
// deadline) or the agent stops (errShuttingDown).
func (r *runtime) lock(ctx context.Context, id ident, cmd *events.StoreCommand) (lease, error) {
	key := events.AgentLockKey(r.kind, cmd.TenantID)
	value, err := json.Marshal(lockValue{Holder: r.holder, Action: cmd.Action, Generation: cmd.Generation, SagaID: cmd.SagaID, Run: id.run, Since: r.now().UTC()})
	if err != nil {
		return nil, err
	}
	giveUp := time.NewTimer(r.lockWait)
	defer giveUp.Stop()
	poll := 50 * time.Millisecond
	warned := false
	for {
		select {
		case <-r.stopping:
			return nil, errShuttingDown
		default:
		}
		l, err := r.locks.try(ctx, key, value)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, errLockHeld) && !warned {
			warned = true
			telemetry.Logger(ctx, r.log).Warn("cannot take the tenant lock; retrying", zap.String("lock", key), zap.String("error", SanitizeText(err.Error())))
		}
		select {
		case <-r.stopping:
			return nil, errShuttingDown
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (waiting for lock %s)", context.Cause(ctx), key)
		case <-giveUp.C:
			return nil, err
		case <-time.After(poll):
		}
		poll = min(poll*2, 500*time.Millisecond)
	}
}

func (r *runtime) provision(ctx context.Context, id ident, tenant events.TenantID, cmd *events.StoreCommand, delivery uint64) verdict {
	password, err := secret.Generate()
	if err != nil {
		return r.storeFailure(ctx, id, cmd, delivery, err)
	}
	t0 := r.now()
	presp, err := r.store.Provision(ctx, ProvisionRequest{Tenant: tenant, Generation: cmd.Generation, SagaID: cmd.SagaID, Password: password, Plan: cmd.Plan.ForStore(r.kind)})
	t1 := r.now()
	if err != nil {
		return r.storeFailure(ctx, id, cmd, delivery, err, password)
	}
	if len(presp.Credential) == 0 {
		return r.fail(id, events.ReasonStoreError, "the store provisioned the tenant but returned no credential")
	}
	limits, pv := r.provisionPlan(ctx, id, tenant, cmd, delivery, append([]secret.String{password}, credentialSecrets(presp.Credential)...)...) // plan_run.go
	if pv != nil {
		return *pv
	}
	vresp, err := r.store.Verify(ctx, VerifyRequest{Tenant: tenant, Generation: cmd.Generation, Credential: presp.Credential})
	t2 := r.now()
	secrets := append([]secret.String{password}, credentialSecrets(presp.Credential)...)
	if err != nil {
		return r.storeFailure(ctx, id, cmd, delivery, err, secrets...)
	}
	checks := completeChecks(vresp.Checks)
	ver := &events.Verification{Passed: VerifyResponse{Checks: checks}.Passed(), Checks: checks}

	res := r.newResult(id, events.OutcomeProvisioned)
	res.TimingsMS = map[string]float64{events.StepProvision: events.RoundMS(t1.Sub(t0)), events.StepVerify: events.RoundMS(t2.Sub(t1))}
	res.Resources = presp.Resources
	res.Verification = ver
	res.IsolationMode = presp.IsolationMode
	res.Warnings = presp.Warnings
	res.Limits = limits
	if !ver.Passed {
		var failed []string
		for _, c := range checks {
			if !c.Passed {
				failed = append(failed, c.Name)
			}
		}
		res.Outcome = events.OutcomeProvisionFailed
		res.Reason = events.ReasonVerifyFailed
		res.Error = errorText(errors.New("isolation checks failed: " + strings.Join(failed, ", ")))
		return verdict{reply: res, settle: settleTerm, reason: res.Reason, err: res.Error}
	}

	plain, err := json.Marshal(presp.Credential.Plain())
	if err != nil {
		return r.fail(id, events.ReasonStoreError, errorText(fmt.Errorf("encode credential: %w", err), secrets...))
	}
	armored, err := secret.Seal(plain, r.recipients...)
	clear(plain)
	if err != nil {
		return r.fail(id, events.ReasonStoreError, errorText(fmt.Errorf("seal credential: %w", err), secrets...))
	}
	res.Credential = armored
	res.CredentialID = newCredentialID()
	res.TimingsMS[events.StepSeal] = events.RoundMS(r.now().Sub(t2))
	return verdict{reply: res, settle: settleAck}
}

func (r *runtime) deprovision(ctx context.Context, id ident, tenant events.TenantID, cmd *events.StoreCommand, delivery uint64) verdict {
	t0 := r.now()
	dresp, err := r.store.Deprovision(ctx, DeprovisionRequest{Tenant: tenant, Generation: cmd.Generation, SagaID: cmd.SagaID})
	if err != nil {
		return r.storeFailure(ctx, id, cmd, delivery, err)
	}
	res := r.newResult(id, events.OutcomeDeprovisioned)
	res.TimingsMS = map[string]float64{events.StepDeprovision: events.RoundMS(r.now().Sub(t0))}
	for _, s := range dresp.Skipped {
		res.Warnings = append(res.Warnings, "left alone (not created by tenantprov): "+s)
	}
	res.Warnings = append(res.Warnings, dresp.Warnings...)
	return verdict{reply: res, settle: settleAck}
}

// storeFailure decides between retrying and answering *_failed. A store
// call cut short by the agent stopping or by the loss of the tenant's lock
// is handed back unanswered: it did not fail, it was interrupted.
func (r *runtime) storeFailure(ctx context.Context, id ident, cmd *events.StoreCommand, delivery uint64, err error, secrets ...secret.String) verdict {
	text := errorText(err, secrets...)
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errShuttingDown):
		return verdict{settle: settleNak, reason: "interrupted", err: text, label: OutcomeInterrupted}
	case errors.Is(cause, errLockLost):
		return verdict{settle: settleNak, delay: r.retryDelay(delivery), reason: "lock_lost", err: text, label: OutcomeInterrupted}
	}
	permanent, reason := Classify(err)
	if permanent {
		return r.fail(id, knownReason(reason), text)
	}
	if delivery >= uint64(r.cfg.MaxDeliver) {
		return r.fail(id, events.ReasonStoreError, events.Truncate(fmt.Sprintf("%s (gave up after %d deliveries, AGENT_MAX_DELIVER=%d)", text, delivery, r.cfg.MaxDeliver), maxErrorText))
	}
	delay := r.retryDelay(delivery)
	if deadlineBound(cmd.Action) {
		left := cmd.Deadline.Sub(r.now())
		if left <= 0 {
			return r.fail(id, events.ReasonStoreError, events.Truncate(text+" (deadline passed; not retried)", maxErrorText))
		}
		// Come back right after the deadline rather than long after it,
		// so the orchestrator hears of the failure promptly.
		delay = min(delay, left+10*time.Millisecond)
	}
	return verdict{settle: settleNak, delay: delay, reason: events.ReasonStoreError, err: text}
}

// fail answers the command *_failed and terminates it.
func (r *runtime) fail(id ident, reason, text string) verdict {
	res := r.newResult(id, failedOutcome(id.action))
	res.Reason = reason
	res.Error = events.Truncate(text, maxErrorText)
	return verdict{reply: res, settle: settleTerm, reason: reason, err: res.Error}
}

func (r *runtime) newResult(id ident, o events.Outcome) *events.StoreResult {
	return &events.StoreResult{
		TenantID:   id.tenant,
		Generation: id.generation,
		SagaID:     id.saga,
		Store:      r.kind,
		Outcome:    o,
		Attempt:    id.attempt,
		Run:        id.run,
	}
}

// settle publishes the reply (if any) and then acks, terminates or naks
// the command. It returns the metrics outcome label. It does nothing when
// drain already handed the command back.
func (r *runtime) settle(d *delivery, id ident, v *verdict, start time.Time, stopProgress func()) string {
	defer stopProgress()
	if !d.claim() {
		return OutcomeInterrupted
	}
	// The verdict stands even if the command's context was cancelled
	// since: publish and settle on a context of their own.
	ctx, msg, delivery := context.WithoutCancel(d.ctx), d.msg, d.n
	label := OutcomeDropped
	if v.reply != nil {
		v.reply.DurationMS = r.now().Sub(start).Milliseconds()
		v.reply.CompletedAt = r.now().UTC()
		sent, err := r.publish(ctx, v.reply)
		if err != nil {
			stopProgress()
			v.err = errorText(fmt.Errorf("publish reply: %w", err))
			v.delay = r.retryDelay(delivery)
			if nerr := msg.NakWithDelay(v.delay); nerr != nil {
				r.log.Warn("could not hand the command back; JetStream redelivers it after AckWait",
					zap.String("tenant", id.tenant), zap.String("error", SanitizeText(nerr.Error())))
			}
			return OutcomePublishFailed
		}
		if sent != v.reply { // the reply could not be encoded; a failure was sent instead
			v.reply, v.settle, v.reason, v.err = sent, settleTerm, sent.Reason, sent.Error
		}
		label = string(v.reply.Outcome)
	}
	stopProgress()
	var err error
	switch v.settle {
	case settleAck:
		actx, cancel := context.WithTimeout(ctx, publishTimeout)
		err = msg.DoubleAck(actx)
		cancel()
	case settleTerm:
		err = msg.TermWithReason(v.reason)
	case settleNak:
		if v.delay > 0 {
			err = msg.NakWithDelay(v.delay)
		} else {
			err = msg.Nak()
		}
		label = OutcomeRetried
		if v.label != "" {
			label = v.label
		}
	}
	if err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		r.log.Warn("could not settle the command; JetStream redelivers it after AckWait",
			zap.String("tenant", id.tenant), zap.Uint64("generation", id.generation),
			zap.String("error", SanitizeText(err.Error())))
	}
	return label
}

// publish sends res to store.evt.<store>.<outcome> and waits for the
// PubAck. A result that fails the contract's validation is replaced by a
// *_failed result saying so (and that one is returned), so that a bug
// never turns into silence.
func (r *runtime) publish(ctx context.Context, res *events.StoreResult) (*events.StoreResult, error) {
	data, err := events.Encode(res)
	if err != nil {
		fb := &events.StoreResult{
			TenantID: res.TenantID, Generation: res.Generation, SagaID: res.SagaID, Store: res.Store,
			Outcome: failedOutcome(res.Outcome.Action()), Attempt: res.Attempt, Run: res.Run,
			Reason:     events.ReasonStoreError,
			Error:      errorText(fmt.Errorf("the agent's reply could not be encoded: %w", err)),
			DurationMS: res.DurationMS, CompletedAt: res.CompletedAt,
		}
		if data, err = events.Encode(fb); err != nil {
			return nil, fmt.Errorf("encode result: %w", err)
		}
		res = fb
	}
	m := nats.NewMsg(events.EventSubject(r.kind, res.Outcome))
	m.Data = data
	m.Header.Set(events.HeaderTenantID, res.TenantID)
	m.Header.Set(events.HeaderGeneration, strconv.FormatUint(res.Generation, 10))
	m.Header.Set(events.HeaderSagaID, res.SagaID)
	m.Header.Set(events.HeaderSource, r.source)
	ctx, span := tracer().Start(ctx, "publish "+m.Subject, trace.WithSpanKind(trace.SpanKindProducer))
	injectTrace(ctx, m)
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	ack, err := r.js.PublishMsg(pctx, m, jetstream.WithMsgID(events.ResultMsgID(res)))
	if err != nil {
		endSpan(span, err)
		return nil, err
	}
	span.SetAttributes(attribute.Bool("messaging.nats.duplicate", ack.Duplicate))
	span.End()
	return res, nil
}

// retryDelay is RetryBaseDelay·2^(n-1), capped at RetryMaxDelay, with
// "equal jitter" (uniform in [d/2, d]) so that replicas retrying the same
// failure spread out.
func (r *runtime) retryDelay(n uint64) time.Duration {
	return backoff(n, r.cfg.RetryBaseDelay, r.cfg.RetryMaxDelay)
}

func backoff(n uint64, base, ceiling time.Duration) time.Duration {
	d := ceiling
	if n >= 1 && n <= 32 {
		if exp := base << (n - 1); exp > 0 && exp < ceiling {
			d = exp
		}
	}
	half := d / 2
	return half + mrand.N(d-half+1)
}

// completeChecks appends a failed check for every required check the
// store did not report, so that a store that skips one never passes the
// gate.
func completeChecks(checks []events.Check) []events.Check {
	out := append([]events.Check(nil), checks...)
	for _, name := range MissingChecks(checks) {
		out = append(out, events.Check{Name: name, Passed: false, Detail: "not reported by the store"})
	}
	return out
}

func failedOutcome(a events.Action) events.Outcome {
	if a.Valid() {
		return a.FailureOutcome()
	}
	if a.Lifecycle() {
		return a.FailureOutcome()
	}
	return events.OutcomeProvisionFailed
}

func knownReason(reason string) string {
	switch reason {
	case events.ReasonExpired, events.ReasonConflict, events.ReasonInvalid, events.ReasonStoreError,
		events.ReasonVerifyFailed, events.ReasonUnsupported:
		return reason
	}
	return events.ReasonStoreError
}

// subjectAction is the action token of store.cmd.<store>.<action>, or ""
// when the subject has another shape.
func subjectAction(subject string) events.Action {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 {
		return ""
	}
	if a := events.Action(parts[3]); a.Valid() {
		return a
	}
	return ""
}

func actionLabel(a events.Action) string {
	if a.Valid() {
		return string(a)
	}
	return "unknown"
}

// errorText is the sanitised, single-line, bounded text of err: what a
// reply's Error field and a log line carry.
func errorText(err error, secrets ...secret.String) string {
	s := SanitizeText(err.Error(), secrets...)
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	return events.Truncate(s, maxErrorText)
}

// newCredentialID returns 16 random hex characters.
func newCredentialID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b[:])
}

// recovering turns a panic in a store call into a permanent error, so that
// one bad command cannot take the replica (and every command in flight on
// it) down.
func recovering(next Store) Store { return recoveringStore{next: next} }

// decorate wraps a store in the runtime's decorators: spans, sanitised
// errors, metrics, recovered panics. They wrap Store's methods only;
// lifecycleOf finds the optional interfaces underneath.
func decorate(store Store, m *Metrics) Store {
	return Traced(Sanitize(Instrument(recovering(store), m)))
}

type recoveringStore struct{ next Store }

var _ Store = recoveringStore{}

func recoverInto(call string, err *error) {
	if v := recover(); v != nil {
		*err = Permanent(events.ReasonStoreError, fmt.Errorf("store %s panicked: %v", call, v))
	}
}

func (s recoveringStore) Kind() events.Store { return s.next.Kind() }

func (s recoveringStore) Provision(ctx context.Context, req ProvisionRequest) (resp ProvisionResponse, err error) {
	defer recoverInto("provision", &err)
	return s.next.Provision(ctx, req)
}

func (s recoveringStore) Verify(ctx context.Context, req VerifyRequest) (resp VerifyResponse, err error) {
	defer recoverInto("verify", &err)
	return s.next.Verify(ctx, req)
}

func (s recoveringStore) Deprovision(ctx context.Context, req DeprovisionRequest) (resp DeprovisionResponse, err error) {
	defer recoverInto("deprovision", &err)
	return s.next.Deprovision(ctx, req)
}

func (s recoveringStore) Ping(ctx context.Context) (err error) {
	defer recoverInto("ping", &err)
	return s.next.Ping(ctx)
}
