package saga

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
)

// The orphan sweep (DESIGN.md §10): each pass asks every store's agent for
// its inventory, compares it with the registry (package inventory), and
// keeps what it finds in KV bucket events.KVOrphans, one key per store,
// tenant and generation. A resource carrying tenantprov's marker whose
// tenant has no live record is an orphan: ORPHAN_FOUND once, and when it
// is still there ORPHAN_GRACE after it was first seen, a deprovision of
// that tenant and generation with a sweep saga ID (SweepSagaPrefix) removes
// it — the agent removes only what its system record says is ours —
// and its confirmation is audited ORPHAN_REMOVED. A look-alike without our
// marker is reported (ORPHAN_FOUND, foreign) and never touched. Nothing of
// a tenant whose record is live or has a saga in flight is removed: a
// marker of another generation than a live tenant's is reported only (the
// names are the live tenant's).

// SweepSagaPrefix begins the saga ID of every deprovision the orphan sweep
// sends; the saga never applies a result carrying one to a tenant record.
const SweepSagaPrefix = "orphan-sweep-"

// IsSweepSaga reports whether id is an orphan sweep's saga ID.
func IsSweepSaga(id string) bool { return strings.HasPrefix(id, SweepSagaPrefix) }

// sweepActor is the actor of the sweep's audit events.
const sweepActor = "orphan-sweep"

func (o *Observer) sweepLoop(ctx context.Context) {
	kv, err := o.s.js.KeyValue(ctx, events.KVOrphans)
	if err != nil {
		o.s.log.Error("orphan sweep off: bucket missing (the topology creates it)", zap.String("bucket", events.KVOrphans), zap.Error(err))
		return
	}
	for {
		if err := o.Sweep(ctx, kv); err != nil && ctx.Err() == nil {
			o.s.log.Warn("orphan sweep pass incomplete", zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(o.cfg.OrphanSweepInterval):
		}
	}
}

// orphanGroup is what one pass found for one key of the orphans bucket.
type orphanGroup struct {
	key   string
	value events.Orphan
}

// Sweep makes one pass of the orphan sweep.
func (o *Observer) Sweep(ctx context.Context, kv jetstream.KeyValue) error {
	// The registry is read before and after the inventories: a tenant
	// whose record moved in between, or that has a saga in flight, was
	// being changed while the stores were listed (a resource created
	// before its marker looks foreign for a moment) and is judged by a
	// later pass.
	before, _, err := inventory.LoadRecords(ctx, o.s.js)
	if err != nil {
		return err
	}
	cl := &inventory.Client{NC: o.s.js.Conn(), Timeout: o.cfg.InventoryTimeout}
	g := cl.Gather(ctx, "")
	records, _, err := inventory.LoadRecords(ctx, o.s.js)
	if err != nil {
		return err
	}
	now := o.now()
	rep := inventory.Compare(inventory.Input{Records: records, Inventories: g.Inventories, Unanswered: g.Unanswered, Now: now})
	found := groupOrphans(rep.Findings)
	unsteady := unsteadyTenants(before, records)
	for k, grp := range found {
		if unsteady[grp.value.TenantID] {
			delete(found, k)
		}
	}
	var errs []error
	for _, grp := range found {
		if err := o.sweepOne(ctx, kv, grp, now); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", grp.key, err))
		}
	}
	// Keys of answered stores that this pass no longer found: gone (our
	// removal, or someone else's, or the tenant came back).
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list %s: %w", events.KVOrphans, err))...)
	}
	for k := range keys.Keys() {
		if _, still := found[k]; still {
			continue
		}
		store, rest, _ := strings.Cut(k, ".")
		if tenant, _, _ := strings.Cut(rest, "."); unsteady[tenant] {
			continue
		}
		if _, answered := g.Inventories[events.Store(store)]; !answered {
			continue
		}
		if err := kv.Delete(ctx, k); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			errs = append(errs, fmt.Errorf("forget %s: %w", k, err))
		}
	}
	for st, why := range g.Unanswered {
		o.s.log.Warn("orphan sweep: store did not answer its inventory; its orphans are not judged this pass", zap.String("store", string(st)), zap.String("why", why))
	}
	return errors.Join(errs...)
}

// unsteadyTenants names the tenants whose record differs between two reads
// of the registry, or has a saga in flight in either.
func unsteadyTenants(before, after []*events.TenantRecord) map[string]bool {
	out := map[string]bool{}
	seen := map[string]*events.TenantRecord{}
	for _, r := range before {
		seen[r.TenantID] = r
		if r.State.InFlight() {
			out[r.TenantID] = true
		}
	}
	for _, r := range after {
		b := seen[r.TenantID]
		if r.State.InFlight() || b == nil || !b.UpdatedAt.Equal(r.UpdatedAt) {
			out[r.TenantID] = true
		}
		delete(seen, r.TenantID)
	}
	for id := range seen {
		out[id] = true // deleted in between
	}
	return out
}

// groupOrphans groups the comparison's findings into orphans, one per
// store, tenant and generation (or foreign look-alike).
func groupOrphans(findings []inventory.Finding) map[string]*orphanGroup {
	out := map[string]*orphanGroup{}
	for _, f := range findings {
		var foreign bool
		switch f.Category {
		case inventory.Leaked, inventory.GenerationMismatch:
		case inventory.Foreign:
			foreign = true
		default:
			continue
		}
		gen := f.StoreGeneration
		if foreign {
			gen = 0
		}
		key := events.OrphanKey(f.Store, f.TenantID, gen, foreign)
		grp := out[key]
		if grp == nil {
			grp = &orphanGroup{key: key, value: events.Orphan{Store: f.Store, TenantID: f.TenantID, Generation: gen, Foreign: foreign, Detail: f.Detail}}
			out[key] = grp
		}
		grp.value.Items = append(grp.value.Items, string(f.Kind)+"/"+f.Name)
	}
	for _, grp := range out {
		sort.Strings(grp.value.Items)
	}
	return out
}

// sweepOne records one orphan (first sighting: ORPHAN_FOUND) and, once its
// grace has passed, asks for its removal.
func (o *Observer) sweepOne(ctx context.Context, kv jetstream.KeyValue, grp *orphanGroup, now time.Time) error {
	cur, rev, err := getOrphan(ctx, kv, grp.key)
	if err != nil {
		return err
	}
	if cur == nil {
		v := grp.value
		v.FirstSeen, v.LastSeen = now, now
		if rev, err = kv.Create(ctx, grp.key, mustJSON(v)); err != nil {
			if isConflict(err) {
				return nil // another replica saw it first; it reports it
			}
			return fmt.Errorf("record orphan: %w", err)
		}
		cur = &v
	}
	if !cur.Reported {
		// Once per orphan: the ID names its first sighting, so a replica
		// that publishes it again after a crash is de-duplicated.
		if err := o.s.auditOrphan(ctx, events.AuditOrphanFound, cur, fmt.Sprintf("first%d", cur.FirstSeen.UnixNano()), map[string]any{
			"items": grp.value.Items, "foreign": cur.Foreign, "detail": grp.value.Detail, "first_seen": cur.FirstSeen, "grace": o.cfg.OrphanGrace.String(),
		}); err != nil {
			return err
		}
	}
	next := *cur
	next.Reported = true
	next.Items, next.Detail, next.LastSeen = grp.value.Items, grp.value.Detail, now
	if next.RemovedAt != nil {
		// Removed, and found again: start over from the removal.
		next.RemovedAt, next.RemovalSagaID, next.RemovalSentAt = nil, "", nil
	}
	send := false
	if !next.Foreign && now.Sub(next.FirstSeen) >= o.cfg.OrphanGrace {
		ok, why, err := o.removable(ctx, &next)
		if err != nil {
			return err
		}
		switch {
		case !ok:
			next.Error = why
		case strings.HasPrefix(next.Error, "not removed:"):
			next.Error = "" // a removal failure's error stays until it succeeds
		}
		if ok && (next.RemovalSentAt == nil || now.Sub(*next.RemovalSentAt) >= o.cfg.ObserveTimeout) {
			if next.RemovalSagaID == "" {
				var b [8]byte
				_, _ = rand.Read(b[:])
				next.RemovalSagaID = SweepSagaPrefix + next.TenantID + "-" + hex.EncodeToString(b[:])
			}
			next.RemovalTries++
			t := now
			next.RemovalSentAt = &t
			send = true
		}
	}
	if _, err := kv.Update(ctx, grp.key, mustJSON(next), rev); err != nil {
		if isConflict(err) {
			return nil // another replica's pass got there first
		}
		return fmt.Errorf("update orphan: %w", err)
	}
	if !send {
		return nil
	}
	cmd := &events.StoreCommand{TenantID: next.TenantID, Generation: max(next.Generation, 1), SagaID: next.RemovalSagaID, Store: next.Store,
		Action: events.ActionDeprovision, Attempt: next.RemovalTries, IssuedAt: now, Deadline: now.Add(o.s.cfg.SagaTimeout)}
	msgID := events.MsgID{Kind: "cmd", Tenant: cmd.TenantID, Generation: cmd.Generation, Store: cmd.Store,
		Step: "deprovision:" + next.RemovalSagaID, Attempt: next.RemovalTries}.String()
	o.s.log.Info("orphan sweep: removing an orphan after its grace", zap.String("key", grp.key), zap.Strings("items", next.Items), zap.Time("first_seen", next.FirstSeen))
	return o.s.publish(ctx, events.CommandSubject(cmd.Store, cmd.Action), msgID, cmd, cmd.TenantID, cmd.Generation)
}

// removable decides on a fresh read of the registry whether an orphan may
// be removed now: its tenant has no record, or one that is settled and not
// live, with nothing of any generation still being compensated. A tenant
// whose record goes on to a newer generation after this check is safe from
// the removal: the stores leave a newer generation's resources in place
// when asked to deprovision an older one. (A tenant requested with no
// record starts at generation 1, which may be older than an orphan's
// marker; the stores' handling of that provision is theirs.)
func (o *Observer) removable(ctx context.Context, orphan *events.Orphan) (bool, string, error) {
	rec, _, err := o.s.reg.Get(ctx, orphan.TenantID)
	if err != nil {
		return false, "", err
	}
	switch {
	case rec == nil:
		return true, "", nil
	case rec.State.InFlight():
		return false, "not removed: a saga is in flight for the tenant (" + string(rec.State) + ")", nil
	case inventory.LiveStates[rec.State]:
		return false, fmt.Sprintf("not removed: the tenant is %s at generation %d; a marker of generation %d names the live tenant's resources", rec.State, rec.Generation, orphan.Generation), nil
	case unsettled(rec):
		return false, "not removed: the tenant's stores are still being compensated", nil
	}
	return true, "", nil
}

// sweepResult handles a store's answer to a sweep's deprovision: it is
// never applied to a tenant record. It reports whether res was the sweep's.
func (s *Saga) sweepResult(ctx context.Context, subject events.Store, res *events.StoreResult) (bool, error) {
	if !IsSweepSaga(res.SagaID) || subject != res.Store || res.Outcome.Action() != events.ActionDeprovision {
		return false, nil
	}
	kv, err := s.js.KeyValue(ctx, events.KVOrphans)
	if err != nil {
		return true, err
	}
	key := events.OrphanKey(res.Store, res.TenantID, res.Generation, false)
	cur, rev, err := getOrphan(ctx, kv, key)
	if err != nil {
		return true, err
	}
	if cur == nil || cur.RemovalSagaID != res.SagaID {
		// An answer to a removal no longer pending (a redelivery after
		// the key was forgotten) or not ours: nothing to apply.
		s.log.Info("orphan sweep: result for no pending removal", zap.String("key", key), zap.String("outcome", string(res.Outcome)))
		return true, nil
	}
	next := *cur
	if res.Outcome == events.OutcomeDeprovisionFailed {
		next.Error = events.Truncate(res.Reason+": "+res.Error, 512)
		if _, err := kv.Update(ctx, key, mustJSON(next), rev); err != nil && !isConflict(err) {
			return true, err
		}
		return true, nil
	}
	if next.RemovedAt == nil {
		at := res.CompletedAt.UTC()
		next.RemovedAt, next.Error = &at, ""
		if _, err := kv.Update(ctx, key, mustJSON(next), rev); err != nil && !isConflict(err) {
			return true, err
		}
	}
	return true, s.auditOrphan(ctx, events.AuditOrphanRemoved, &next, res.SagaID, map[string]any{
		"items": next.Items, "first_seen": next.FirstSeen, "removed_at": next.RemovedAt, "removal_saga_id": next.RemovalSagaID,
		"warnings": res.Warnings,
	})
}

func getOrphan(ctx context.Context, kv jetstream.KeyValue, key string) (*events.Orphan, uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read orphan %s: %w", key, err)
	}
	var v events.Orphan
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return nil, 0, fmt.Errorf("orphan %s: %w", key, err)
	}
	return &v, e.Revision(), nil
}

// auditOrphan publishes an orphan audit event with a deterministic ID.
func (s *Saga) auditOrphan(ctx context.Context, typ events.AuditType, v *events.Orphan, disc string, details map[string]any) error {
	if v.Foreign {
		disc = "foreign-" + disc
	}
	details["store"], details["generation"] = v.Store, v.Generation
	ev := &events.AuditEvent{
		EventID: events.AuditEventID(typ, v.TenantID, v.Generation, v.Store, disc),
		Type:    typ, TenantID: v.TenantID, Generation: v.Generation, Store: v.Store, SagaID: v.RemovalSagaID,
		Actor: sweepActor, OccurredAt: s.now(), Source: Source, Details: mustJSON(compact(details)),
	}
	return s.publish(ctx, events.AuditSubject(typ), ev.EventID, ev, v.TenantID, v.Generation)
}
