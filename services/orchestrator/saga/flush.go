package saga

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// flush executes the pending effects of rec in order and stops at the
// first failure (the effect stays pending: the caller's message is
// redelivered, or the reconciler finds it). Consecutive publish effects
// (commands, audit events, outcomes) go out together — published in
// order without waiting for each acknowledgement, then every
// acknowledgement awaited — and are marked done by one compare-and-set;
// an object effect (put or delete the sealed secrets) runs on its own.
// Executing an effect twice is harmless: publishes carry their message ID,
// and object puts and deletes are checked by observing the object
// afterwards. Nothing is marked done before its publish is acknowledged.
func (s *Saga) flush(ctx context.Context, rec *events.TenantRecord) error {
	if s.crashAfterWrite.Load() {
		return nil
	}
	id := rec.TenantID
	done := map[string]bool{}
	// Executing an effect may complete a step that emits more (a seal
	// observed makes the tenant active and announces it): a few rounds.
	for range 16 {
		var (
			batch []*events.Effect
			other *events.Effect
		)
		for _, e := range rec.Outbox {
			if done[e.ID] {
				continue
			}
			if !publishEffect(e.Kind) {
				other = e
				break
			}
			batch = append(batch, e)
		}
		switch {
		case len(batch) > 0:
			if err := s.publishEffects(ctx, id, batch); err != nil {
				return err
			}
			evs := make([]Event, len(batch))
			for i, e := range batch {
				done[e.ID] = true
				evs[i] = Event{Kind: EvEffectDone, EffectID: e.ID}
			}
			next, _, _, err := s.writeEvents(ctx, id, evs...)
			if err != nil || next == nil {
				return err
			}
			rec = next
		case other != nil:
			done[other.ID] = true
			if err := s.execute(ctx, rec, other); err != nil {
				return fmt.Errorf("effect %s (%s): %w", other.ID, other.Kind, err)
			}
			// Executing it wrote the record (the observation): read it.
			start := time.Now()
			next, _, err := s.reg.Get(ctx, id)
			s.book.add(id, events.StepRegistry, time.Since(start))
			if err != nil || next == nil {
				return err
			}
			rec = next
		default:
			return nil
		}
	}
	return nil
}

func publishEffect(k events.EffectKind) bool {
	return k == events.EffectCommand || k == events.EffectOutcome || k == events.EffectAudit
}

// publishEffects publishes the effects in order, without waiting for one
// acknowledgement before sending the next, and returns once every one is
// acknowledged. One that is not (a lost acknowledgement, a stream leader
// moving) is published again, synchronously and with retries, by
// publishMsg: the same message ID makes that harmless.
func (s *Saga) publishEffects(ctx context.Context, id string, batch []*events.Effect) error {
	msgs := make([]*nats.Msg, len(batch))
	// Each effect's span is a child of the step that decided it, and its
	// message carries that span's context on (tracing.go).
	ctxs := make([]context.Context, len(batch))
	spans := make([]trace.Span, len(batch))
	var failed error
	defer func() {
		for _, sp := range spans {
			endSpan(sp, failed)
		}
	}()
	for i, e := range batch {
		ctxs[i], spans[i] = startEffect(ctx, e)
		m := nats.NewMsg(e.Subject)
		m.Data = e.Payload
		m.Header.Set(events.HeaderMsgID, e.MsgID)
		m.Header.Set(events.HeaderSource, Source)
		m.Header.Set(events.HeaderTenantID, id)
		m.Header.Set(events.HeaderGeneration, strconv.FormatUint(e.Generation, 10))
		injectTrace(ctxs[i], m)
		msgs[i] = m
	}
	start := time.Now()
	futures := make([]jetstream.PubAckFuture, len(msgs))
	if len(msgs) > 1 {
		for i, m := range msgs {
			f, err := s.js.PublishMsgAsync(m)
			if err != nil {
				break // the rest go synchronously below
			}
			futures[i] = f
		}
	}
	wctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	for i, m := range msgs {
		if f := futures[i]; f != nil {
			select {
			case ack := <-f.Ok():
				markDuplicate(ctxs[i], ack)
				continue
			case <-f.Err():
			case <-wctx.Done():
				if ctx.Err() != nil {
					return ctx.Err()
				}
			}
		}
		if err := s.publishMsg(ctxs[i], m); err != nil {
			failed = err
			return fmt.Errorf("effect %s (%s): %w", batch[i].ID, batch[i].Kind, err)
		}
	}
	// Time per kind, split evenly: they went out together.
	per := time.Since(start) / time.Duration(len(batch))
	for _, e := range batch {
		s.book.add(id, effectStep(e.Kind), per)
	}
	return nil
}
