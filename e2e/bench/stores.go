package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	envconfig "github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/services/minio-agent/miniostore"
	"github.com/tenantprov/tenantprov/services/pg-agent/pgstore"
	"github.com/tenantprov/tenantprov/services/qdrant-agent/qdrantstore"
	"github.com/tenantprov/tenantprov/services/redis-agent/redisstore"
)

// storeSet is the four agents' Store implementations, opened with the
// credentials `make up` gives the agents (.dev/env plus what dev-up.sh sets
// for pg-agent), on the same servers: the stores alone, no bus, no saga.
type storeSet struct {
	stores  []agent.Store
	closers []func()
}

func openStores(env map[string]string) (*storeSet, error) {
	e := maps.Clone(env)
	// What scripts/dev-up.sh gives pg-agent besides .dev/env.
	e["PG_SSLMODE"], e["PG_TENANT_CIDR"] = "disable", "127.0.0.1/32"
	set := &storeSet{}
	mcfg, err := envconfig.LoadFrom(miniostore.Config{}, e)
	if err != nil {
		return nil, fmt.Errorf("minio config: %w", err)
	}
	m, err := miniostore.New(mcfg)
	if err != nil {
		return nil, err
	}
	pcfg, err := envconfig.LoadFrom(pgstore.Defaults(), e)
	if err != nil {
		return nil, fmt.Errorf("postgres config: %w", err)
	}
	p, err := pgstore.New(pcfg)
	if err != nil {
		return nil, err
	}
	set.closers = append(set.closers, p.Close)
	qcfg, err := envconfig.LoadFrom(qdrantstore.DefaultConfig(), e)
	if err != nil {
		return nil, fmt.Errorf("qdrant config: %w", err)
	}
	q, err := qdrantstore.New(qcfg)
	if err != nil {
		set.close()
		return nil, err
	}
	set.closers = append(set.closers, func() { _ = q.Close() })
	rcfg, err := envconfig.LoadFrom(redisstore.Config{}, e)
	if err != nil {
		set.close()
		return nil, fmt.Errorf("redis config: %w", err)
	}
	r, err := redisstore.New(rcfg)
	if err != nil {
		set.close()
		return nil, err
	}
	set.closers = append(set.closers, func() { _ = r.Close() })
	set.stores = []agent.Store{m, p, q, r}
	return set, nil
}

func (s *storeSet) close() {
	for _, c := range s.closers {
		c()
	}
}

// provisionOne runs Provision then Verify of one store for tenant id, as
// the agent does (a fresh password, generation 1), and checks the verdict.
func provisionOne(ctx context.Context, st agent.Store, id events.TenantID) (time.Duration, time.Duration, error) {
	pw, err := secret.Generate()
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	presp, err := st.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: 1, SagaID: string(id) + "-bench", Password: pw})
	t1 := time.Now()
	if err != nil {
		return 0, 0, fmt.Errorf("%s provision %s: %v", st.Kind(), id, agent.SanitizeText(err.Error()))
	}
	vresp, err := st.Verify(ctx, agent.VerifyRequest{Tenant: id, Generation: 1, Credential: presp.Credential})
	t2 := time.Now()
	if err != nil {
		return 0, 0, fmt.Errorf("%s verify %s: %v", st.Kind(), id, agent.SanitizeText(err.Error()))
	}
	if !vresp.Passed() {
		return 0, 0, fmt.Errorf("%s verify %s: checks did not pass: %+v", st.Kind(), id, vresp.Checks)
	}
	return t1.Sub(t0), t2.Sub(t1), nil
}

func deprovisionOne(ctx context.Context, st agent.Store, id events.TenantID) (time.Duration, error) {
	t0 := time.Now()
	_, err := st.Deprovision(ctx, agent.DeprovisionRequest{Tenant: id, Generation: 1, SagaID: string(id) + "-bench"})
	if err != nil {
		return 0, fmt.Errorf("%s deprovision %s: %v", st.Kind(), id, agent.SanitizeText(err.Error()))
	}
	return time.Since(t0), nil
}

// storeAlone is what the stores do on their own.
type storeAlone struct {
	// Per store, the p50 of provision+verify and of deprovision, one
	// tenant after another.
	serial      map[events.Store]time.Duration
	serialProv  map[events.Store]time.Duration
	serialVer   map[events.Store]time.Duration
	serialDepro map[events.Store]time.Duration
	slowest     events.Store  // by provision+verify
	slowestWork time.Duration // its p50 provision+verify
	slowestDep  time.Duration // the largest p50 deprovision
	// The p50 wall time of one tenant's four stores called at once (as
	// the saga fans out; the slowest store's work while the others run):
	// provision+verify, and deprovision.
	fanOutWork, fanOutDep time.Duration
	// The machine's CPU time (every process, summed over the cores)
	// during one tenant's provision+verify: per store alone (p50), and
	// with the four stores at once.
	serialCPU map[events.Store]time.Duration
	fanOutCPU time.Duration
	// Tenants per minute with StoreConcurrency tenants at once, each
	// tenant's four stores called at once (as the saga fans out).
	provisionRate   float64
	deprovisionRate float64
}

// newStoreAlone is an empty store-alone result.
func newStoreAlone() *storeAlone {
	return &storeAlone{serial: map[events.Store]time.Duration{}, serialProv: map[events.Store]time.Duration{},
		serialVer: map[events.Store]time.Duration{}, serialDepro: map[events.Store]time.Duration{}, serialCPU: map[events.Store]time.Duration{}}
}

// warmStores runs one tenant through every store: an agent's first call
// sets up system records and canaries, which is not per-tenant work.
func warmStores(ctx context.Context, set *storeSet, prefix string) error {
	warm := events.TenantID(prefix + "-sw")
	for _, st := range set.stores {
		if _, _, err := provisionOne(ctx, st, warm); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if _, err := deprovisionOne(ctx, st, warm); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	return nil
}

// serialSample is one tenant's own work in each store, one store after
// another: provision, verify, deprovision, and the machine's CPU time
// during provision and verify.
type serialSample map[events.Store][4]time.Duration

func serialOne(ctx context.Context, set *storeSet, id events.TenantID) (serialSample, error) {
	out := serialSample{}
	for _, st := range set.stores {
		var p, v time.Duration
		cpu, err := cpuOf(func() (err error) { p, v, err = provisionOne(ctx, st, id); return err })
		if err != nil {
			return nil, err
		}
		d, err := deprovisionOne(ctx, st, id)
		if err != nil {
			return nil, err
		}
		out[st.Kind()] = [4]time.Duration{p, v, d, cpu}
	}
	return out, nil
}

// fanOutSample is one tenant's four stores called at once, as the saga
// fans out: the wall time of provision+verify, and of deprovision, and the
// machine's CPU time during provision+verify.
type fanOutSample struct{ work, deprov, cpu time.Duration }

func fanOutOne(ctx context.Context, set *storeSet, id events.TenantID) (fanOutSample, error) {
	all := func(fn func(agent.Store) error) (time.Duration, error) {
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []error
		)
		t0 := time.Now()
		for _, st := range set.stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := fn(st); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return time.Since(t0), errors.Join(errs...)
	}
	var work time.Duration
	cpu, err := cpuOf(func() (err error) {
		work, err = all(func(st agent.Store) error { _, _, err := provisionOne(ctx, st, id); return err })
		return err
	})
	if err != nil {
		return fanOutSample{}, err
	}
	dep, err := all(func(st agent.Store) error { _, err := deprovisionOne(ctx, st, id); return err })
	if err != nil {
		return fanOutSample{}, err
	}
	return fanOutSample{work: work, deprov: dep, cpu: cpu}, nil
}

// summariseFanOut keeps the p50s of the fan-out samples.
func (out *storeAlone) summariseFanOut(samples []fanOutSample) {
	var work, dep, cpu []time.Duration
	for _, s := range samples {
		work, dep, cpu = append(work, s.work), append(dep, s.deprov), append(cpu, s.cpu)
	}
	out.fanOutWork, out.fanOutDep, out.fanOutCPU = p50(work), p50(dep), p50(cpu)
}

// summarise turns the serial samples into p50s and picks the slowest
// store.
func (out *storeAlone) summarise(samples []serialSample) {
	for _, k := range events.Stores() {
		var work, prov, ver, dep, cpu []time.Duration
		for _, s := range samples {
			w := s[k]
			work, prov, ver, dep = append(work, w[0]+w[1]), append(prov, w[0]), append(ver, w[1]), append(dep, w[2])
			cpu = append(cpu, w[3])
		}
		out.serial[k], out.serialProv[k], out.serialVer[k], out.serialDepro[k] = p50(work), p50(prov), p50(ver), p50(dep)
		out.serialCPU[k] = p50(cpu)
		if out.serial[k] > out.slowestWork {
			out.slowest, out.slowestWork = k, out.serial[k]
		}
		out.slowestDep = max(out.slowestDep, out.serialDepro[k])
	}
}

// measureConcurrent is the stores' own throughput: StoreTenants tenants,
// StoreConcurrency at once, each tenant's four stores called at once.
func measureConcurrent(ctx context.Context, set *storeSet, cfg config, out *storeAlone, progress func(string, ...any)) error {
	var err error
	out.provisionRate, out.deprovisionRate, err = storesRate(ctx, set, cfg, "sc", progress)
	return err
}

// storesRate measures the stores' own provision and deprovision rates
// (tenants per minute) with StoreTenants tenants named <prefix>-<tag><i>,
// StoreConcurrency at once, once the system is idle (quiet, at most
// BENCH_QUIET). The bench takes such a sample next to each
// burst it compares with one: the machine's load changes within minutes.
func storesRate(ctx context.Context, set *storeSet, cfg config, tag string, progress func(string, ...any)) (prov, deprov float64, err error) {
	if waited, ok := quiet(ctx, cfg.Quiet); !ok {
		progress("stores alone: the system was still busy after %s (deferred observations or agent commands); measuring anyway", waited.Round(time.Second))
	} else if waited > 2*time.Second {
		progress("stores alone: waited %s for the system to be idle", waited.Round(time.Second))
	}
	ids := make([]events.TenantID, cfg.StoreTenants)
	for i := range ids {
		ids[i] = events.TenantID(fmt.Sprintf("%s-%s%d", cfg.Prefix, tag, i))
	}
	if prov, err = concurrently(ctx, set, ids, cfg.StoreConcurrency, func(ctx context.Context, st agent.Store, id events.TenantID) error {
		_, _, err := provisionOne(ctx, st, id)
		return err
	}); err != nil {
		return 0, 0, err
	}
	if deprov, err = concurrently(ctx, set, ids, cfg.StoreConcurrency, func(ctx context.Context, st agent.Store, id events.TenantID) error {
		_, err := deprovisionOne(ctx, st, id)
		return err
	}); err != nil {
		return 0, 0, err
	}
	progress("stores alone, %d tenants %d at once: %.0f tenants/min provisioned, %.0f deprovisioned", len(ids), cfg.StoreConcurrency, prov, deprov)
	return prov, deprov, nil
}

// concurrently runs fn for every tenant and store, conc tenants at a time
// (each tenant's stores at once), and returns tenants per minute.
func concurrently(ctx context.Context, set *storeSet, ids []events.TenantID, conc int, fn func(context.Context, agent.Store, events.TenantID) error) (float64, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	sem := make(chan struct{}, conc)
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	start := time.Now()
	for _, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var inner sync.WaitGroup
			for _, st := range set.stores {
				inner.Add(1)
				go func() {
					defer inner.Done()
					if err := fn(ctx, st, id); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}()
			}
			inner.Wait()
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if len(errs) > 0 {
		return 0, fmt.Errorf("%d store calls failed, first: %w", len(errs), errors.Join(errs[0]))
	}
	return perMinute(len(ids), took), nil
}
