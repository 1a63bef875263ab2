package saga

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// handleResult applies a store agent's result to its tenant's saga, or
// drops it — counted and audited as RESULT_REJECTED — when it does not
// belong to the saga, generation, store or run in flight.
func (s *Saga) handleResult(ctx context.Context, msg jetstream.Msg) error {
	res, err := events.DecodeStoreResult(msg.Data())
	if err != nil {
		// Invalid input is never retried; the saga's deadline covers a
		// store that never answers validly.
		s.logger(ctx).Error("invalid store result dropped", zap.String("subject", msg.Subject()), zap.Error(err))
		s.metrics.resultsRejected.WithLabelValues("invalid").Inc()
		return nil
	}
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("result metadata: %w", err)
	}
	ev := Event{Kind: EvResult, Seq: meta.Sequence.Stream, Result: res, SubjectStore: subjectStore(msg.Subject())}
	if dry, err := s.dryRunResult(ctx, ev.SubjectStore, res); dry {
		return err // a dry run's answer, never a tenant saga's (dryrun.go)
	}
	if sweep, err := s.sweepResult(ctx, ev.SubjectStore, res); sweep {
		return err // the orphan sweep's removal, never a tenant saga's (orphans.go)
	}
	rec, d, err := s.apply(ctx, res.TenantID, ev)
	if err != nil {
		return err
	}
	if d.RejectResult != "" {
		return s.rejectResult(ctx, msg.Subject(), ev.Seq, res, d)
	}
	if d.Note == "" && rec != nil {
		s.logger(ctx).Debug("store result applied", zap.String("tenant", res.TenantID), zap.String("store", string(res.Store)), zap.String("outcome", string(res.Outcome)),
			zap.Uint64("generation", res.Generation), zap.Int("attempt", res.Attempt), zap.Uint64("run", res.Run), zap.Uint64("seq", ev.Seq), zap.String("state", string(rec.State)))
	}
	if d.Note != "" && rec != nil && len(rec.Outbox) > 0 {
		return s.flush(ctx, rec) // a redelivery after a crash
	}
	return nil
}

// subjectStore is the <store> of store.evt.<store>.<outcome>.
func subjectStore(subject string) events.Store {
	parts := strings.Split(subject, ".")
	if len(parts) != 4 {
		return ""
	}
	return events.Store(parts[2])
}

// rejectResult counts and audits a dropped result. The audit event's ID
// comes from the result's stream sequence, so a redelivery records it once;
// its details never hold the credential.
func (s *Saga) rejectResult(ctx context.Context, subject string, seq uint64, res *events.StoreResult, d Decision) error {
	s.metrics.resultsRejected.WithLabelValues(d.RejectCode).Inc()
	s.logger(ctx).Warn("store result rejected", zap.String("tenant", res.TenantID), zap.String("subject", subject), zap.Uint64("seq", seq),
		zap.Uint64("generation", res.Generation), zap.Uint64("run", res.Run), zap.String("reason", d.RejectResult))
	details, _ := json.Marshal(compact(map[string]any{
		"subject": subject, "stream_seq": seq, "reason": d.RejectResult, "code": d.RejectCode,
		"claimed_saga_id": events.Truncate(res.SagaID, 128), "claimed_generation": res.Generation, "outcome": res.Outcome,
		"attempt": res.Attempt, "run": res.Run, "credential_id": res.CredentialID,
	}))
	ev := &events.AuditEvent{
		EventID: events.AuditEventID(events.AuditResultRejected, res.TenantID, 0, "", fmt.Sprintf("seq%d", seq)),
		Type:    events.AuditResultRejected, TenantID: res.TenantID, Store: res.Store, Actor: Source, Source: Source,
		OccurredAt: s.now(), Details: details,
	}
	return s.publish(ctx, events.AuditSubject(ev.Type), ev.EventID, ev, res.TenantID, 0)
}
