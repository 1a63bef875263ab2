package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Inventorier is implemented by a Store that can list what it holds. It is
// optional: Run serves inventory requests (events.InventorySubject) only for
// a store that implements it.
type Inventorier interface {
	// Inventory lists every resource in the store that carries
	// tenantprov's marker of origin or has a tenant-shaped name
	// (DESIGN.md §2), whether tenantprov created it or not. It reads only;
	// it never changes the store. Items hold no secret. Ours must be
	// decided from the store's own marker (kept where no tenant can write
	// it), never from anything a tenant can write.
	Inventory(ctx context.Context, req InventoryRequest) (InventoryResponse, error)
}

// InventoryRequest asks for a store's inventory. It has no fields yet; it
// exists so that fields (a tenant, a page) can be added without breaking
// implementers.
type InventoryRequest struct{}

// InventoryResponse is a store's inventory.
type InventoryResponse struct {
	Items []events.InventoryItem
}

const (
	// inventoryTimeout bounds one listing of a store.
	inventoryTimeout = 2 * time.Minute
	// maxInventoryWaiting bounds the requests a replica keeps (one
	// listing runs at a time); more are answered "busy" at once.
	maxInventoryWaiting = 8
)

// ServeInventory answers inventory requests for kind on
// events.InventorySubject(kind), in queue group events.InventoryQueue (one
// replica answers each request), until ctx is done or stop is called. Each
// answer is one or more events.InventoryChunk on the request's reply
// subject, sorted by tenant, store, kind and name; a listing that fails is
// answered with a last chunk carrying the sanitised error. At most one
// listing runs at a time per replica; a request that arrives meanwhile
// waits for it, and one beyond maxInventoryWaiting is answered "busy".
func ServeInventory(ctx context.Context, nc *nats.Conn, kind events.Store, inv Inventorier, log *zap.Logger) (stop func(), err error) {
	if nc == nil || inv == nil || !kind.Valid() {
		return nil, errors.New("agent: inventory needs a NATS connection, an Inventorier and a store kind")
	}
	if log == nil {
		log = zap.NewNop()
	}
	work := context.WithoutCancel(ctx)
	busy := make(chan struct{}, 1)
	var waiting atomic.Int32
	sub, err := nc.QueueSubscribe(events.InventorySubject(kind), events.InventoryQueue, func(m *nats.Msg) {
		if m.Reply == "" {
			return
		}
		if waiting.Add(1) > maxInventoryWaiting {
			waiting.Add(-1)
			publishChunk(nc, m.Reply, events.InventoryChunk{Store: kind, Last: true, Error: "busy: too many inventory requests waiting; ask again later"}, log)
			return
		}
		go func() {
			defer waiting.Add(-1)
			select {
			case busy <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-busy }()
			answerInventory(work, nc, kind, inv, log, m)
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", events.InventorySubject(kind), err)
	}
	// The server knows the subscription once Flush returns: a request
	// published after ServeInventory returns finds a responder.
	if err := nc.FlushTimeout(publishTimeout); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe %s: %w", events.InventorySubject(kind), err)
	}
	unsubscribe := context.AfterFunc(ctx, func() { _ = sub.Unsubscribe() })
	return func() { unsubscribe(); _ = sub.Unsubscribe() }, nil
}

// answerInventory lists the store and publishes the chunks of the answer.
func answerInventory(ctx context.Context, nc *nats.Conn, kind events.Store, inv Inventorier, log *zap.Logger, m *nats.Msg) {
	var req events.InventoryRequest
	if len(m.Data) > 0 && len(m.Data) <= events.MaxPayloadBytes {
		_ = json.Unmarshal(m.Data, &req) // tolerant: a bad filter lists everything
	}
	lctx, cancel := context.WithTimeout(ctx, inventoryTimeout)
	defer cancel()
	start := time.Now()
	resp, err := inv.Inventory(lctx, InventoryRequest{})
	if err != nil {
		text := SanitizeText(err.Error())
		log.Warn("inventory failed", zap.String("error", text))
		publishChunk(nc, m.Reply, events.InventoryChunk{Store: kind, Last: true, Error: text}, log)
		return
	}
	items := FilterInventory(resp.Items, kind, req.TenantID)
	if len(items) > events.MaxInventoryChunks*events.InventoryChunkItems {
		publishChunk(nc, m.Reply, events.InventoryChunk{Store: kind, Last: true,
			Error: fmt.Sprintf("%d items exceed the %d one answer may hold; ask per tenant", len(items), events.MaxInventoryChunks*events.InventoryChunkItems)}, log)
		return
	}
	for i := 0; ; i++ {
		lo := i * events.InventoryChunkItems
		hi := min(lo+events.InventoryChunkItems, len(items))
		c := events.InventoryChunk{Store: kind, Seq: i, Items: items[lo:hi], Last: hi == len(items)}
		if c.Last {
			c.Total = len(items)
		}
		if !publishChunk(nc, m.Reply, c, log) || c.Last {
			break
		}
	}
	log.Debug("inventory answered", zap.Int("items", len(items)), zap.Duration("took", time.Since(start)))
}

// FilterInventory sets every item's store to kind, keeps only tenant's items
// (all when tenant is ""), and sorts them by tenant, kind and name.
func FilterInventory(items []events.InventoryItem, kind events.Store, tenant string) []events.InventoryItem {
	out := make([]events.InventoryItem, 0, len(items))
	for _, it := range items {
		if tenant != "" && it.TenantID != tenant {
			continue
		}
		it.Store = kind
		out = append(out, it)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.TenantID != b.TenantID {
			return a.TenantID < b.TenantID
		}
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Name < b.Name
	})
	return out
}

func publishChunk(nc *nats.Conn, reply string, c events.InventoryChunk, log *zap.Logger) bool {
	b, err := json.Marshal(c)
	if err == nil {
		err = nc.Publish(reply, b)
	}
	if err != nil {
		log.Warn("cannot publish an inventory answer", zap.String("error", SanitizeText(err.Error())))
		return false
	}
	return true
}
