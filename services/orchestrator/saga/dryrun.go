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
// results are never applied to a tenant record: each is kept in the
// dry-runs bucket (events.KVDryRuns, keys expire after an hour) until all
// four are in, then whoever stored the last one publishes tenant.planned
// and audits TENANT_PLANNED (both with IDs derived from the dry run's saga
// ID, so two replicas finishing at once answer once).
//
// The dry run's saga ID and its commands' attempt number come from the
// request's stream sequence: a redelivered request sends the same
// commands (de-duplicated by the stream), a new request gets new ones.

// dryRunHead is the dry-runs bucket's record of the request, under
// <saga>.request: what tenant.planned needs besides the answers, and the
// proof that a result answers a dry run we sent.
type dryRunHead struct {
	TenantID    string `json:"tenant_id"`
	Plan        string `json:"plan"`
	Generation  uint64 `json:"generation"`
	Attempt     int    `json:"attempt"`
	RequestID   string `json:"request_id,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
}

// dryRunAnswer is one store's answer, under <saga>.<store>.
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
	if _, err := kv.Put(ctx, saga+".request", mustJSON(head)); err != nil {
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
	head, err := s.dryRunHead(ctx, kv, res.SagaID)
	if err != nil {
		return true, err
	}
	if head == nil || head.TenantID != res.TenantID || head.Generation != res.Generation || head.Attempt != res.Attempt {
		s.metrics.resultsRejected.WithLabelValues(rejectSaga).Inc()
		s.logger(ctx).Warn("dry run: result for no dry run of ours (or one expired)", zap.String("saga", events.Truncate(res.SagaID, 128)))
		return true, nil
	}
	ans := dryRunAnswer{Outcome: res.Outcome, DryRun: res.DryRun, Reason: res.Reason, Error: res.Error}
	if _, err := kv.Put(ctx, events.DryRunKey(res.SagaID, res.Store), mustJSON(ans)); err != nil {
		return true, err
	}
	answers := map[events.Store]*dryRunAnswer{}
	for _, store := range events.Stores() {
		e, err := kv.Get(ctx, events.DryRunKey(res.SagaID, store))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return true, nil // not every store has answered yet
		}
		if err != nil {
			return true, err
		}
		var a dryRunAnswer
		if err := json.Unmarshal(e.Value(), &a); err != nil {
			return true, fmt.Errorf("dry run %s: %s's answer: %w", res.SagaID, store, err)
		}
		answers[store] = &a
	}
	return true, s.answerDryRun(ctx, res.SagaID, head, answers)
}

func (s *Saga) dryRunHead(ctx context.Context, kv jetstream.KeyValue, saga string) (*dryRunHead, error) {
	e, err := kv.Get(ctx, saga+".request")
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var h dryRunHead
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return nil, nil
	}
	return &h, nil
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
