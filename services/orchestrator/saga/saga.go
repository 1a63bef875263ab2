// Package saga is the orchestrator's provisioning saga (DESIGN.md §4): it
// registers requests in the tenants KV bucket, fans commands out to the
// store agents, collects their results, seals the credentials, and on any
// failure or a passed deadline compensates every store.
//
// Its shape: what a tenant record becomes when an event arrives (a request,
// a store result, the clock, an effect executed) is one pure function, Step
// (transition.go), tested as a table. The effects a step calls for — publish
// a command, an outcome or an audit event; put or delete the sealed secrets
// object — are written into the record's outbox by the same compare-and-set
// as the new state, each with a deterministic ID, and executed by whoever
// finds them pending (effects.go): the handler right after its write, or the
// reconciler after a crash. All saga state lives in the registry and the
// streams; a replica keeps nothing in memory another would need.
package saga

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/telemetry"
	"github.com/tenantprov/tenantprov/services/orchestrator/sealer"
)

// Source is the audit source and default actor of the orchestrator.
const Source = "orchestrator"

// Saga runs the provisioning and deprovisioning sagas.
type Saga struct {
	cfg      Config
	log      *zap.Logger
	js       jetstream.JetStream
	reg      *Registry
	secrets  jetstream.ObjectStore
	results  jetstream.Stream
	identity *age.X25519Identity
	sealer   *sealer.Sealer
	metrics  *Metrics
	plans    events.Plans
	book     *timingBook
	// feed is the process's one watch on the registry; watch is the
	// reconciler's index kept from it.
	feed  *registryFeed
	watch *registryWatch
	now   func() time.Time
	// crashAfterWrite makes this replica write registry records but
	// execute none of their effects, as a replica that dies right after
	// each compare-and-set would (tests only).
	crashAfterWrite atomic.Bool
}

// New prepares a saga: it loads the control-plane identity and opens the
// registry, the secrets object store and the results stream (the topology
// must exist; service.Run ensures it).
func New(ctx context.Context, cfg Config, js jetstream.JetStream, log *zap.Logger, m *Metrics) (*Saga, error) {
	id, err := LoadIdentity(cfg.IdentityFile)
	if err != nil {
		return nil, err
	}
	recipients := append([]string{id.Recipient().String()}, strings.FieldsFunc(cfg.OperatorRecipients, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' })...)
	sl, err := sealer.New(recipients...)
	if err != nil {
		return nil, fmt.Errorf("OPERATOR_RECIPIENTS: %w", err)
	}
	kv, err := js.KeyValue(ctx, events.KVTenants)
	if err != nil {
		return nil, fmt.Errorf("open kv %s: %w", events.KVTenants, err)
	}
	obj, err := js.ObjectStore(ctx, events.ObjectStoreSecrets)
	if err != nil {
		return nil, fmt.Errorf("open object store %s: %w", events.ObjectStoreSecrets, err)
	}
	results, err := js.Stream(ctx, events.StreamStoreEvents)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", events.StreamStoreEvents, err)
	}
	plans, err := events.LoadPlans(cfg.PlansFile)
	if err != nil {
		return nil, fmt.Errorf("PLANS_FILE: %w", err)
	}
	if m == nil {
		m = newMetrics(nil)
	}
	s := &Saga{
		cfg: cfg, log: log, js: js, reg: &Registry{kv: kv}, secrets: obj, results: results,
		identity: id, sealer: sl, metrics: m, plans: plans, book: newTimingBook(), now: func() time.Time { return time.Now().UTC() },
	}
	s.feed = newRegistryFeed(s.reg, log)
	s.watch = newRegistryWatch(unsettled, s.settled)
	s.feed.add(s.watch)
	return s, nil
}

// LoadIdentity reads the control-plane age identity from path. The error
// never contains the key.
func LoadIdentity(path string) (*age.X25519Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("control-plane identity: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		return nil, fmt.Errorf("control-plane identity %s: not an age identity file", path)
	}
	for _, id := range ids {
		if x, ok := id.(*age.X25519Identity); ok {
			return x, nil
		}
	}
	return nil, fmt.Errorf("control-plane identity %s: no X25519 identity", path)
}

// Run consumes requests and results and reconciles until ctx is cancelled,
// then finishes in-flight messages and returns.
func (s *Saga) Run(ctx context.Context) error {
	reqs, err := s.js.CreateOrUpdateConsumer(ctx, events.StreamTenants, events.OrchestratorRequestsConfig(s.cfg.AckWait))
	if err != nil {
		return fmt.Errorf("consumer %s: %w", events.ConsumerOrchestratorRequests, err)
	}
	res, err := s.js.CreateOrUpdateConsumer(ctx, events.StreamStoreEvents, events.OrchestratorResultsConfig(s.cfg.AckWait))
	if err != nil {
		return fmt.Errorf("consumer %s: %w", events.ConsumerOrchestratorResults, err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	wg.Add(3)
	go func() { defer wg.Done(); errs <- s.consume(ctx, reqs, s.traced("request", s.handleRequest)) }()
	go func() { defer wg.Done(); errs <- s.consume(ctx, res, s.traced("result", s.handleResult)) }()
	go func() { defer wg.Done(); s.reconcileLoop(ctx); errs <- nil }()
	wg.Wait()
	close(errs)
	var all []error
	for e := range errs {
		if e != nil && !errors.Is(e, context.Canceled) {
			all = append(all, e)
		}
	}
	return errors.Join(all...)
}

// consume pulls from c and hands each message to handle on a bounded pool.
// On cancellation it stops pulling and waits for handlers in flight; their
// work runs on a context detached from ctx so that a rollback is never cut
// short by a shutdown.
func (s *Saga) consume(ctx context.Context, c jetstream.Consumer, handle func(context.Context, jetstream.Msg) error) error {
	// Short pull requests: on a cluster a pull request can be lost while a
	// consumer's leader moves, and a short expiry renews it within
	// seconds instead of after the default 30s.
	it, err := c.Messages(jetstream.PullMaxMessages(s.cfg.Workers), jetstream.PullExpiry(5*time.Second))
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); it.Drain() }()
	sem := make(chan struct{}, s.cfg.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		msg, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			s.log.Warn("pull failed", zap.Error(err))
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			// The handler may take longer than the ack wait (a seal, a
			// slow replica): it tells the server it is alive, so a short
			// ack wait redelivers quickly only what a dead replica held.
			hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), handlerTimeout)
			defer cancel()
			_ = msg.InProgress()
			beat := time.NewTicker(max(s.cfg.AckWait/3, 100*time.Millisecond))
			defer beat.Stop()
			go func() {
				for {
					select {
					case <-hctx.Done():
						return
					case <-beat.C:
						_ = msg.InProgress()
					}
				}
			}()
			if err := handle(hctx, msg); err != nil {
				meta, _ := msg.Metadata()
				delay := time.Second
				if meta != nil {
					delay = min(time.Duration(meta.NumDelivered)*time.Second, 30*time.Second)
				}
				s.log.Warn("message not handled; will retry", zap.String("subject", msg.Subject()), zap.Duration("in", delay), zap.Error(err))
				_ = msg.NakWithDelay(delay)
				return
			}
			if err := msg.DoubleAck(hctx); err != nil {
				s.log.Warn("ack failed; the message will be redelivered and handled idempotently", zap.Error(err))
			}
		}()
	}
}

// logger is the saga's logger with ctx's trace (trace_id, span_id).
func (s *Saga) logger(ctx context.Context) *zap.Logger { return telemetry.Logger(ctx, s.log) }

// handlerTimeout bounds the handling of one message.
const handlerTimeout = 2 * time.Minute

// publish sends p on subject with a deterministic message ID and waits for
// the stream's acknowledgement.
func (s *Saga) publish(ctx context.Context, subject, msgID string, p events.Payload, tenant string, generation uint64) error {
	data, err := events.Encode(p)
	if err != nil {
		return err
	}
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(events.HeaderMsgID, msgID)
	m.Header.Set(events.HeaderSource, Source)
	if tenant != "" {
		m.Header.Set(events.HeaderTenantID, tenant)
	}
	if generation > 0 {
		m.Header.Set(events.HeaderGeneration, fmt.Sprint(generation))
	}
	ctx, span := tracer().Start(ctx, "publish "+subject, trace.WithSpanKind(trace.SpanKindProducer))
	injectTrace(ctx, m)
	err = s.publishMsg(ctx, m)
	endSpan(span, err)
	return err
}
