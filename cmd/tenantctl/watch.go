package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Kinds of tenantEvent.
const (
	// eventState: the registry record's tenant state, generation or
	// reason changed.
	eventState = "state"
	// eventStore: one store's status in the record changed (the
	// orchestrator sent a command or accepted the store's result).
	eventStore = "store"
	// eventOutcome: the orchestrator published a saga outcome
	// (tenant.provisioned, .provision_failed, .deprovisioned, .rejected).
	eventOutcome = "outcome"
	// eventDeleted: the registry record was deleted or purged.
	eventDeleted = "deleted"
	// eventResult: the last line of --wait: where the tenant settled.
	eventResult = "result"
)

// tenantEvent is one line of `watch` and of `provision|deprovision --wait`
// (with -o json, one JSON line each). Kind says which fields are set. It is
// built field by field from the registry record and the outcome event,
// never by copying a payload: it carries no credential (store results'
// age ciphertexts never reach it).
type tenantEvent struct {
	Time       time.Time `json:"time"`
	Kind       string    `json:"kind"`
	TenantID   string    `json:"tenant_id"`
	Generation uint64    `json:"generation,omitempty"`
	SagaID     string    `json:"saga_id,omitempty"`
	// State is the tenant's state (state, result) or the store's (store).
	State string `json:"state,omitempty"`
	Store string `json:"store,omitempty"`
	// Attempt, DurationMS, Verified, IsolationMode: a store's status.
	Attempt       int    `json:"attempt,omitempty"`
	DurationMS    int64  `json:"duration_ms,omitempty"`
	Verified      bool   `json:"verified,omitempty"`
	IsolationMode string `json:"isolation_mode,omitempty"`
	// Subject and Outcome: an outcome's NATS subject and outcome.
	Subject   string `json:"subject,omitempty"`
	Outcome   string `json:"outcome,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Error     string `json:"error,omitempty"`
	// Revision is the registry revision the event was read from.
	Revision uint64 `json:"revision,omitempty"`
	// ElapsedMS is the time since --wait started (--wait only).
	ElapsedMS int64 `json:"elapsed_ms,omitempty"`
	// Record is the settled record (result only).
	Record *events.TenantRecord `json:"record,omitempty"`
}

// recordEvents is what changed from prev (nil: nothing seen yet) to cur, a
// record read at revision rev: a state event when the tenant's state,
// generation or reason changed, and a store event per store whose status
// changed.
func recordEvents(prev, cur *events.TenantRecord, rev uint64, at time.Time) []tenantEvent {
	var out []tenantEvent
	sameGen := prev != nil && prev.Generation == cur.Generation
	if !sameGen || prev.State != cur.State || prev.Reason != cur.Reason {
		out = append(out, tenantEvent{Time: at, Kind: eventState, TenantID: cur.TenantID, Generation: cur.Generation, SagaID: cur.SagaID,
			State: string(cur.State), RequestID: cur.RequestID, Reason: cur.Reason, Error: cur.LastError, Revision: rev})
	}
	for _, s := range events.Stores() {
		st := cur.Stores[s]
		if st == nil {
			continue
		}
		var was *events.StoreStatus
		if sameGen {
			was = prev.Stores[s]
		}
		if was != nil && was.State == st.State && was.Attempt == st.Attempt && was.Error == st.Error &&
			was.Reason == st.Reason && was.Verified == st.Verified {
			continue
		}
		out = append(out, tenantEvent{Time: at, Kind: eventStore, TenantID: cur.TenantID, Generation: cur.Generation, SagaID: cur.SagaID,
			Store: string(s), State: string(st.State), Attempt: st.Attempt, DurationMS: st.DurationMS, Verified: st.Verified,
			IsolationMode: st.IsolationMode, Reason: st.Reason, Error: st.Error, Revision: rev})
	}
	return out
}

// outcomeEvent is the event of a saga outcome received on subject.
func outcomeEvent(subject string, ev *events.TenantOutcomeEvent) tenantEvent {
	at := ev.OccurredAt
	if at.IsZero() {
		at = time.Now()
	}
	return tenantEvent{Time: at, Kind: eventOutcome, TenantID: ev.TenantID, Generation: ev.Generation, SagaID: ev.SagaID,
		Subject: subject, Outcome: string(ev.Outcome), RequestID: ev.RequestID, Reason: ev.Reason}
}

// outcomeSubjects are the saga outcomes watch follows: exactly those the
// operator identity may subscribe to (pkg/busauth).
func outcomeSubjects() []string {
	return events.TenantOutcomeSubjects()
}

// describe renders e for people, without time or tenant.
func (e tenantEvent) describe() string {
	var b strings.Builder
	switch e.Kind {
	case eventState, eventResult:
		fmt.Fprintf(&b, "%s (generation %d)", e.State, e.Generation)
	case eventStore:
		fmt.Fprintf(&b, "  %-8s %s", e.Store, e.State)
		if e.DurationMS > 0 && (e.State == string(events.StoreProvisioned) || e.State == string(events.StoreDeprovisioned) || e.State == string(events.StoreFailed)) {
			fmt.Fprintf(&b, " in %dms", e.DurationMS)
		}
		if e.Attempt > 1 {
			fmt.Fprintf(&b, " (attempt %d)", e.Attempt)
		}
	case eventOutcome:
		fmt.Fprintf(&b, "%s (generation %d)", e.Subject, e.Generation)
	case eventDeleted:
		b.WriteString("record deleted")
	}
	if e.Reason != "" {
		b.WriteString(" — " + e.Reason)
	}
	if e.Error != "" {
		b.WriteString(": " + e.Error)
	}
	return printable(b.String())
}

// printable makes s safe to print on a terminal: control characters (an
// escape sequence in a rejected request's tenant ID or reason) become "?",
// and it is cut at 300 bytes.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, events.Truncate(s, 300))
}

func newWatchCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "watch [<tenant-id>]",
		Short: "Stream tenant events live: registry state changes, each store's progress, saga outcomes",
		Long: `watch prints, as they happen, the events of one tenant (or of every tenant):

  state    the registry record's state, generation or reason changed
  store    one store's status changed: the command was sent, or the store's
           result was accepted (provisioned, failed, deprovisioned), with its
           duration, attempt, verification and error
  outcome  the orchestrator published tenant.provisioned, .provision_failed,
           .deprovisioned or .rejected
  deleted  the registry record was removed

It starts with the current state of the matching records, then follows the
tenants registry (a KV watch) and the outcome subjects, which is what the
operator identity may read. Store results reach watch through the registry,
as the orchestrator accepted them; credentials never appear (they are age
ciphertexts in the results, and watch never prints a payload).

One line per event; with -o json one JSON line per event, fields: time, kind,
tenant_id, generation, saga_id, state, store, attempt, duration_ms, verified,
isolation_mode, subject, outcome, request_id, reason, error, revision.
Ctrl-C ends it (exit 0).`,
		Example: "  tenantctl watch acme\n  tenantctl watch -o json | jq 'select(.kind==\"outcome\")'",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			tenant := ""
			if len(args) == 1 {
				id, err := parseID(args[0])
				if err != nil {
					return err
				}
				tenant = string(id)
			}
			ctx := cmd.Context()
			cctx, cancel := context.WithTimeout(ctx, g.timeout)
			defer cancel()
			c, err := g.connect(cctx)
			if err != nil {
				return err
			}
			defer c.close()
			return g.watch(ctx, c, tenant)
		},
	}
}

// watch streams the events of tenant ("" for all) until ctx ends.
func (g *globals) watch(ctx context.Context, c *conn, tenant string) error {
	outcomes := make(chan tenantEvent, 64)
	done := make(chan struct{})
	defer close(done)
	for _, subj := range outcomeSubjects() {
		sub, err := c.nc.Subscribe(subj, func(m *nats.Msg) {
			ev, err := events.DecodeTenantOutcomeEvent(m.Data)
			if err != nil || (tenant != "" && ev.TenantID != tenant) {
				return
			}
			select {
			case outcomes <- outcomeEvent(m.Subject, ev):
			case <-done:
			}
		})
		if err != nil {
			return fail(exitUnavailable, "subscribe %s: %v", subj, err)
		}
		defer sub.Unsubscribe()
	}
	if err := c.nc.FlushTimeout(g.timeout); err != nil {
		return fail(exitUnavailable, "subscribe to outcomes: %v", err)
	}
	key := tenant
	if key == "" {
		key = jetstream.AllKeys
	}
	w, err := c.kv.Watch(ctx, key)
	if err != nil {
		return fail(exitUnavailable, "watch registry: %v", err)
	}
	defer w.Stop()
	prev := map[string]*events.TenantRecord{}
	for {
		select {
		case <-ctx.Done():
			return nil // Ctrl-C
		case e := <-outcomes:
			if err := g.printEvent(e); err != nil {
				return err
			}
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fail(exitUnavailable, "registry watch ended")
			}
			if e == nil {
				continue // the current values are all out; updates follow
			}
			for _, ev := range entryEvents(prev, e) {
				if err := g.printEvent(ev); err != nil {
					return err
				}
			}
		}
	}
}

// entryEvents turns one registry entry into events, remembering the record
// in prev.
func entryEvents(prev map[string]*events.TenantRecord, e jetstream.KeyValueEntry) []tenantEvent {
	if e.Operation() != jetstream.KeyValuePut {
		delete(prev, e.Key())
		return []tenantEvent{{Time: e.Created(), Kind: eventDeleted, TenantID: e.Key(), Revision: e.Revision()}}
	}
	rec, err := events.DecodeTenantRecord(e.Value())
	if err != nil {
		return []tenantEvent{{Time: e.Created(), Kind: eventState, TenantID: e.Key(), State: "invalid", Error: "the record does not decode", Revision: e.Revision()}}
	}
	out := recordEvents(prev[e.Key()], rec, e.Revision(), e.Created())
	prev[e.Key()] = rec
	return out
}

// printEvent prints one watch line.
func (g *globals) printEvent(e tenantEvent) error {
	return g.line(e, func(w io.Writer) {
		fmt.Fprintf(w, "%s  %-12s %-8s %s\n", e.Time.Local().Format("15:04:05.000"), printable(e.TenantID), e.Kind, strings.TrimLeft(e.describe(), " "))
	})
}
