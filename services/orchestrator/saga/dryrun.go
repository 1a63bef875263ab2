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

// The dry run (DESIGN.md §10): tenant.requested with "dry_run": true sends
// a plan command to every store and answers tenant.planned with the four
// answers, changing nothing — not the stores, not the registry. Its
// commands carry a saga ID beginning with events.DryRunSagaPrefix; their
// results are never applied to a tenant record. The dry run is one key of
// the dry-runs bucket (events.KVDryRuns, expiring after an hour), named by
// its saga ID: the request, and each store's answer added by a
// compare-and-set (so of two replicas adding the last two answers, exactly
// one writes the fourth, whatever replica of the bucket each read from).
// Whoever writes the fourth publishes tenant.planned and audits
// TENANT_PLANNED, both with IDs derived from the saga ID, so a redelivery
// answers once.
//
// The dry run's saga ID and its commands' attempt number come from the
// request's stream sequence: a redelivered request sends the same
// commands (de-duplicated by the stream), a new request gets new ones.

// dryRunHead is the dry run's request: what tenant.planned needs besides
// the answers, and the proof that a result answers a dry run we sent.
type dryRunHead struct {
	TenantID    string `json:"tenant_id"`
	Plan        string `json:"plan"`
	Generation  uint64 `json:"generation"`
	Attempt     int    `json:"attempt"`
	RequestID   string `json:"request_id,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
}

// dryRunDoc is the value of a dry run's key.
type dryRunDoc struct {
	Head    dryRunHead                     `json:"request"`
	Answers map[events.Store]*dryRunAnswer `json:"answers,omitempty"`
}

// dryRunAnswer is one store's answer.
type dryRunAnswer struct {
	Outcome events.Outcome `json:"outcome"`
	DryRun  *events.DryRun `json:"dry_run,omitempty"`
	Reason  string         `json:"reason,omitempty"`
	Error   string         `json:"error,omitempty"`
}

// IsDryRunSaga reports whether id is a dry run's saga ID.
func IsDryRunSaga(id string) bool { return strings.HasPrefix(id, events.DryRunSagaPrefix) }

func (s *Saga) dryRuns(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := s.js.KeyValue(ctx, events.KVDryRuns)
	if err != nil {
		return nil, fmt.Errorf("open kv %s: %w", events.KVDryRuns, err)
	}
	return kv, nil
}

// dryRun starts a dry run: it reads the registry (only reads it) for the
// generation a provision would get, records the request in the dry-runs
// bucket and sends the plan commands.
func (s *Saga) dryRun(ctx context.Context, msg jetstream.Msg, req *events.TenantRequested, seq uint64) error {
	plan, err := s.plans.Lookup(req.Plan)
	if err != nil {
		return s.reject(ctx, msg, fmt.Sprintf("dry run %s: %v", req.TenantID, err))
	}
	rec, _, err := s.reg.Get(ctx, req.TenantID)
	if err != nil {
		return err
	}
	gen := uint64(1)
	if rec != nil {
		gen = rec.Generation + 1
	}
	attempt := int(seq)
	if attempt <= 0 {
		attempt = 1
	}
	saga := fmt.Sprintf("%s%s-s%d", events.DryRunSagaPrefix, req.TenantID, seq)
	kv, err := s.dryRuns(ctx)
	if err != nil {
		return err
	}
	head := dryRunHead{TenantID: req.TenantID, Plan: plan.Name, Generation: gen, Attempt: attempt, RequestID: req.RequestID, RequestedBy: req.RequestedBy}
	// Create, not put: a redelivered request keeps the answers in.
	if _, err := kv.Create(ctx, saga, mustJSON(dryRunDoc{Head: head})); err != nil && !isConflict(err) {
		return fmt.Errorf("dry run %s: %w", saga, err)
	}
	now := s.now()
	for _, store := range events.Stores() {
		cmd := &events.StoreCommand{TenantID: req.TenantID, Generation: gen, SagaID: saga, Store: store, Action: events.ActionPlan,
			Attempt: attempt, IssuedAt: now, Deadline: now.Add(s.cfg.SagaTimeout), Plan: plan.ForStore(store)}
		if err := s.publish(ctx, events.CommandSubject(store, events.ActionPlan), events.CommandMsgID(cmd), cmd, req.TenantID, gen); err != nil {
			return err
		}
	}
	s.logger(ctx).Info("dry run sent", zap.String("tenant", req.TenantID), zap.String("plan", plan.Name), zap.String("saga", saga))
	return nil
}

// dryRunResult keeps a store's answer to a dry run and, once all four are
// in, answers. It reports whether res was a dry run's.
func (s *Saga) dryRunResult(ctx context.Context, subject events.Store, res *events.StoreResult) (bool, error) {
	if !IsDryRunSaga(res.SagaID) {
		return false, nil
	}
	if subject != res.Store || res.Outcome.Action() != events.ActionPlan {
		s.metrics.resultsRejected.WithLabelValues(rejectStore).Inc()
		s.logger(ctx).Warn("dry run: result dropped", zap.String("saga", res.SagaID), zap.String("store", string(res.Store)), zap.String("outcome", string(res.Outcome)))
		return true, nil
	}
	kv, err := s.dryRuns(ctx)
	if err != nil {
		return true, err
	}
	ans := &dryRunAnswer{Outcome: res.Outcome, DryRun: res.DryRun, Reason: res.Reason, Error: res.Error}
	for {
		e, err := kv.Get(ctx, res.SagaID)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			s.metrics.resultsRejected.WithLabelValues(rejectSaga).Inc()
			s.logger(ctx).Warn("dry run: result for no dry run of ours (or one expired)", zap.String("saga", events.Truncate(res.SagaID, 128)))
			return true, nil
		}
		if err != nil {
			return true, err
		}
		var doc dryRunDoc
		if err := json.Unmarshal(e.Value(), &doc); err != nil {
			return true, fmt.Errorf("dry run %s: %w", res.SagaID, err)
		}
		if h := doc.Head; h.TenantID != res.TenantID || h.Generation != res.Generation || h.Attempt != res.Attempt {
			s.metrics.resultsRejected.WithLabelValues(rejectSaga).Inc()
			s.logger(ctx).Warn("dry run: result does not answer the dry run's commands", zap.String("saga", res.SagaID), zap.String("store", string(res.Store)))
			return true, nil
		}
		if doc.Answers == nil {
			doc.Answers = map[events.Store]*dryRunAnswer{}
		}
		if _, ok := doc.Answers[res.Store]; ok {
			// A redelivered result: answer again if complete (the
			// publishes are de-duplicated), else nothing to add.
			if len(doc.Answers) == len(events.Stores()) {
				return true, s.answerDryRun(ctx, res.SagaID, &doc.Head, doc.Answers)
			}
			return true, nil
		}
		doc.Answers[res.Store] = ans
		if _, err := kv.Update(ctx, res.SagaID, mustJSON(doc), e.Revision()); err != nil {
			if isConflict(err) {
				continue // another answer came in: read again
			}
			return true, err
		}
		if len(doc.Answers) < len(events.Stores()) {
			return true, nil
		}
		return true, s.answerDryRun(ctx, res.SagaID, &doc.Head, doc.Answers)
	}
}

// answerDryRun publishes TENANT_PLANNED and tenant.planned.
func (s *Saga) answerDryRun(ctx context.Context, saga string, head *dryRunHead, answers map[events.Store]*dryRunAnswer) error {
	out := &events.TenantOutcomeEvent{Outcome: events.TenantOutcomePlanned, TenantID: head.TenantID, SagaID: saga, RequestID: head.RequestID,
		OccurredAt: s.now(), Plan: head.Plan, DryRun: map[events.Store]*events.DryRun{}}
	conflicts := 0
	for store, a := range answers {
		if a.Outcome == events.OutcomePlanned && a.DryRun != nil {
			out.DryRun[store] = a.DryRun
			conflicts += len(a.DryRun.Conflicts)
			continue
		}
		if out.Failed == nil {
			out.Failed = map[events.Store]string{}
		}
		out.Failed[store] = events.Truncate(strings.TrimSpace(a.Reason+" "+a.Error), 512)
	}
	actor := head.RequestedBy
	if actor == "" {
		actor = Source
	}
	details := map[string]any{"plan": head.Plan, "dry_run": out.DryRun, "failed": out.Failed, "conflicts": conflicts, "request_id": head.RequestID, "saga_id": saga}
	ev := &events.AuditEvent{
		EventID: events.AuditEventID(events.AuditTenantPlanned, head.TenantID, 0, "", saga),
		Type:    events.AuditTenantPlanned, TenantID: head.TenantID, SagaID: saga, Actor: actor, Source: Source,
		OccurredAt: out.OccurredAt, Details: mustJSON(compact(details)),
	}
	if err := s.publish(ctx, events.AuditSubject(ev.Type), ev.EventID, ev, head.TenantID, 0); err != nil {
		return err
	}
	msgID := events.MsgID{Kind: "tenant", Tenant: head.TenantID, Step: string(events.TenantOutcomePlanned) + ":" + saga}.String()
	if err := s.publish(ctx, events.TenantOutcomeSubject(events.TenantOutcomePlanned), msgID, out, head.TenantID, 0); err != nil {
		return err
	}
	s.logger(ctx).Info("dry run answered", zap.String("tenant", head.TenantID), zap.String("saga", saga), zap.Int("conflicts", conflicts), zap.Int("failed", len(out.Failed)))
	return nil
}
