package saga

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// apply runs one event through Step under compare-and-set on tenant id's
// record, then executes what the record's outbox holds. It returns the
// record as stored and Step's decision.
func (s *Saga) apply(ctx context.Context, id string, ev Event) (*events.TenantRecord, Decision, error) {
	rec, d, _, err := s.write(ctx, id, ev)
	if err == nil && rec != nil && len(rec.Outbox) > 0 {
		err = s.flush(ctx, rec)
	}
	return rec, d, err
}

func (s *Saga) policy() Policy {
	return Policy{SagaTimeout: s.cfg.SagaTimeout, RetryMin: s.cfg.RetryMin, RetryMax: s.cfg.RetryMax, KeepPast: 4,
		Lifecycle: s.cfg.lifecyclePolicy(), MaxTimeout: s.cfg.MaxTimeout, ProgressWindow: s.cfg.ProgressWindow, Plans: s.plans}
}

// observe logs and counts the state change from a to b.
func (s *Saga) observe(ctx context.Context, a, b *events.TenantRecord) {
	s.countRetries(a, b)
	if b == nil || (a != nil && a.State == b.State && a.Generation == b.Generation) {
		return
	}
	s.logger(ctx).Info("tenant state", zap.String("tenant", b.TenantID), zap.Uint64("generation", b.Generation), zap.String("state", string(b.State)), zap.String("reason", b.Reason))
	switch b.State {
	case events.TenantProvisioning:
		s.metrics.sagas.WithLabelValues("provision", "started").Inc()
	case events.TenantDeprovisioning:
		s.metrics.sagas.WithLabelValues("deprovision", "started").Inc()
	case events.TenantActive, events.TenantFailed, events.TenantDeprovisioned:
		if a != nil && lifecycleState(a.State) {
			break // a lifecycle operation settled: observeLifecycle counts it
		}
		s.metrics.sagas.WithLabelValues(sagaKind(b.State), string(b.State)).Inc()
		if b.State == events.TenantActive && !b.CreatedAt.IsZero() {
			if st := b.Stores[events.StoreMinIO]; st != nil && st.StartedAt != nil {
				s.metrics.duration.WithLabelValues("provision").Observe(s.now().Sub(*st.StartedAt).Seconds())
			}
		}
	}
	s.observeLifecycle(a, b)
}

// countRetries counts the compensation retries a write from a to b sent:
// a deprovision command of the same generation and round with a higher
// attempt (the first command of a round is not a retry). Counted after
// the compare-and-set, so once whichever replica wrote it.
func (s *Saga) countRetries(a, b *events.TenantRecord) {
	if a == nil || b == nil || a.Generation != b.Generation {
		return
	}
	for store, st := range b.Stores {
		prev := a.Stores[store]
		if prev == nil || st.State != events.StoreDeprovisioning || st.Attempt <= prev.Attempt || st.Round != prev.Round || prev.State != events.StoreDeprovisioning {
			continue
		}
		s.metrics.compensationRetries.WithLabelValues(string(store)).Add(float64(st.Attempt - prev.Attempt))
	}
}

func sagaKind(s events.TenantState) string {
	if s == events.TenantDeprovisioned {
		return "deprovision"
	}
	return "provision"
}

func (s *Saga) execute(ctx context.Context, rec *events.TenantRecord, e *events.Effect) (err error) {
	ctx, span := startEffect(ctx, e)
	defer func() { endSpan(span, err) }()
	id := rec.TenantID
	switch e.Kind {
	case events.EffectCommand, events.EffectOutcome, events.EffectAudit:
		m := nats.NewMsg(e.Subject)
		m.Data = e.Payload
		m.Header.Set(events.HeaderMsgID, e.MsgID)
		m.Header.Set(events.HeaderSource, Source)
		m.Header.Set(events.HeaderTenantID, id)
		m.Header.Set(events.HeaderGeneration, strconv.FormatUint(e.Generation, 10))
		injectTrace(ctx, m)
		start := time.Now()
		if err := s.publishMsg(ctx, m); err != nil {
			return err
		}
		s.book.add(id, effectStep(e.Kind), time.Since(start))
		_, _, _, err := s.write(ctx, id, Event{Kind: EvEffectDone, EffectID: e.ID})
		return err
	case events.EffectPutSecrets:
		// Put only a seal still wanted and not yet stored: every put is
		// a fresh encryption, and puts racing each other are corrected
		// only after the fact (observeObject).
		cur, _, err := s.reg.Get(ctx, id)
		if err != nil {
			return err
		}
		if cur == nil || !slices.ContainsFunc(cur.Outbox, func(p *events.Effect) bool { return p.ID == e.ID }) {
			return nil
		}
		if info, err := s.secrets.GetInfo(ctx, events.TenantID(id).SecretsObject()); err == nil && info.Metadata[metaSealID] == e.Seal.ID {
			return s.observeObject(ctx, id, e.ID)
		}
		sctx, sspan := startSpan(ctx, "seal secrets (sops)")
		sealStart := time.Now()
		data, err := s.sealFile(sctx, rec, e.Generation, e.Seal)
		s.book.add(id, events.StepSeal, time.Since(sealStart))
		endSpan(sspan, err)
		var perm *permanentError
		if errors.As(err, &perm) {
			s.logger(ctx).Error("sealing failed", zap.String("tenant", id), zap.Error(err))
			_, _, _, err = s.write(ctx, id, Event{Kind: EvSealFailed, EffectID: e.ID, Reason: perm.Error()})
			return err
		}
		if err != nil {
			return err
		}
		meta := jetstream.ObjectMeta{Name: events.TenantID(id).SecretsObject(), Metadata: map[string]string{metaSealID: e.Seal.ID}}
		pctx, pspan := startSpan(ctx, "put object "+meta.Name)
		pctx, cancel := context.WithTimeout(pctx, 3*opTimeout)
		putStart := time.Now()
		_, err = s.secrets.Put(pctx, meta, bytes.NewReader(data))
		s.book.add(id, events.StepObject, time.Since(putStart))
		cancel()
		endSpan(pspan, err)
		if err != nil {
			return fmt.Errorf("store sealed secrets: %w", err)
		}
		clear(data)
		return s.observeObject(ctx, id, e.ID)
	case events.EffectDeleteSecrets:
		dctx, dspan := startSpan(ctx, "delete object "+events.TenantID(id).SecretsObject())
		dctx, cancel := context.WithTimeout(dctx, opTimeout)
		err := s.secrets.Delete(dctx, events.TenantID(id).SecretsObject())
		cancel()
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			endSpan(dspan, nil)
		} else {
			endSpan(dspan, err)
		}
		if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return fmt.Errorf("delete sealed secrets: %w", err)
		}
		return s.observeObject(ctx, id, e.ID)
	}
	return fmt.Errorf("unknown effect kind %q", e.Kind)
}

// metaSealID is the object metadata key naming the seal an object holds.
const metaSealID = "tenantprov-seal-id"

// observeObject reads what the object store holds now and feeds it to the
// saga, which completes the effect it satisfies or asks for a correction.
func (s *Saga) observeObject(ctx context.Context, id, effectID string) error {
	obj := ObjectState{}
	ictx, cancel := context.WithTimeout(ctx, opTimeout)
	start := time.Now()
	info, err := s.secrets.GetInfo(ictx, events.TenantID(id).SecretsObject(), jetstream.GetObjectInfoShowDeleted())
	s.book.add(id, events.StepObject, time.Since(start))
	cancel()
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
	case err != nil:
		return fmt.Errorf("sealed secrets info: %w", err)
	case info.Deleted:
		obj = ObjectState{Version: info.ModTime}
	default:
		sum, err := digestHex(info.Digest)
		if err != nil {
			return err
		}
		obj = ObjectState{Present: true, SealID: info.Metadata[metaSealID], SHA256: sum, Version: info.ModTime}
	}
	_, _, _, err = s.write(ctx, id, Event{Kind: EvObjectObserved, EffectID: effectID, Object: obj})
	return err
}

// write runs one event through Step under compare-and-set and stores the
// result, executing none of its effects (apply does; the reconciler and
// the executors themselves call write). It reports whether the record
// changed.
func (s *Saga) write(ctx context.Context, id string, ev Event) (*events.TenantRecord, Decision, bool, error) {
	return s.writeEvents(ctx, id, ev)
}

// writeEvents runs evs through Step one after the other and stores the
// outcome with one compare-and-set (a batch of executed effects is marked
// done in one write). The decision returned is the first event's.
func (s *Saga) writeEvents(ctx context.Context, id string, evs ...Event) (*events.TenantRecord, Decision, bool, error) {
	var d Decision
	var before *events.TenantRecord
	pending := s.book.take(id)
	start := time.Now()
	rec, changed, err := s.reg.Update(ctx, id, func(cur *events.TenantRecord) (*events.TenantRecord, error) {
		before = cur
		now := s.now()
		var next *events.TenantRecord
		at := cur
		for i, ev := range evs {
			n, dd := Step(s.policy(), at, ev, now)
			if i == 0 {
				d = dd
			}
			if n != nil {
				next, at = n, n
			}
		}
		if next == nil {
			return nil, errNoChange
		}
		traceStep(ctx, cur, next, evs[0])
		foldTimings(cur, next, evs[0], pending, now)
		return next, nil
	})
	if err != nil || !changed {
		s.book.giveBack(id, pending)
	}
	if err == nil && changed {
		s.observe(ctx, before, rec)
	}
	switch {
	case err == nil && (rec == nil || !unsettled(rec)):
		s.book.drop(id) // settled: nothing more to time
	default:
		s.book.add(id, events.StepRegistry, time.Since(start))
		if changed {
			s.book.wrote(id)
		}
	}
	return rec, d, changed, err
}

// errCodeMsgIDInProcess is JetStream's answer, on replicated streams, to a
// publish whose Nats-Msg-Id another publish is storing right now.
const errCodeMsgIDInProcess jetstream.ErrorCode = 10158

// publishMsg publishes m and waits for the stream's acknowledgement. Two
// executors of one effect publish the same message ID; on replicated
// storage the second is told the first is in process: it waits a moment
// and publishes again, which then returns the duplicate's acknowledgement.
func (s *Saga) publishMsg(ctx context.Context, m *nats.Msg) error {
	for i := 0; ; i++ {
		// One attempt's request or its acknowledgement can be lost while
		// a cluster's stream leader moves: each attempt waits a bounded
		// time and the publish is sent again (same message ID, so a
		// stored one is not stored twice).
		actx, cancel := context.WithTimeout(ctx, opTimeout)
		ack, err := s.js.PublishMsg(actx, m)
		cancel()
		if err == nil {
			markDuplicate(ctx, ack)
			return nil
		}
		var api *jetstream.APIError
		retry := errors.As(err, &api) && api.ErrorCode == errCodeMsgIDInProcess ||
			errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
		if !retry || ctx.Err() != nil || i >= 50 {
			return fmt.Errorf("publish %s: %w", m.Subject, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// opTimeout bounds one request to JetStream (a publish, a registry read or
// write); the caller retries.
const opTimeout = 10 * time.Second

// observeLifecycle counts lifecycle operations started and settled (with
// their duration) from a record's change from a to b.
func (s *Saga) observeLifecycle(a, b *events.TenantRecord) {
	if b.Lifecycle != nil && (a == nil || a.Lifecycle == nil || a.Lifecycle.ID != b.Lifecycle.ID) {
		s.metrics.sagas.WithLabelValues(string(b.Lifecycle.Kind), "started").Inc()
	}
	if a != nil && a.Lifecycle != nil && (b.Lifecycle == nil || b.Lifecycle.ID != a.Lifecycle.ID) && a.Generation == b.Generation {
		s.metrics.sagas.WithLabelValues(string(a.Lifecycle.Kind), string(b.State)).Inc()
		s.metrics.duration.WithLabelValues(string(a.Lifecycle.Kind)).Observe(s.now().Sub(a.Lifecycle.StartedAt).Seconds())
	}
}

// effectStep is the timing step a publish effect counts against.
func effectStep(k events.EffectKind) string {
	switch k {
	case events.EffectCommand:
		return events.StepCommands
	case events.EffectOutcome:
		return events.StepOutcome
	}
	return events.StepAudit
}
