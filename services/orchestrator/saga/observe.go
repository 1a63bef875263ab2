package saga

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// ObserveConfig configures drift observation and the orphan sweep
// (DESIGN.md §10), environment variables in tags.
type ObserveConfig struct {
	// ObserveInterval is how often each settled tenant's slices are
	// observed (0: never periodically). Each tenant has its own slot in
	// the interval (a hash of its ID), so observations are spread evenly.
	ObserveInterval time.Duration `env:"OBSERVE_INTERVAL" envDefault:"10m"`
	// DriftRepair is auto (agents repair grants and markers; lost data is
	// reported) or report (nothing is changed).
	DriftRepair string `env:"DRIFT_REPAIR" envDefault:"auto"`
	// ObserveTimeout bounds one observation: the deadline of an observe
	// command (an agent that gets it later answers expired, untouched).
	ObserveTimeout time.Duration `env:"OBSERVE_TIMEOUT" envDefault:"2m"`
	// ObserveMaxDefer is how long a periodic observation that fell due
	// while sagas are in flight may wait for them (0: it never waits).
	// Observations share the agents' work queues with provisioning: they
	// yield to it, but never for longer than this.
	ObserveMaxDefer time.Duration `env:"OBSERVE_MAX_DEFER" envDefault:"5m"`
	// OrphanSweepInterval is how often the stores' inventories are
	// compared with the registry for orphans (0: never).
	OrphanSweepInterval time.Duration `env:"ORPHAN_SWEEP_INTERVAL" envDefault:"15m"`
	// OrphanGrace is how long an orphan of ours stays after it was first
	// seen before it is removed.
	OrphanGrace time.Duration `env:"ORPHAN_GRACE" envDefault:"1h"`
	// InventoryTimeout bounds each store's inventory answer in a sweep.
	InventoryTimeout time.Duration `env:"ORPHAN_INVENTORY_TIMEOUT" envDefault:"2m"`
}

// Validate reports every problem at once.
func (c *ObserveConfig) Validate() error {
	var errs []error
	if c.ObserveInterval < 0 {
		errs = append(errs, errors.New("OBSERVE_INTERVAL: must be >= 0 (0 turns periodic observation off)"))
	}
	if c.DriftRepair != "auto" && c.DriftRepair != "report" {
		errs = append(errs, fmt.Errorf("DRIFT_REPAIR: %q, want auto or report", events.Truncate(c.DriftRepair, 32)))
	}
	if c.ObserveTimeout <= 0 {
		errs = append(errs, errors.New("OBSERVE_TIMEOUT: must be positive"))
	}
	if c.ObserveMaxDefer < 0 {
		errs = append(errs, errors.New("OBSERVE_MAX_DEFER: must be >= 0 (0: observations never wait for sagas in flight)"))
	}
	if c.OrphanSweepInterval < 0 {
		errs = append(errs, errors.New("ORPHAN_SWEEP_INTERVAL: must be >= 0 (0 turns the sweep off)"))
	}
	if c.OrphanGrace <= 0 {
		errs = append(errs, errors.New("ORPHAN_GRACE: must be positive"))
	}
	if c.InventoryTimeout <= 0 {
		errs = append(errs, errors.New("ORPHAN_INVENTORY_TIMEOUT: must be positive"))
	}
	return errors.Join(errs...)
}

// Observer schedules observations — periodic and on demand — and runs the
// orphan sweep. Every orchestrator replica runs one; the commands they send
// carry the same message IDs, so JetStream keeps one of each, and the work
// queue gives each to exactly one agent replica.
//
// Cost: the schedule is kept from a watch on the registry, in memory, as
// one small entry per observable tenant (ID, generation, saga ID, the
// stores provisioned and their credential versions; about 200 bytes, so
// some 2 MB at 10,000 tenants), fed by the process's one registry watch
// (registryFeed), and a min-heap of each tenant's next slot: a tick pops
// only the tenants whose slot came, O(due · log n); the registry is never
// listed per tick, and the index never scanned.
type Observer struct {
	s     *Saga
	cfg   ObserveConfig
	index *observeIndex
	now   func() time.Time
}

// NewObserver prepares an observer for s.
func NewObserver(s *Saga, cfg ObserveConfig) *Observer {
	o := &Observer{s: s, cfg: cfg, index: newObserveIndex(cfg.ObserveInterval), now: s.now}
	if cfg.ObserveInterval > 0 {
		s.feed.add(o.index)
	}
	return o
}

// Run schedules observations and sweeps orphans until ctx is cancelled.
func (o *Observer) Run(ctx context.Context) error {
	cons, err := o.s.js.CreateOrUpdateConsumer(ctx, events.StreamTenants, events.OrchestratorObserveConfig(o.s.cfg.AckWait))
	if err != nil {
		return fmt.Errorf("consumer %s: %w", events.ConsumerOrchestratorObserve, err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	wg.Add(3)
	go func() { defer wg.Done(); errs <- o.s.consume(ctx, cons, o.handleObserveRequest) }()
	go func() {
		defer wg.Done()
		if o.cfg.ObserveInterval <= 0 {
			return
		}
		o.s.feed.use(ctx)
		o.schedule(ctx)
	}()
	go func() {
		defer wg.Done()
		if o.cfg.OrphanSweepInterval > 0 {
			o.sweepLoop(ctx)
		}
	}()
	wg.Wait()
	if err := <-errs; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// observeEntry is what the schedule keeps of one observable tenant.
type observeEntry struct {
	generation uint64
	sagaID     string
	// versions holds the credential version of each provisioned store
	// (0: the store is not provisioned, not observed), in Stores() order.
	versions [4]int32
	// offset is the tenant's slot within the interval.
	offset time.Duration
	// stay numbers the tenant's stay in the index: slots queued in an
	// earlier stay (it left and came back) are skipped.
	stay uint64
}

// observeIndex is the observation schedule: the observable tenants, and a
// min-heap of each one's next slot.
type observeIndex struct {
	interval time.Duration
	mu       sync.Mutex
	m        map[string]observeEntry
	slots    timeHeap[slotItem]
	// mark is the now of the last due: slots up to it were looked at.
	mark  time.Time
	stays uint64
	// popped counts slots taken from the heap (tests).
	popped int
}

func newObserveIndex(interval time.Duration) *observeIndex {
	return &observeIndex{interval: interval, m: map[string]observeEntry{}}
}

// slotItem is the tenant (and its stay) a slot in the schedule's heap is
// for. Slots of a tenant that left the index stay in the heap and are
// skipped when popped.
type slotItem struct {
	id   string
	stay uint64
}

// entryOf returns the schedule entry of rec, or false if it is not to be
// observed.
func entryOf(rec *events.TenantRecord) (observeEntry, bool) {
	if rec == nil || !Observable(rec.State) {
		return observeEntry{}, false
	}
	e := observeEntry{generation: rec.Generation, sagaID: rec.SagaID}
	has := false
	for i, store := range events.Stores() {
		if st := rec.Stores[store]; st != nil && st.State == events.StoreProvisioned {
			e.versions[i] = int32(max(st.CredentialVersion, 1))
			has = true
		}
	}
	return e, has
}

// apply indexes one registry update: an observable tenant is kept (its
// entry follows the record), any other is dropped. A tenant that enters
// the index is queued at its first slot after the last due (before the
// first due: at once, and that due decides).
func (ix *observeIndex) apply(u registryUpdate) {
	entry, ok := entryOf(u.rec)
	ix.mu.Lock()
	defer ix.mu.Unlock()
	old, had := ix.m[u.key]
	switch {
	case !ok:
		delete(ix.m, u.key)
	case had:
		entry.offset, entry.stay = old.offset, old.stay
		ix.m[u.key] = entry
	default:
		ix.stays++
		entry.offset, entry.stay = slotOffset(u.key, ix.interval), ix.stays
		ix.m[u.key] = entry
		var at time.Time
		if !ix.mark.IsZero() {
			_, last := lastSlot(ix.mark, entry.offset, ix.interval)
			at = last.Add(ix.interval)
		}
		ix.slots.Push(at, slotItem{id: u.key, stay: entry.stay})
		if ix.slots.Len() > 2*len(ix.m)+1024 {
			ix.compact()
		}
	}
}

// compact drops the slots of earlier stays, which tenants that keep
// leaving and coming back (or no due popping them) would pile up: it runs
// after more re-entries than tenants, so it costs O(1) a re-entry.
func (ix *observeIndex) compact() {
	ix.slots.Filter(func(it slotItem) bool {
		e, ok := ix.m[it.id]
		return ok && e.stay == it.stay
	})
}

// slotOffset is tenant's slot within interval: a hash of its ID, so that
// 10,000 tenants are spread evenly and every replica computes the same.
func slotOffset(tenant string, interval time.Duration) time.Duration {
	h := fnv.New64a()
	_, _ = h.Write([]byte(tenant))
	return time.Duration(h.Sum64() % uint64(interval))
}

// lastSlot returns the latest slot of a tenant with offset at or before
// now: its number (counted from the Unix epoch) and its time.
func lastSlot(now time.Time, offset, interval time.Duration) (int64, time.Time) {
	n := (now.UnixNano() - int64(offset)) / int64(interval)
	return n, time.Unix(0, n*int64(interval)+int64(offset)).UTC()
}

// due returns the tenants whose slot fell in (after, now], with the slot
// number; after is the previous call's now. It pops only the slots that
// came (and those of tenants that left), and queues each tenant's next
// slot after now: a slot missed while no replica ran is not made up.
func (ix *observeIndex) due(after, now time.Time) map[string]int64 {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	out := map[string]int64{}
	for ix.slots.Len() > 0 && !ix.slots.Peek().After(now) {
		_, it := ix.slots.Pop()
		ix.popped++
		e, ok := ix.m[it.id]
		if !ok || e.stay != it.stay {
			continue // left the index (perhaps to come back, queued anew)
		}
		n, at := lastSlot(now, e.offset, ix.interval)
		if at.After(after) {
			out[it.id] = n
		}
		ix.slots.Push(at.Add(ix.interval), it)
	}
	ix.mark = now
	return out
}

// size is the number of observable tenants.
func (ix *observeIndex) size() int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return len(ix.m)
}

func (ix *observeIndex) get(id string) (observeEntry, bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	e, ok := ix.m[id]
	return e, ok
}

// schedule sends each observable tenant's observations in its slot, once
// per interval, until ctx is cancelled. A slot missed while no replica ran
// is not made up: the next one comes within the interval.
func (o *Observer) schedule(ctx context.Context) {
	interval := o.cfg.ObserveInterval
	tick := min(max(interval/100, 50*time.Millisecond), time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	last := o.now()
	var q observeQueue
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := o.now()
		q.add(o.index.due(last, now), now)
		busy := o.cfg.ObserveMaxDefer > 0 && o.s.watch.inFlight() > 0
		// Twice the steady rate, so that a backlog left by a busy spell
		// drains in about the time it took to build up, without filling
		// the agents' queues ahead of the next saga's commands.
		budget := max(1, int(2*float64(o.index.size())*float64(tick)/float64(interval)))
		sent := q.take(now, busy, o.cfg.ObserveMaxDefer, budget)
		o.s.metrics.observationsDeferred.Set(float64(len(q.order)))
		for _, d := range sent {
			e, ok := o.index.get(d.id)
			if !ok {
				continue
			}
			if err := o.sendObserve(ctx, d.id, e, fmt.Sprintf("s%d", d.slot), now); err != nil && ctx.Err() == nil {
				o.s.log.Warn("observe command not sent; the next slot will", zap.String("tenant", d.id), zap.Error(err))
			}
		}
		last = now
	}
}

// observeQueue holds periodic observations that fell due, in the order
// they did, until they are sent: at once when no saga is in flight (at a
// bounded rate), or after waiting ObserveMaxDefer for the sagas in flight
// to finish. A tenant is queued once, for its latest slot.
type observeQueue struct {
	order  []queuedObservation
	queued map[string]int64 // tenant -> latest due slot
}

type queuedObservation struct {
	id    string
	slot  int64
	since time.Time
}

func (q *observeQueue) add(due map[string]int64, now time.Time) {
	if q.queued == nil {
		q.queued = map[string]int64{}
	}
	ids := make([]string, 0, len(due))
	for id := range due {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if _, ok := q.queued[id]; !ok {
			q.order = append(q.order, queuedObservation{id: id, since: now})
		}
		q.queued[id] = due[id]
	}
}

// take removes and returns what is to be sent now: while busy, only what
// has waited maxDefer; otherwise up to budget more, oldest first.
func (q *observeQueue) take(now time.Time, busy bool, maxDefer time.Duration, budget int) []queuedObservation {
	var out []queuedObservation
	sent := 0
	for len(q.order) > 0 {
		d := q.order[0]
		overdue := now.Sub(d.since) >= maxDefer
		if !overdue && (busy || sent >= budget) {
			break
		}
		q.order = q.order[1:]
		d.slot = q.queued[d.id]
		delete(q.queued, d.id)
		out = append(out, d)
		sent++
	}
	if len(q.order) == 0 {
		q.order = nil // let the backing array go
	}
	return out
}

// sendObserve publishes observe to every store e is provisioned in. slot
// names the occasion (a periodic slot, an operator's request) in the
// message ID, so that replicas sending the same occasion are de-duplicated.
func (o *Observer) sendObserve(ctx context.Context, id string, e observeEntry, slot string, now time.Time) error {
	var errs []error
	for i, store := range events.Stores() {
		if e.versions[i] == 0 {
			continue
		}
		cmd := &events.StoreCommand{TenantID: id, Generation: e.generation, SagaID: e.sagaID, Store: store, Action: events.ActionObserve,
			IssuedAt: now, Deadline: now.Add(o.cfg.ObserveTimeout), CredentialVersion: int(e.versions[i]), Repair: o.cfg.DriftRepair == "auto"}
		msgID := events.MsgID{Kind: "cmd", Tenant: id, Generation: e.generation, Store: store, Step: string(events.ActionObserve) + ":" + slot}.String()
		if err := o.s.publish(ctx, events.CommandSubject(store, events.ActionObserve), msgID, cmd, id, e.generation); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", store, err))
			continue
		}
	}
	return errors.Join(errs...)
}

// handleObserveRequest turns tenant.observe.requested into observe
// commands for the tenant's provisioned stores, or rejects it when the
// tenant is not settled with resources.
func (o *Observer) handleObserveRequest(ctx context.Context, msg jetstream.Msg) error {
	req, err := events.DecodeLifecycleRequested(msg.Data())
	if err != nil {
		return o.s.reject(ctx, msg, err.Error())
	}
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("request metadata: %w", err)
	}
	rec, _, err := o.s.reg.Get(ctx, req.TenantID)
	if err != nil {
		return err
	}
	e, ok := entryOf(rec)
	if !ok {
		state := "unknown"
		if rec != nil {
			state = string(rec.State)
		}
		return o.s.reject(ctx, msg, fmt.Sprintf("observe %s: tenant is %s; only active, suspended or retained tenants with provisioned stores are observed", req.TenantID, state))
	}
	return o.sendObserve(ctx, req.TenantID, e, fmt.Sprintf("q%d", meta.Sequence.Stream), o.now())
}
