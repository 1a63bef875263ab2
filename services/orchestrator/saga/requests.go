package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Answers to deprovision requests the saga cannot start. A deprovision for a
// tenant whose provisioning saga is still running is rejected, not queued:
// the caller retries once tenant.provisioned or tenant.provision_failed has
// been published (a failed tenant has nothing left to deprovision).
var (
	errUnknownTenant = errors.New("unknown tenant")
	errSagaInFlight  = errors.New("a provisioning saga is in flight for this tenant; retry after it settles")
)

func (s *Saga) handleRequest(ctx context.Context, msg jetstream.Msg) error {
	switch msg.Subject() {
	case events.SubjectTenantRequested:
		req, err := events.DecodeTenantRequested(msg.Data())
		if err != nil {
			return s.reject(ctx, msg, err.Error())
		}
		return s.startProvisioning(ctx, req)
	case events.SubjectTenantDeprovisionRequested:
		req, err := events.DecodeDeprovisionRequested(msg.Data())
		if err != nil {
			return s.reject(ctx, msg, err.Error())
		}
		err = s.startDeprovisioning(ctx, req)
		if errors.Is(err, errUnknownTenant) || errors.Is(err, errSagaInFlight) {
			return s.reject(ctx, msg, "deprovision "+req.TenantID+": "+err.Error())
		}
		return err
	}
	s.log.Warn("unexpected subject on the requests consumer", zap.String("subject", msg.Subject()))
	return nil
}

// startProvisioning registers the request (DESIGN.md §4 step 2) and drives
// the saga. A tenant that is active or in flight is left as it is; a failed
// or deprovisioned one starts a new generation.
func (s *Saga) startProvisioning(ctx context.Context, req *events.TenantRequested) error {
	now := s.now()
	rec, changed, err := s.reg.Update(ctx, req.TenantID, func(rec *events.TenantRecord) (*events.TenantRecord, error) {
		if rec != nil && !rec.State.Terminal() {
			return nil, errNoChange
		}
		gen := uint64(1)
		created := now
		if rec != nil {
			gen = rec.Generation + 1
			created = rec.CreatedAt
		}
		deadline := now.Add(s.cfg.SagaTimeout)
		next := &events.TenantRecord{
			TenantID: req.TenantID, State: events.TenantProvisioning, Generation: gen,
			SagaID:    fmt.Sprintf("%s-g%d", req.TenantID, gen),
			RequestID: req.RequestID, RequestedBy: req.RequestedBy, Labels: req.Labels,
			Stores: map[events.Store]*events.StoreStatus{}, Deadline: &deadline, CreatedAt: created,
		}
		for _, st := range events.Stores() {
			next.Stores[st] = &events.StoreStatus{State: events.StorePending, StartedAt: &now, CommandSentAt: &now}
		}
		return next, nil
	})
	if err != nil {
		return err
	}
	if changed {
		s.metrics.sagas.WithLabelValues("provision", "started").Inc()
		s.log.Info("provisioning started", zap.String("tenant", rec.TenantID), zap.Uint64("generation", rec.Generation), zap.String("request_id", req.RequestID))
		if err := s.audit(ctx, rec, events.AuditTenantProvisioningStarted, "", "", map[string]any{"request_id": req.RequestID, "labels": req.Labels, "deadline": rec.Deadline}); err != nil {
			return err
		}
	} else {
		s.log.Info("request for a tenant that is active or in flight: nothing to do", zap.String("tenant", rec.TenantID), zap.String("state", string(rec.State)), zap.String("request_id", req.RequestID))
	}
	return s.drive(ctx, rec, true)
}

// startDeprovisioning moves an active tenant to deprovisioning.
func (s *Saga) startDeprovisioning(ctx context.Context, req *events.DeprovisionRequested) error {
	now := s.now()
	rec, changed, err := s.reg.Update(ctx, req.TenantID, func(rec *events.TenantRecord) (*events.TenantRecord, error) {
		if rec == nil {
			return nil, errUnknownTenant
		}
		switch rec.State {
		case events.TenantActive:
		case events.TenantProvisioning, events.TenantRollingBack:
			return nil, errSagaInFlight
		default: // already deprovisioning, deprovisioned or failed: nothing to do
			return nil, errNoChange
		}
		rec.State = events.TenantDeprovisioning
		rec.Announced = ""
		// The record names the request behind its current saga: audit
		// events of the deprovisioning carry its requester as actor.
		rec.RequestID, rec.RequestedBy = req.RequestID, req.RequestedBy
		for _, st := range rec.Stores {
			st.State = events.StoreDeprovisioning
			st.CommandSentAt = &now
			st.Reason, st.Error = "", ""
		}
		return rec, nil
	})
	if err != nil {
		return err
	}
	if changed {
		s.metrics.sagas.WithLabelValues("deprovision", "started").Inc()
		s.log.Info("deprovisioning started", zap.String("tenant", rec.TenantID), zap.Uint64("generation", rec.Generation))
		if err := s.audit(ctx, rec, events.AuditTenantDeprovisioningStarted, "", "", map[string]any{"request_id": req.RequestID, "requested_by": req.RequestedBy}); err != nil {
			return err
		}
	}
	return s.drive(ctx, rec, true)
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
	s.log.Warn("request rejected", zap.String("subject", msg.Subject()), zap.String("tenant_hint", hint), zap.String("reason", reason))
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
