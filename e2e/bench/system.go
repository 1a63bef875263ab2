package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/busauth"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// system is the running stack of `make up`, seen as the operator sees it:
// requests go to tenant.*.requested, outcomes come back on tenant.<outcome>.
type system struct {
	cfg config
	nc  *nats.Conn
	js  jetstream.JetStream
	kv  jetstream.KeyValue

	mu      sync.Mutex
	waiting map[string]waiter // by tenant
}

// waiter is a requester waiting for the outcome of one request. A
// duplicate publish of an earlier outcome (two executors of one effect:
// the stream drops the second, a core subscriber sees both) is not it.
type waiter struct {
	ch     chan *events.TenantOutcomeEvent
	deprov bool
}

func (w waiter) wants(o events.Outcome) bool {
	switch o {
	case events.TenantOutcomeRejected:
		return true
	case events.TenantOutcomeDeprovisioned:
		return w.deprov
	}
	return !w.deprov
}

func connect(ctx context.Context, cfg config, creds string, role busauth.Role) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{nats.Name("bench-e2e"), nats.MaxReconnects(-1), nats.CustomInboxPrefix(role.InboxPrefix())}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	nc, err := nats.Connect(cfg.Env["NATS_URL"], opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", cfg.Env["NATS_URL"], err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func openSystem(ctx context.Context, cfg config) (*system, error) {
	nc, js, err := connect(ctx, cfg, cfg.Env["NATS_CREDS"], busauth.RoleOperator)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, events.KVTenants)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	s := &system{cfg: cfg, nc: nc, js: js, kv: kv, waiting: map[string]waiter{}}
	for _, subj := range []string{events.SubjectTenantProvisioned, events.SubjectTenantProvisionFailed, events.SubjectTenantDeprovisioned, events.SubjectTenantRejected} {
		if _, err := nc.Subscribe(subj, s.onOutcome); err != nil {
			nc.Close()
			return nil, fmt.Errorf("subscribe %s: %w", subj, err)
		}
	}
	if err := nc.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	return s, nil
}

func (s *system) close() { s.nc.Close() }

func (s *system) onOutcome(m *nats.Msg) {
	ev, err := events.DecodeTenantOutcomeEvent(m.Data)
	if err != nil {
		return
	}
	s.mu.Lock()
	w, ok := s.waiting[ev.TenantID]
	if ok && w.wants(ev.Outcome) {
		delete(s.waiting, ev.TenantID)
	}
	s.mu.Unlock()
	if ok && w.wants(ev.Outcome) {
		w.ch <- ev
	}
}

// result is one tenant's request as the requester saw it.
type result struct {
	id      string
	took    time.Duration
	sent    time.Time
	done    time.Time
	outcome events.Outcome
	reason  string
	failed  bool
}

// run sends one request per tenant (deprovision or provision), at most
// 64 publishes at once, and waits for every outcome.
func (s *system) run(ctx context.Context, ids []string, deprovision bool) ([]result, error) {
	subject := events.SubjectTenantRequested
	if deprovision {
		subject = events.SubjectTenantDeprovisionRequested
	}
	out := make([]result, len(ids))
	chans := make([]chan *events.TenantOutcomeEvent, len(ids))
	s.mu.Lock()
	for i, id := range ids {
		chans[i] = make(chan *events.TenantOutcomeEvent, 1)
		s.waiting[id] = waiter{ch: chans[i], deprov: deprovision}
	}
	s.mu.Unlock()
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			data := fmt.Appendf(nil, `{"tenant_id":%q,"requested_by":"bench-e2e"}`, id)
			out[i] = result{id: id, sent: time.Now()}
			if _, err := s.js.Publish(ctx, subject, data); err != nil {
				errs[i] = fmt.Errorf("publish %s for %s: %w", subject, id, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	deadline := time.NewTimer(s.cfg.Timeout)
	defer deadline.Stop()
	var failed []string
	for i := range ids {
		select {
		case ev := <-chans[i]:
			out[i].done, out[i].outcome, out[i].reason = time.Now(), ev.Outcome, ev.Reason
			out[i].took = out[i].done.Sub(out[i].sent)
			want := events.TenantOutcomeProvisioned
			if deprovision {
				want = events.TenantOutcomeDeprovisioned
			}
			out[i].failed = ev.Outcome != want
			if ev.Outcome != want {
				failed = append(failed, fmt.Sprintf("%s: %s (%s)", ids[i], ev.Outcome, ev.Reason))
			}
		case <-deadline.C:
			return nil, fmt.Errorf("no outcome for %s within BENCH_TIMEOUT=%s", ids[i], s.cfg.Timeout)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if len(failed) > 0 && len(ids) == 1 {
		return out, fmt.Errorf("%s did not succeed", failed[0])
	}
	if len(failed) > 0 {
		progress("!! %d of %d did not succeed, e.g. %s", len(failed), len(ids), failed[0])
	}
	return out, nil
}

// records reads the registry records of ids.
func (s *system) records(ctx context.Context, ids []string) []*events.TenantRecord {
	var out []*events.TenantRecord
	for _, id := range ids {
		e, err := s.kv.Get(ctx, id)
		if err != nil {
			continue
		}
		if rec, err := events.DecodeTenantRecord(e.Value()); err == nil {
			out = append(out, rec)
		}
	}
	return out
}

// proc is one process of the stack as /proc shows it.
type proc struct {
	rssKB int64
	cpu   time.Duration // user + system
}

// readProc reads the RSS and CPU time of the service `make up` started
// under name (.dev/pids/<name>.pid).
func readProc(root, name string) (proc, error) {
	raw, err := os.ReadFile(filepath.Join(root, ".dev", "pids", name+".pid"))
	if err != nil {
		return proc{}, err
	}
	pid := strings.TrimSpace(string(raw))
	f, err := os.Open(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return proc{}, err
	}
	defer f.Close()
	var p proc
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			p.rssKB, _ = strconv.ParseInt(strings.Fields(v)[0], 10, 64)
		}
	}
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return p, err
	}
	// Fields after the command name (which is in parentheses): utime is
	// the 14th field of the line, stime the 15th.
	s := string(stat)
	rest := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(rest) > 12 {
		ut, _ := strconv.ParseInt(rest[11], 10, 64)
		st, _ := strconv.ParseInt(rest[12], 10, 64)
		p.cpu = time.Duration(ut+st) * time.Second / 100 // USER_HZ
	}
	return p, nil
}

// metric reads one sample from the orchestrator's /metrics (make up serves
// it on HEALTH_PORT_BASE, 19180).
func metric(name string) (float64, bool) { return metricAt(0, name) }

// metricAt sums the samples of name (whatever their labels) on the
// /metrics of the service make up serves on HEALTH_PORT_BASE+offset
// (0 orchestrator, 1–4 the MinIO, PostgreSQL, Qdrant and Redis agents).
func metricAt(offset int, name string) (float64, bool) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", 19180+offset))
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	return sumSamples(resp.Body, name)
}

// sumSamples sums the samples of name, whatever their labels, in a
// Prometheus text exposition.
func sumSamples(r io.Reader, name string) (float64, bool) {
	var (
		sum   float64
		found bool
	)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), name)
		if !ok || line == "" || (line[0] != ' ' && line[0] != '{') {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i >= 0 {
			if f, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				sum, found = sum+f, true
			}
		}
	}
	return sum, found
}

// callTimes is, per call (the "call" label), the summed duration in
// seconds and the count of a histogram.
type callTimes map[string][2]float64

// callTimesAt reads histogram name's _sum and _count by call from the
// service at HEALTH_PORT_BASE+offset (nil if it cannot be read).
func callTimesAt(offset int, name string) callTimes {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", 19180+offset))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	return parseCallTimes(resp.Body, name)
}

// parseCallTimes reads name_sum and name_count samples by their call
// label from a Prometheus text exposition (other labels are summed over).
func parseCallTimes(r io.Reader, name string) callTimes {
	out := callTimes{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		var idx int
		switch {
		case strings.HasPrefix(line, name+"_sum{"):
			idx = 0
		case strings.HasPrefix(line, name+"_count{"):
			idx = 1
		default:
			continue
		}
		_, rest, _ := strings.Cut(line, `call="`)
		call, _, ok := strings.Cut(rest, `"`)
		sp := strings.LastIndexByte(line, ' ')
		if !ok || sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		t := out[call]
		t[idx] += v
		out[call] = t
	}
	return out
}

// minus is what was added to c since before.
func (c callTimes) minus(before callTimes) callTimes {
	out := callTimes{}
	for call, t := range c {
		b := before[call]
		if d := [2]float64{t[0] - b[0], t[1] - b[1]}; d[1] > 0 {
			out[call] = d
		}
	}
	return out
}

// quiet waits, for at most limit, until the system has nothing going on:
// no periodic observation deferred behind sagas (they go out once none is
// in flight) and no agent command in flight, twice in a row a second
// apart. It returns how long it waited and whether it got there. The
// stores alone are measured only then: after a burst the deferred
// observations drain into the agents, and a sample taken meanwhile
// measures the stores sharing them with the system.
func quiet(ctx context.Context, limit time.Duration) (time.Duration, bool) {
	start := time.Now()
	idle := func() bool {
		if v, ok := metric("tenantprov_orchestrator_observations_deferred"); !ok || v > 0 {
			return false
		}
		for agent := 1; agent <= 4; agent++ {
			if v, ok := metricAt(agent, "tenantprov_agent_commands_in_flight"); !ok || v > 0 {
				return false
			}
		}
		return true
	}
	streak := 0
	for time.Since(start) < limit && ctx.Err() == nil {
		if idle() {
			if streak++; streak == 2 {
				return time.Since(start), true
			}
		} else {
			streak = 0
		}
		time.Sleep(time.Second)
	}
	return time.Since(start), false
}

// seedRecords writes n settled (deprovisioned, nothing pending) records
// straight into the registry, with the orchestrator's identity (the only
// one that may write it): what a registry that served n tenants over time
// holds. They reference no store resource, so no agent or saga acts on
// them. It returns their keys.
func seedRecords(ctx context.Context, cfg config, n int, progress func(string, ...any)) ([]string, error) {
	nc, js, err := connect(ctx, cfg, filepath.Join(cfg.Root, ".dev", "bus", "creds", "orchestrator.creds"), busauth.RoleOrchestrator)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	kv, err := js.KeyValue(ctx, events.KVTenants)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	keys := make([]string, n)
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := range n {
		keys[i] = fmt.Sprintf("%s-r%05d", cfg.Prefix, i)
		rec := &events.TenantRecord{
			TenantID: keys[i], State: events.TenantDeprovisioned, Generation: 1, SagaID: keys[i] + "-seeded",
			RequestedBy: "bench-e2e (seeded record)", Announced: events.TenantDeprovisioned,
			Stores:    map[events.Store]*events.StoreStatus{},
			CreatedAt: now, UpdatedAt: now,
		}
		for _, st := range events.Stores() {
			rec.Stores[st] = &events.StoreStatus{State: events.StoreDeprovisioned, Resources: map[string]string{"note": "seeded by bench-e2e"}}
		}
		data, err := events.Encode(rec)
		if err != nil {
			return nil, err
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if _, err := kv.Put(ctx, keys[i], data); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
		if (i+1)%2000 == 0 {
			progress("seeding registry records: %d/%d", i+1, n)
		}
	}
	wg.Wait()
	return keys, first
}

// purgeRecords removes the seeded records again.
func purgeRecords(ctx context.Context, cfg config, keys []string) error {
	nc, js, err := connect(ctx, cfg, filepath.Join(cfg.Root, ".dev", "bus", "creds", "orchestrator.creds"), busauth.RoleOrchestrator)
	if err != nil {
		return err
	}
	defer nc.Close()
	kv, err := js.KeyValue(ctx, events.KVTenants)
	if err != nil {
		return err
	}
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	for _, k := range keys {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			_ = kv.Purge(ctx, k)
		}()
	}
	wg.Wait()
	return nil
}

// cleanup deprovisions every tenant this bench requested (requested_by
// bench-e2e, ID starting with prefix; every prefix when prefix is empty)
// that the registry holds as active: what an interrupted run left behind.
func (s *system) cleanup(ctx context.Context, prefix string) (int, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return 0, err
	}
	var ids []string
	for k := range lister.Keys() {
		if !strings.HasPrefix(k, prefix) {
			continue
		}
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		rec, err := events.DecodeTenantRecord(e.Value())
		if err == nil && rec.RequestedBy == "bench-e2e" && rec.State == events.TenantActive {
			ids = append(ids, k)
		}
	}
	if len(ids) == 0 {
		return 0, nil
	}
	_, err = s.run(ctx, ids, true)
	return len(ids), err
}
