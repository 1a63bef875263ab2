package saga

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// registryUpdate is one registry entry as the watch delivered it, decoded
// once for every consumer: rec is nil for a delete or purge (op), and when
// the value does not decode (err).
type registryUpdate struct {
	key string
	op  jetstream.KeyValueOp
	rec *events.TenantRecord
	err error
}

func (u registryUpdate) put() bool { return u.op == jetstream.KeyValuePut }

// feedConsumer is an in-memory index kept from the registry watch.
type feedConsumer interface {
	apply(u registryUpdate)
}

// registryFeed is the one watch on the tenants bucket of an orchestrator
// process: it hands each update to every consumer (the reconciler's
// candidates and schedule, the observation schedule), so a registry write
// is delivered once per replica, and the bucket is replayed once at start.
//
// The watch runs while at least one user (the reconcile loop, the
// observer) runs; a consumer registered while it runs restarts it, so the
// newcomer sees the whole bucket (the others see it again: applying an
// update twice leaves an index as it was). On error the watch restarts
// after a second.
type registryFeed struct {
	reg *Registry
	log *zap.Logger

	mu        sync.Mutex
	consumers []feedConsumer
	added     int // consumers ever added: a watch that began with fewer restarts
	users     int
	stop      context.CancelFunc // of the running watch loop; nil: none
	restart   chan struct{}
}

func newRegistryFeed(reg *Registry, log *zap.Logger) *registryFeed {
	return &registryFeed{reg: reg, log: log, restart: make(chan struct{}, 1)}
}

// add registers c for every update from now on, and the whole bucket.
func (f *registryFeed) add(c feedConsumer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.consumers = append(f.consumers, c)
	f.added++
	if f.stop != nil {
		select {
		case f.restart <- struct{}{}:
		default:
		}
	}
}

// use keeps the watch running until ctx is cancelled (and every other
// user's context).
func (f *registryFeed) use(ctx context.Context) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users++
	if f.stop == nil {
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f.stop = cancel
		go f.loop(wctx)
	}
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.users--; f.users == 0 {
			f.stop()
			f.stop = nil
		}
	}()
}

var errFeedRestart = errors.New("registry watch restarted for a new consumer")

func (f *registryFeed) loop(ctx context.Context) {
	for ctx.Err() == nil {
		err := f.watch(ctx)
		if err == nil || errors.Is(err, errFeedRestart) || ctx.Err() != nil {
			continue
		}
		f.log.Warn("registry watch stopped; restarting", zap.Error(err))
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// watch follows the bucket, from a replay of its current values, until
// ctx is cancelled, a consumer is added, or the watch fails.
func (f *registryFeed) watch(ctx context.Context) error {
	f.mu.Lock()
	consumers := append([]feedConsumer(nil), f.consumers...)
	f.mu.Unlock()
	stale := func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.added != len(consumers)
	}
	kw, err := f.reg.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch registry: %w", err)
	}
	defer func() { _ = kw.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-f.restart:
			if stale() {
				return errFeedRestart
			}
		case e, ok := <-kw.Updates():
			if !ok {
				return errors.New("registry watch closed")
			}
			if e == nil {
				continue // initial values delivered
			}
			u := registryUpdate{key: e.Key(), op: e.Operation()}
			if u.put() {
				if u.rec, u.err = events.DecodeTenantRecord(e.Value()); u.err != nil {
					u.rec = nil
				}
			}
			for _, c := range consumers {
				c.apply(u)
			}
		}
	}
}
