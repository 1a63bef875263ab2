package saga

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
)

func (s *Saga) handleResult(ctx context.Context, msg jetstream.Msg) error {
	res, err := events.DecodeStoreResult(msg.Data())
	if err != nil {
		// An agent that publishes something invalid is a bug; retrying
		// cannot fix it. The deadline rolls the saga back.
		s.log.Error("invalid store result dropped", zap.String("subject", msg.Subject()), zap.Error(err))
		return nil
	}
	meta, err := msg.Metadata()
	if err != nil {
		return fmt.Errorf("result metadata: %w", err)
	}
	seq := meta.Sequence.Stream
	now := s.now()
	var auditType events.AuditType
	var newCommands bool // applying the result calls for commands not sent before
	var rollback bool    // applying the result started the rollback
	rec, changed, err := s.reg.Update(ctx, res.TenantID, func(rec *events.TenantRecord) (*events.TenantRecord, error) {
		auditType, newCommands, rollback = "", false, false
		if rec == nil || rec.Generation != res.Generation {
			return nil, errNoChange // a result for a generation that is not current
		}
		st := rec.Stores[res.Store]
		if st == nil {
			return nil, errNoChange
		}
		completed := res.CompletedAt
		switch res.Outcome {
		case events.OutcomeProvisioned:
			switch {
			case rec.State == events.TenantProvisioning && st.State == events.StorePending:
				applyProvisioned(st, res, seq, &completed)
				auditType = events.AuditStoreProvisioned
				if !res.Verification.Passed {
					s.startRollback(rec, fmt.Sprintf("%s: isolation checks did not pass", res.Store), now)
					newCommands, rollback = true, true
				}
			case rec.State == events.TenantProvisioning || rec.State == events.TenantActive:
				if st.State != events.StoreProvisioned || st.CredentialID == res.CredentialID {
					return nil, errNoChange
				}
				// A redelivered provision command reset the credential:
				// the later result is what the store holds. Re-seal.
				applyProvisioned(st, res, seq, &completed)
				auditType = events.AuditStoreProvisioned
				if rec.State == events.TenantActive {
					rec.Secrets = nil
				}
			default:
				// Provisioned after compensation began (or ended): the
				// store holds resources again; compensate them too.
				if st.CredentialID == res.CredentialID && st.State == events.StoreDeprovisioning {
					return nil, errNoChange // already being compensated
				}
				st.CredentialID = res.CredentialID
				st.State = events.StoreDeprovisioning
				st.Attempt++
				st.CommandSentAt = &now
				auditType = events.AuditStoreProvisioned
				newCommands = true
			}
		case events.OutcomeProvisionFailed:
			if seq <= st.ResultSeq {
				return nil, errNoChange // this very result was applied before
			}
			if rec.State == events.TenantRollingBack || rec.State == events.TenantFailed {
				// A provision attempt that ended after compensation began
				// may have created part of the tenant's resources after the
				// deprovision ran: compensate this store again. "expired"
				// promises the store was not touched.
				if res.Reason == events.ReasonExpired {
					return nil, errNoChange
				}
				st.ResultSeq = seq
				st.State = events.StoreDeprovisioning
				st.Attempt++
				st.CommandSentAt = &now
				auditType = events.AuditStoreProvisionFailed
				newCommands = true
				return rec, nil
			}
			if rec.State != events.TenantProvisioning || st.State != events.StorePending {
				return nil, errNoChange
			}
			st.ResultSeq = seq
			st.State = events.StoreFailed
			st.Reason, st.Error, st.CompletedAt, st.DurationMS = res.Reason, res.Error, &completed, res.DurationMS
			auditType = events.AuditStoreProvisionFailed
			reason := fmt.Sprintf("%s: %s", res.Store, res.Reason)
			if res.Error != "" {
				reason += ": " + res.Error
			}
			s.startRollback(rec, reason, now)
			newCommands, rollback = true, true
		case events.OutcomeDeprovisioned:
			if st.State != events.StoreDeprovisioning || res.Attempt != st.Attempt {
				return nil, errNoChange // stale: a later attempt is outstanding
			}
			st.State = events.StoreDeprovisioned
			st.CompletedAt, st.DurationMS = &completed, res.DurationMS
			st.Reason, st.Error = "", ""
			st.Warnings = res.Warnings
			auditType = events.AuditStoreDeprovisioned
			if rec.State == events.TenantRollingBack && allStores(rec, events.StoreDeprovisioned) {
				rec.State = events.TenantFailed
				rec.Deadline = nil
			}
		case events.OutcomeDeprovisionFailed:
			if st.State != events.StoreDeprovisioning || res.Attempt != st.Attempt {
				return nil, errNoChange
			}
			// Keep the store in deprovisioning; the reconciler retries it
			// after the backoff, and the record shows why meanwhile.
			st.Reason, st.Error = res.Reason, res.Error
			rec.LastError = fmt.Sprintf("%s deprovision attempt %d: %s %s", res.Store, res.Attempt, res.Reason, res.Error)
			auditType = events.AuditStoreDeprovisionFailed
		}
		return rec, nil
	})
	if err != nil {
		return err
	}
	if rec == nil {
		return nil
	}
	if auditType != "" || !changed {
		// Re-publishing the audit event of an already applied result is
		// harmless (same event ID) and completes a publish a crash cut off.
		t := auditType
		if t == "" {
			t = auditTypeOf(res.Outcome)
		}
		disc := fmt.Sprintf("a%d", res.Attempt)
		if res.Outcome == events.OutcomeProvisioned {
			disc = res.CredentialID
		}
		details := map[string]any{"outcome": res.Outcome, "duration_ms": res.DurationMS, "resources": res.Resources, "reason": res.Reason, "error": res.Error, "warnings": res.Warnings, "isolation_mode": res.IsolationMode}
		if res.Verification != nil {
			details["verification"] = res.Verification
		}
		if rec.Generation == res.Generation {
			if err := s.audit(ctx, rec, t, res.Store, disc, details); err != nil {
				return err
			}
		}
	}
	if rollback {
		s.log.Warn("rolling back", zap.String("tenant", rec.TenantID), zap.Uint64("generation", rec.Generation), zap.String("reason", rec.Reason))
		if err := s.audit(ctx, rec, events.AuditTenantRollbackStarted, "", "", map[string]any{"reason": rec.Reason}); err != nil {
			return err
		}
	}
	if changed {
		s.log.Info("store result applied", zap.String("tenant", res.TenantID), zap.Uint64("generation", res.Generation),
			zap.String("store", string(res.Store)), zap.String("outcome", string(res.Outcome)), zap.String("state", string(rec.State)))
	}
	// A result that changed nothing may be a redelivery after a crash that
	// came between the registry write and the publishes: send everything
	// the record implies again (duplicates are dropped by their IDs).
	return s.drive(ctx, rec, newCommands || !changed)
}

func applyProvisioned(st *events.StoreStatus, res *events.StoreResult, seq uint64, completed *time.Time) {
	st.State = events.StoreProvisioned
	st.Resources = res.Resources
	st.Verified = res.Verification != nil && res.Verification.Passed
	st.IsolationMode = res.IsolationMode
	st.CompletedAt = completed
	st.DurationMS = res.DurationMS
	st.Warnings = res.Warnings
	st.CredentialID = res.CredentialID
	st.ResultSeq = seq
	st.Reason, st.Error = "", ""
}

func auditTypeOf(o events.Outcome) events.AuditType {
	switch o {
	case events.OutcomeProvisioned:
		return events.AuditStoreProvisioned
	case events.OutcomeProvisionFailed:
		return events.AuditStoreProvisionFailed
	case events.OutcomeDeprovisioned:
		return events.AuditStoreDeprovisioned
	}
	return events.AuditStoreDeprovisionFailed
}

// startRollback moves a provisioning record to rolling_back: every store
// that is not known to be clean gets a deprovision, including stores that
// never answered (deprovision is idempotent).
func (s *Saga) startRollback(rec *events.TenantRecord, reason string, now time.Time) {
	rec.State = events.TenantRollingBack
	rec.Reason = reason
	rec.LastError = reason
	rec.Announced = ""
	for _, st := range rec.Stores {
		if st.State == events.StoreDeprovisioned {
			continue
		}
		if st.State == events.StorePending {
			// It may still act on its provision command; the deprovision
			// (or a later late-provisioned compensation) cleans up.
			st.Reason = "no answer before rollback"
		}
		st.State = events.StoreDeprovisioning
		st.CommandSentAt = &now
	}
}

func allStores(rec *events.TenantRecord, state events.StoreState) bool {
	for _, st := range events.Stores() {
		if ss := rec.Stores[st]; ss == nil || ss.State != state {
			return false
		}
	}
	return true
}

// drive publishes everything the record's current state implies and
// finishes steps that need I/O outside the registry: provision commands for
// pending stores, deprovision commands for stores being compensated, the
// sealed secrets once every store is provisioned, the deletion of the
// sealed secrets once a deprovisioning tenant's stores are clean, and the
// announcement of a settled state. Every publish has a deterministic ID, so
// driving twice sends nothing twice. commands=false skips re-publishing the
// store commands, for a result whose applying sent no new one.
func (s *Saga) drive(ctx context.Context, rec *events.TenantRecord, commands bool) error {
	for _, store := range events.Stores() {
		if !commands {
			break
		}
		st := rec.Stores[store]
		if st == nil {
			continue
		}
		switch {
		case rec.State == events.TenantProvisioning && st.State == events.StorePending:
			if err := s.command(ctx, rec, store, events.ActionProvision, st.Attempt); err != nil {
				return err
			}
		case st.State == events.StoreDeprovisioning:
			if err := s.command(ctx, rec, store, events.ActionDeprovision, st.Attempt); err != nil {
				return err
			}
		}
	}
	var err error
	switch {
	case rec.State == events.TenantProvisioning && allStores(rec, events.StoreProvisioned):
		rec, err = s.seal(ctx, rec)
	case rec.State == events.TenantActive && rec.Secrets == nil:
		rec, err = s.seal(ctx, rec)
	case rec.State == events.TenantDeprovisioning && allStores(rec, events.StoreDeprovisioned):
		rec, err = s.finishDeprovisioning(ctx, rec)
	}
	if err != nil || rec == nil {
		return err
	}
	if rec.State.Terminal() || rec.State == events.TenantActive {
		return s.announce(ctx, rec)
	}
	return nil
}

func (s *Saga) command(ctx context.Context, rec *events.TenantRecord, store events.Store, action events.Action, attempt int) error {
	deadline := s.now().Add(s.cfg.SagaTimeout)
	if action == events.ActionProvision && rec.Deadline != nil {
		deadline = *rec.Deadline
	}
	cmd := &events.StoreCommand{
		TenantID: rec.TenantID, Generation: rec.Generation, SagaID: rec.SagaID, Store: store, Action: action,
		Attempt: attempt, IssuedAt: s.now(), Deadline: deadline,
	}
	return s.publish(ctx, events.CommandSubject(store, action), events.CommandMsgID(cmd), cmd, rec.TenantID, rec.Generation)
}

// announce publishes the audit event and tenant.<outcome> of a settled
// state once, then records that it did (the outbox marker).
func (s *Saga) announce(ctx context.Context, rec *events.TenantRecord) error {
	if rec.Announced == rec.State {
		return nil
	}
	var (
		auditType events.AuditType
		outcome   events.Outcome
	)
	switch rec.State {
	case events.TenantActive:
		auditType, outcome = events.AuditTenantProvisioned, events.TenantOutcomeProvisioned
	case events.TenantFailed:
		auditType, outcome = events.AuditTenantRolledBack, events.TenantOutcomeProvisionFailed
	case events.TenantDeprovisioned:
		auditType, outcome = events.AuditTenantDeprovisioned, events.TenantOutcomeDeprovisioned
	default:
		return nil
	}
	details := map[string]any{"stores": storeSummary(rec), "reason": rec.Reason}
	ev := &events.TenantOutcomeEvent{
		Outcome: outcome, TenantID: rec.TenantID, Generation: rec.Generation, SagaID: rec.SagaID,
		RequestID: rec.RequestID, Reason: rec.Reason, OccurredAt: s.now(),
	}
	if rec.Secrets != nil && rec.State == events.TenantActive {
		ev.SecretsRef = rec.Secrets.Bucket + "/" + rec.Secrets.Object
		ev.SecretsSHA256 = rec.Secrets.SHA256
		details["secrets_sha256"] = rec.Secrets.SHA256
	}
	// The audit event goes first: TENANT_PROVISIONED is the fact, the
	// tenant.provisioned event the notification of it.
	if err := s.audit(ctx, rec, auditType, "", "", details); err != nil {
		return err
	}
	msgID := events.MsgID{Kind: "tenant", Tenant: rec.TenantID, Generation: rec.Generation, Step: string(outcome)}.String()
	if err := s.publish(ctx, events.TenantOutcomeSubject(outcome), msgID, ev, rec.TenantID, rec.Generation); err != nil {
		return err
	}
	state := rec.State
	_, _, err := s.reg.Update(ctx, rec.TenantID, func(cur *events.TenantRecord) (*events.TenantRecord, error) {
		if cur == nil || cur.Generation != rec.Generation || cur.State != state || cur.Announced == state {
			return nil, errNoChange
		}
		cur.Announced = state
		return cur, nil
	})
	if err == nil {
		s.metrics.sagas.WithLabelValues(sagaKind(state), string(state)).Inc()
		s.log.Info("tenant settled", zap.String("tenant", rec.TenantID), zap.Uint64("generation", rec.Generation), zap.String("state", string(state)), zap.String("reason", rec.Reason))
	}
	return err
}

func sagaKind(s events.TenantState) string {
	if s == events.TenantDeprovisioned {
		return "deprovision"
	}
	return "provision"
}

func storeSummary(rec *events.TenantRecord) map[string]any {
	out := map[string]any{}
	for store, st := range rec.Stores {
		m := map[string]any{"state": st.State, "duration_ms": st.DurationMS}
		if st.IsolationMode != "" {
			m["isolation_mode"] = st.IsolationMode
		}
		if st.Reason != "" {
			m["reason"] = st.Reason
		}
		out[string(store)] = m
	}
	return out
}

// audit publishes an audit event for rec with a deterministic ID.
func (s *Saga) audit(ctx context.Context, rec *events.TenantRecord, t events.AuditType, store events.Store, disc string, details map[string]any) error {
	for k, v := range details {
		switch v := v.(type) {
		case nil:
			delete(details, k)
		case string:
			if v == "" {
				delete(details, k)
			}
		case []string:
			if len(v) == 0 {
				delete(details, k)
			}
		case map[string]string:
			if len(v) == 0 {
				delete(details, k)
			}
		}
	}
	raw, err := json.Marshal(details)
	if err != nil {
		return fmt.Errorf("audit details: %w", err)
	}
	actor := rec.RequestedBy
	if actor == "" {
		actor = Source
	}
	ev := &events.AuditEvent{
		EventID: events.AuditEventID(t, rec.TenantID, rec.Generation, store, disc),
		Type:    t, TenantID: rec.TenantID, Generation: rec.Generation, SagaID: rec.SagaID, Store: store,
		Actor: actor, OccurredAt: s.now(), Source: Source, Details: raw,
	}
	return s.publish(ctx, events.AuditSubject(t), ev.EventID, ev, rec.TenantID, rec.Generation)
}

// pendingStores names the stores that have not answered, for a deadline
// rollback's reason.
func pendingStores(rec *events.TenantRecord) string {
	var names []string
	for store, st := range rec.Stores {
		if st.State == events.StorePending {
			names = append(names, string(store))
		}
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
