package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// DefaultTimeout is how long Client waits for one store's whole answer.
const DefaultTimeout = 30 * time.Second

// Client asks the store agents for their inventories over core NATS
// (events.InventorySubject).
type Client struct {
	NC *nats.Conn
	// Timeout bounds each store's answer (default DefaultTimeout).
	Timeout time.Duration
}

// Gathered is what the agents answered.
type Gathered struct {
	// Inventories holds the items of each store that answered completely.
	Inventories map[events.Store][]events.InventoryItem
	// Unanswered says, per store, why it has no inventory (no agent
	// running, timeout, an error the agent reported, a lost chunk).
	Unanswered map[events.Store]string
}

// Gather asks every store in stores (all when empty) at once and waits for
// each until its answer is complete, c.Timeout passes or ctx is done.
// tenant, if set, limits each answer to that tenant. Every store ends up in
// exactly one of the result's maps.
func (c *Client) Gather(ctx context.Context, tenant string, stores ...events.Store) Gathered {
	if len(stores) == 0 {
		stores = events.Stores()
	}
	g := Gathered{Inventories: map[events.Store][]events.InventoryItem{}, Unanswered: map[events.Store]string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, st := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			items, err := c.Ask(ctx, st, tenant)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				g.Unanswered[st] = err.Error()
				return
			}
			g.Inventories[st] = items
		}()
	}
	wg.Wait()
	return g
}

// Ask requests one store's inventory and collects its chunks in order. A
// missing or repeated chunk, an error the agent reports, or no complete
// answer within c.Timeout is an error.
func (c *Client) Ask(ctx context.Context, st events.Store, tenant string) ([]events.InventoryItem, error) {
	if c.NC == nil {
		return nil, errors.New("inventory: no NATS connection")
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	inbox := c.NC.NewRespInbox()
	ch := make(chan *nats.Msg, 64)
	sub, err := c.NC.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("subscribe to the inventory reply: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = sub.SetPendingLimits(-1, -1)
	req, _ := json.Marshal(events.InventoryRequest{TenantID: tenant})
	if err := c.NC.PublishRequest(events.InventorySubject(st), inbox, req); err != nil {
		return nil, fmt.Errorf("request %s: %w", events.InventorySubject(st), err)
	}
	var items []events.InventoryItem
	next := 0
	for {
		select {
		case <-ctx.Done():
			if next == 0 {
				return nil, fmt.Errorf("%w within %s on %s", ErrNoAgent, timeout, events.InventorySubject(st))
			}
			return nil, fmt.Errorf("answer on %s incomplete after %s (%d chunks)", events.InventorySubject(st), timeout, next)
		case m := <-ch:
			if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
				return nil, fmt.Errorf("%w on %s (no responders)", ErrNoAgent, events.InventorySubject(st))
			}
			chunk, err := events.DecodeInventoryChunk(m.Data)
			if err != nil {
				return nil, err
			}
			if chunk.Store != st {
				return nil, fmt.Errorf("answer on %s names store %s", events.InventorySubject(st), chunk.Store)
			}
			if chunk.Seq != next {
				return nil, fmt.Errorf("answer on %s: chunk %d arrived where %d was expected (lost in transit); ask again", events.InventorySubject(st), chunk.Seq, next)
			}
			next++
			if chunk.Error != "" {
				return nil, fmt.Errorf("%s agent could not list its store: %s", st, chunk.Error)
			}
			for _, it := range chunk.Items {
				it.Store = st
				items = append(items, it)
			}
			if chunk.Last {
				if chunk.Total != len(items) {
					return nil, fmt.Errorf("answer on %s: %d items received, the agent sent %d", events.InventorySubject(st), len(items), chunk.Total)
				}
				return items, nil
			}
		}
	}
}

// LoadRecords reads every tenant record of the registry (KV bucket
// events.KVTenants). A value that does not decode is returned in bad (key:
// reason) rather than failing the whole read.
func LoadRecords(ctx context.Context, js jetstream.JetStream) (records []*events.TenantRecord, bad map[string]string, err error) {
	kv, err := js.KeyValue(ctx, events.KVTenants)
	if err != nil {
		return nil, nil, fmt.Errorf("open KV %s: %w", events.KVTenants, err)
	}
	// One watch streams every current value, then a nil entry: no round
	// trip per tenant.
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, nil, fmt.Errorf("read KV %s: %w", events.KVTenants, err)
	}
	defer func() { _ = w.Stop() }()
	bad = map[string]string{}
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("read KV %s: %w", events.KVTenants, ctx.Err())
		case e = <-w.Updates():
		}
		if e == nil {
			break
		}
		r, err := events.DecodeTenantRecord(e.Value())
		if err != nil {
			bad[e.Key()] = events.Truncate(err.Error(), 200)
			continue
		}
		records = append(records, r)
	}
	return records, bad, nil
}

// Check gathers the inventories, reads the registry and compares them: the
// whole doctor in one call.
func (c *Client) Check(ctx context.Context, js jetstream.JetStream, tenant string, opts Options) (Report, error) {
	g := c.Gather(ctx, tenant)
	records, _, err := LoadRecords(ctx, js)
	if err != nil {
		return Report{}, err
	}
	return Compare(Input{Records: records, Inventories: g.Inventories, Unanswered: g.Unanswered, Tenant: tenant, Now: time.Now(), Options: opts}), nil
}
