// Package sink is the audit sink's work: a durable JetStream consumer of the
// AUDIT stream that appends every audit event to the PostgreSQL hash chain
// (pkg/auditlog) exactly once and acknowledges only after the commit.
//
// Delivery is at least once and storage idempotent on event_id, which
// together make each event stored once: a message whose ack is lost (the
// sink dies between commit and ack, the connection drops) is redelivered,
// found already stored and acked as a duplicate. Messages that can never
// be stored go to deadletter.audit with a reason and are terminated, so
// one bad message never holds up the stream. Any number of replicas share
// the durable consumer; appends serialise on the chain lock.
package sink

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/auditlog"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// Defaults for Options.
const (
	DefaultBatchSize = 100
	MaxBatchSize     = 1000
	DefaultAckWait   = 30 * time.Second
	// DefaultAnchorInterval is how often the head is anchored at the
	// latest while the chain grows.
	DefaultAnchorInterval = 2 * time.Second
)

// DB is what the sink needs of the writer's pool: *pgxpool.Pool.
type DB interface {
	auditlog.TxBeginner
	auditlog.Querier
}

// Options configure a Sink. JS, DB, Log and Metrics are required.
type Options struct {
	JS      jetstream.JetStream
	DB      DB // the writer role's pool
	Log     *zap.Logger
	Metrics *Metrics
	// BatchSize is the most events appended in one transaction; the sink
	// never waits to fill a batch, it takes what has arrived.
	BatchSize int
	// AckWait is the consumer's ack wait: a message not acked within it is
	// redelivered (to any replica).
	AckWait time.Duration
	// WriteTimeout bounds one append transaction (default AckWait/2, so a
	// batch commits well before its messages would be redelivered).
	WriteTimeout time.Duration
	// PublishTimeout bounds a dead-letter publish (default 5s).
	PublishTimeout time.Duration
	// AnchorInterval is the longest the chain head goes unanchored while
	// the chain grows (default DefaultAnchorInterval); the head is also
	// anchored right after every committed batch.
	AnchorInterval time.Duration
	// AnchoredBy names this replica in its anchors (default
	// "audit-sink@<hostname>").
	AnchoredBy string
	// RetryDelay is the first delay after a failed write, doubling up to
	// MaxRetryDelay while failures continue (defaults 250ms, 10s).
	RetryDelay, MaxRetryDelay time.Duration
}

func (o *Options) defaults() error {
	var errs []error
	if o.JS == nil {
		errs = append(errs, errors.New("JS is required"))
	}
	if o.DB == nil {
		errs = append(errs, errors.New("DB is required"))
	}
	if o.Metrics == nil {
		errs = append(errs, errors.New("Metrics is required"))
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.BatchSize == 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.BatchSize < 1 || o.BatchSize > MaxBatchSize {
		errs = append(errs, fmt.Errorf("BatchSize %d outside 1–%d", o.BatchSize, MaxBatchSize))
	}
	if o.AckWait == 0 {
		o.AckWait = DefaultAckWait
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = o.AckWait / 2
	}
	if o.PublishTimeout == 0 {
		o.PublishTimeout = 5 * time.Second
	}
	if o.AnchorInterval == 0 {
		o.AnchorInterval = DefaultAnchorInterval
	}
	if o.AnchorInterval < 0 {
		errs = append(errs, fmt.Errorf("AnchorInterval %s is negative", o.AnchorInterval))
	}
	if o.AnchoredBy == "" {
		host, _ := os.Hostname()
		o.AnchoredBy = "audit-sink@" + host
	}
	if o.RetryDelay == 0 {
		o.RetryDelay = 250 * time.Millisecond
	}
	if o.MaxRetryDelay == 0 {
		o.MaxRetryDelay = 10 * time.Second
	}
	return errors.Join(errs...)
}

// Sink consumes the AUDIT stream into the audit log. Create it with New
// and start it with Run; a Sink runs once.
type Sink struct {
	opts    Options
	log     *zap.Logger
	metrics *Metrics

	// anchorNow asks the anchoring loop to anchor the head (a batch
	// committed); it holds at most one request.
	anchorNow chan struct{}
	// lastMismatch and lastMismatchLog throttle the tampering log line
	// (anchorLoop only).
	lastMismatch    string
	lastMismatchLog time.Time

	// afterCommit, when set (tests only), runs after a batch commits and
	// before its messages are acked; an error stops Run right there, as if
	// the process died.
	afterCommit func() error
}

// New checks opts and returns a Sink.
func New(opts Options) (*Sink, error) {
	if err := opts.defaults(); err != nil {
		return nil, fmt.Errorf("audit sink options: %w", err)
	}
	return &Sink{opts: opts, log: opts.Log, metrics: opts.Metrics, anchorNow: make(chan struct{}, 1)}, nil
}

// errCrashed is what Run returns when the afterCommit hook stops it.
var errCrashed = errors.New("audit sink stopped between commit and ack (test hook)")

// Run consumes until ctx is cancelled, then finishes the batch in flight
// (commit and ack), hands back the messages it holds (nak) and returns nil.
// It returns an error only when the consumer cannot be created or goes
// away; a supervisor then restarts the process. Outages of NATS or
// PostgreSQL do not stop it: it waits and retries.
func (s *Sink) Run(ctx context.Context) error {
	cons, err := s.opts.JS.CreateOrUpdateConsumer(ctx, events.StreamAudit, events.AuditSinkConfig(s.opts.AckWait))
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create consumer %s on %s: %w", events.ConsumerAuditSink, events.StreamAudit, err)
	}
	anchors, err := auditlog.OpenAnchors(ctx, s.opts.JS)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w (events.Topology.Ensure creates it)", err)
	}
	actx, stopAnchoring := context.WithCancel(context.WithoutCancel(ctx))
	anchoringDone := make(chan struct{})
	go func() {
		defer close(anchoringDone)
		s.anchorLoop(actx, auditlog.NewAnchorer(anchors, s.opts.DB, s.opts.AnchoredBy))
	}()
	// Runs last (defers are LIFO): one final anchor for the last batch.
	defer func() { stopAnchoring(); <-anchoringDone }()
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * s.opts.BatchSize))
	if err != nil {
		return fmt.Errorf("consume %s: %w", events.StreamAudit, err)
	}
	// On the way out, drain the iterator: the reader hands back (naks)
	// everything fetched but not written, so another replica gets it now
	// rather than after AckWait.
	rctx, cancel := context.WithCancel(ctx)
	stopDrain := context.AfterFunc(rctx, it.Drain)
	defer stopDrain()
	msgs := make(chan jetstream.Msg, s.opts.BatchSize)
	readErr := make(chan error, 1)
	readerDone := make(chan struct{})
	go s.read(rctx, it, msgs, readErr, readerDone)
	defer func() {
		cancel()
		// Should the drain hang (NATS gone), stop: the server redelivers
		// after AckWait anyway.
		t := time.AfterFunc(s.opts.PublishTimeout, it.Stop)
		defer t.Stop()
		for m := range msgs {
			_ = m.Nak()
		}
		<-readerDone
	}()

	s.log.Info("consuming audit events", zap.String("stream", events.StreamAudit),
		zap.String("consumer", events.ConsumerAuditSink), zap.Int("batch_size", s.opts.BatchSize),
		zap.Duration("ack_wait", s.opts.AckWait))
	failures := 0
	batch := make([]jetstream.Msg, 0, s.opts.BatchSize)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			return err
		case m, ok := <-msgs:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("consume %s: the message iterator closed unexpectedly", events.StreamAudit)
			}
			batch = append(batch, m)
		}
	fill:
		for len(batch) < s.opts.BatchSize {
			select {
			case m, ok := <-msgs:
				if !ok {
					break fill
				}
				batch = append(batch, m)
			default:
				break fill
			}
		}
		err := s.handle(ctx, batch, s.retryDelay(failures))
		switch {
		case errors.Is(err, errCrashed):
			return err
		case err != nil:
			failures++
			if !sleep(ctx, s.retryDelay(failures)) {
				return nil
			}
		default:
			failures = 0
		}
	}
}

// read moves messages from the iterator to msgs until the iterator is
// closed; once ctx is done it naks them instead.
func (s *Sink) read(ctx context.Context, it jetstream.MessagesContext, msgs chan<- jetstream.Msg, readErr chan<- error, done chan<- struct{}) {
	defer close(done)
	defer close(msgs)
	for {
		m, err := it.Next()
		switch {
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			return
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
			readErr <- fmt.Errorf("consumer %s: %w", events.ConsumerAuditSink, err)
			return
		case err != nil:
			// Heartbeats missed while NATS is away: the iterator keeps
			// trying; say so and wait for it.
			s.log.Warn("audit consumer", zap.Error(err))
			continue
		}
		if ctx.Err() != nil {
			_ = m.Nak() // draining
			continue
		}
		select {
		case msgs <- m:
		case <-ctx.Done():
			_ = m.Nak()
		}
	}
}

// handle decodes a batch, dead-letters what cannot be stored and appends
// the rest. It returns an error when the append failed for a reason that a
// retry may cure (the messages were nak'ed with delay).
func (s *Sink) handle(ctx context.Context, batch []jetstream.Msg, delay time.Duration) error {
	entries := make([]*auditlog.Entry, 0, len(batch))
	owners := make([]jetstream.Msg, 0, len(batch))
	for _, m := range batch {
		ev, err := events.DecodeAuditEvent(m.Data())
		if err == nil {
			var e *auditlog.Entry
			if e, err = auditlog.Prepare(ev); err == nil {
				entries = append(entries, e)
				owners = append(owners, m)
				continue
			}
		}
		s.deadLetter(ctx, m, reasonFor(err), err)
	}
	return s.write(ctx, entries, owners, delay)
}

// write appends entries and acks their messages after the commit.
func (s *Sink) write(ctx context.Context, entries []*auditlog.Entry, msgs []jetstream.Msg, delay time.Duration) error {
	if len(entries) == 0 {
		return nil
	}
	// The write survives cancellation of ctx (SIGTERM): a batch in flight
	// commits and is acked rather than being redelivered.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.WriteTimeout)
	defer cancel()
	begin := time.Now()
	spans := startInsertSpans(ctx, entries, msgs)
	outs, err := auditlog.Append(wctx, s.opts.DB, entries)
	spans.end(outs, err)
	s.metrics.WriteSeconds.Observe(time.Since(begin).Seconds())
	if err != nil {
		if auditlog.IsDataError(err) {
			if len(entries) == 1 {
				s.deadLetter(ctx, msgs[0], ReasonRejected, err)
				return nil
			}
			// One entry spoils the batch: write them one by one so that
			// only that one is dead-lettered.
			var errs []error
			for i := range entries {
				errs = append(errs, s.write(ctx, entries[i:i+1], msgs[i:i+1], delay))
			}
			return errors.Join(errs...)
		}
		s.metrics.WriteErrors.Inc()
		s.log.Warn("append to audit chain failed; will retry", zap.Int("events", len(entries)),
			zap.Duration("retry_in", delay), zap.Error(err))
		for _, m := range msgs {
			_ = m.NakWithDelay(delay)
		}
		return err
	}
	s.metrics.BatchSize.Observe(float64(len(entries)))
	if s.afterCommit != nil {
		if err := s.afterCommit(); err != nil {
			return fmt.Errorf("%w: %w", errCrashed, err)
		}
	}
	select {
	case s.anchorNow <- struct{}{}:
	default: // a request is pending already
	}
	for i, m := range msgs {
		if outs[i].Duplicate {
			s.metrics.Duplicates.Inc()
			s.log.Debug("duplicate audit event skipped", zap.String("event_id", entries[i].Event.EventID), zap.Int64("seq", outs[i].Seq))
		} else {
			s.metrics.Written.Inc()
		}
		if err := m.Ack(); err != nil {
			// Redelivery will find the row and ack it as a duplicate.
			s.log.Warn("ack after commit failed", append(spans.logFields(i), zap.String("event_id", entries[i].Event.EventID), zap.Error(err))...)
		}
	}
	return nil
}

// anchorLoop anchors the chain head whenever a batch commits and every
// AnchorInterval, until ctx ends; then it anchors once more.
func (s *Sink) anchorLoop(ctx context.Context, a *auditlog.Anchorer) {
	t := time.NewTicker(s.opts.AnchorInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.PublishTimeout)
			s.anchor(fctx, a)
			cancel()
			return
		case <-s.anchorNow:
		case <-t.C:
		}
		actx, cancel := context.WithTimeout(ctx, s.opts.AnchorInterval+s.opts.PublishTimeout)
		s.anchor(actx, a)
		cancel()
	}
}

// anchor anchors the head once and reports what happened.
func (s *Sink) anchor(ctx context.Context, a *auditlog.Anchorer) {
	res, err := a.Anchor(ctx)
	switch {
	case errors.Is(err, auditlog.ErrAnchorMismatch):
		// Never overwrite the anchor: it is the evidence.
		s.metrics.AnchorMismatches.Inc()
		if err.Error() == s.lastMismatch && time.Since(s.lastMismatchLog) < time.Minute {
			return
		}
		s.lastMismatch, s.lastMismatchLog = err.Error(), time.Now()
		s.log.Error("AUDIT CHAIN TAMPERING: the database contradicts the anchored head; not anchoring until an operator investigates (tenantctl audit --verify)",
			zap.Error(err))
	case err != nil:
		s.metrics.AnchorErrors.Inc()
		s.log.Warn("anchor audit chain head failed; will retry", zap.Error(err))
	default:
		s.metrics.AnchoredSeq.Set(float64(res.Anchor.Seq))
		if res.Written {
			s.metrics.Anchors.Inc()
			s.log.Debug("anchored audit chain head", zap.Int64("seq", res.Anchor.Seq), zap.String("hash", res.Anchor.Hash))
		}
	}
}

func (s *Sink) retryDelay(failures int) time.Duration {
	d := s.opts.RetryDelay
	for range min(failures, 16) {
		d *= 2
		if d >= s.opts.MaxRetryDelay {
			return s.opts.MaxRetryDelay
		}
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func zapSubject(m jetstream.Msg) zap.Field { return zap.String("subject", m.Subject()) }
func zapReason(r string) zap.Field         { return zap.String("reason", r) }
func zapErr(err error) zap.Field           { return zap.Error(err) }
