package saga

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

func (s *Saga) handleRequest(ctx context.Context, msg jetstream.Msg) error {
	var (
		seq    uint64
		stored time.Time
	)
	if meta, err := msg.Metadata(); err == nil {
		seq, stored = meta.Sequence.Stream, meta.Timestamp
	}
	var (
		id string
		ev Event
	)
	switch msg.Subject() {
	case events.SubjectTenantRequested:
		req, err := events.DecodeTenantRequested(msg.Data())
		if err != nil {
			return s.reject(ctx, msg, err.Error())
		}
		if req.DryRun {
			return s.dryRun(ctx, msg, req, seq) // never the registry (dryrun.go)
		}
		id, ev = req.TenantID, Event{Kind: EvProvisionRequested, Seq: seq, Provision: req, SagaID: newSagaID(req.TenantID)}
	case events.SubjectTenantDeprovisionRequested:
		req, err := events.DecodeDeprovisionRequested(msg.Data())
		if err != nil {
			return s.reject(ctx, msg, err.Error())
		}
		id, ev = req.TenantID, Event{Kind: EvDeprovisionRequested, Seq: seq, Deprovision: req}
	case events.SubjectTenantRotateRequested:
		req, err := events.DecodeRotateRequested(msg.Data())
		if err != nil {
			return s.reject(ctx, msg, err.Error())
		}
		id, ev = req.TenantID, Event{Kind: EvRotateRequested, Seq: seq, Rotate: req}
	case events.SubjectTenantSuspendRequested, events.SubjectTenantResumeRequested, events.SubjectTenantRestoreRequested:
		req, err := events.DecodeLifecycleRequested(msg.Data())
		if err != nil {
			return s.reject(ctx, msg, err.Error())
		}
		kind := map[string]EventKind{events.SubjectTenantSuspendRequested: EvSuspendRequested,
			events.SubjectTenantResumeRequested: EvResumeRequested, events.SubjectTenantRestoreRequested: EvRestoreRequested}[msg.Subject()]
		id, ev = req.TenantID, Event{Kind: kind, Seq: seq, Lifecycle: req}
	case events.SubjectTenantUpdateRequested:
		req, err := events.DecodeUpdateRequested(msg.Data())
		if err != nil {
			return s.reject(ctx, msg, err.Error())
		}
		id, ev = req.TenantID, Event{Kind: EvUpdateRequested, Seq: seq, Update: req}
	default:
		s.logger(ctx).Warn("unexpected subject on the requests consumer", zap.String("subject", msg.Subject()))
		return nil
	}
	if !stored.IsZero() {
		s.book.requested(id, stored)
		s.book.add(id, events.StepQueue, max(time.Since(stored), 0))
	}
	rec, d, err := s.apply(ctx, id, ev)
	if err != nil {
		return err
	}
	if d.RejectRequest != "" {
		return s.reject(ctx, msg, d.RejectRequest)
	}
	if d.Note != "" && rec != nil {
		s.logger(ctx).Info("request changes nothing", zap.String("tenant", id), zap.String("subject", msg.Subject()), zap.Uint64("seq", seq), zap.String("why", d.Note))
		// A redelivery after a crash: finish what the record holds.
		if len(rec.Outbox) > 0 {
			return s.flush(ctx, rec)
		}
	}
	return nil
}

// newSagaID names a new generation's saga: tenant, generation-independent
// and unguessable, so that a result naming it was answered to a command
// of this saga (DESIGN.md §11).
func newSagaID(tenant string) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return tenant + "-" + hex.EncodeToString(b[:])
}

// reject answers a request that cannot be served: tenant.rejected plus a
// TENANT_REQUEST_REJECTED audit event, both with IDs derived from the
// request's stream sequence so a redelivery does not answer twice. The
// request is then acked: bad input is never retried.
func (s *Saga) reject(ctx context.Context, msg jetstream.Msg, reason string) error {
	hint := tenantHint(msg.Data())
	disc := "req"
	if meta, err := msg.Metadata(); err == nil {
		disc = fmt.Sprintf("seq%d", meta.Sequence.Stream)
	}
	s.metrics.rejected.Inc()
	s.logger(ctx).Warn("request rejected", zap.String("subject", msg.Subject()), zap.String("tenant_hint", hint), zap.String("reason", reason))
	now := s.now()
	out := &events.TenantOutcomeEvent{Outcome: events.TenantOutcomeRejected, TenantID: hint, Reason: events.Truncate(reason, 1000), OccurredAt: now}
	msgID := events.MsgID{Kind: "tenant", Tenant: hint, Step: "rejected:" + disc}.String()
	if err := s.publish(ctx, events.SubjectTenantRejected, msgID, out, "", 0); err != nil {
		return err
	}
	details, _ := json.Marshal(map[string]any{"subject": msg.Subject(), "reason": events.Truncate(reason, 1000), "payload_bytes": len(msg.Data())})
	ev := &events.AuditEvent{
		EventID: events.AuditEventID(events.AuditTenantRequestRejected, hint, 0, "", disc),
		Type:    events.AuditTenantRequestRejected, TenantID: hint, Actor: Source, Source: Source,
		OccurredAt: now, Details: details,
	}
	return s.publish(ctx, events.AuditSubject(ev.Type), ev.EventID, ev, "", 0)
}

// tenantHint extracts what the request claimed as its tenant, for the
// rejection: printable ASCII only, at most 64 bytes.
func tenantHint(data []byte) string {
	if len(data) > events.MaxPayloadBytes {
		return ""
	}
	var probe struct {
		TenantID any `json:"tenant_id"`
	}
	if json.Unmarshal(data, &probe) != nil {
		return ""
	}
	s, _ := probe.TenantID.(string)
	var b strings.Builder
	for _, r := range s {
		if r >= 0x20 && r < 0x7f && b.Len() < 64 {
			b.WriteRune(r)
		}
	}
	return b.String()
}
