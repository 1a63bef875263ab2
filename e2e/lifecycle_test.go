package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getsops/sops/v3/cmd/sops/formats"
	"github.com/getsops/sops/v3/decrypt"
	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/qdrant/go-client/qdrant"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/metadata"
	"gopkg.in/yaml.v3"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/inventory"
	"github.com/tenantprov/tenantprov/services/orchestrator/sealer"
	"github.com/tenantprov/tenantprov/services/pg-agent/pgstore"
	"github.com/tenantprov/tenantprov/services/redis-agent/redisstore"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// The acceptance tests of the lifecycle issues (14: rotation; 15:
// suspend/resume, retention, restore, purge) against the whole system: the
// real orchestrator, the four real agents, real PostgreSQL, Redis and MinIO
// and the Qdrant stand-in, on real NATS. One system serves every phase.

// sealedFile decrypts tenant id's sealed secrets into the sealer's File.
func (s *system) sealedFile(id string) *sealer.File {
	s.t.Helper()
	raw, _ := s.secretsFile(id) // sets SOPS_AGE_KEY_FILE
	plain, err := decrypt.DataWithFormat(raw, formats.Yaml)
	if err != nil {
		s.t.Fatal(err)
	}
	var f sealer.File
	if err := yaml.Unmarshal(plain, &f); err != nil {
		s.t.Fatal(err)
	}
	return &f
}

// fileSecrets are the credential values of a sealed file.
func fileSecrets(f *sealer.File) []string {
	return []string{f.MinIO.SecretKey, f.Postgres.Password, f.Postgres.URL, f.Qdrant.APIKey, f.Redis.Password}
}

// storeClient is a tenant's client of one store, authenticating anew on
// every call (a rotated or suspended credential is noticed at once).
type storeClient struct {
	s *system
	f *sealer.File
}

const lifeObject, lifeKey, lifeValue = "life.txt", "life", "kept"

// write stores a row, a key, an object and a point in the tenant's slice.
func (c storeClient) write(ctx context.Context) error {
	return errors.Join(
		c.pgExec(ctx, "", "CREATE TABLE life (x text); INSERT INTO life VALUES ('"+lifeValue+"')"),
		c.redis(ctx, func(rc *redis.Client) error { return rc.Set(ctx, c.f.Redis.KeyPrefix+lifeKey, lifeValue, 0).Err() }),
		c.minio(ctx, func(mc *minio.Client) error {
			_, err := mc.PutObject(ctx, c.f.MinIO.Bucket, lifeObject, strings.NewReader(lifeValue), int64(len(lifeValue)), minio.PutObjectOptions{})
			return err
		}),
		c.qdrant(ctx, func(qc *qdrant.Client, qctx context.Context) error {
			vec := make([]float32, 768)
			vec[0] = 1
			_, err := qc.Upsert(qctx, &qdrant.UpsertPoints{CollectionName: c.f.Qdrant.Collection, Points: []*qdrant.PointStruct{{Id: qdrant.NewIDNum(7), Vectors: qdrant.NewVectors(vec...), Payload: qdrant.NewValueMap(map[string]any{"v": lifeValue})}}})
			return err
		}),
	)
}

// read is one authenticated request per store reading what write wrote;
// the errors are per store.
func (c storeClient) read(ctx context.Context) map[events.Store]error {
	out := map[events.Store]error{}
	for _, st := range events.Stores() {
		out[st] = c.readStore(ctx, st)
	}
	return out
}

// readStore is one authenticated request to st reading what write wrote.
func (c storeClient) readStore(ctx context.Context, st events.Store) error {
	switch st {
	case events.StorePostgres:
		return c.pgRead(ctx, "")
	case events.StoreRedis:
		return c.redis(ctx, func(rc *redis.Client) error {
			v, err := rc.Get(ctx, c.f.Redis.KeyPrefix+lifeKey).Result()
			if err == nil && v != lifeValue {
				err = fmt.Errorf("key holds %q", v)
			}
			return err
		})
	case events.StoreMinIO:
		return c.minio(ctx, func(mc *minio.Client) error {
			o, err := mc.GetObject(ctx, c.f.MinIO.Bucket, lifeObject, minio.GetObjectOptions{})
			if err != nil {
				return err
			}
			defer o.Close()
			b, err := io.ReadAll(o)
			if err == nil && string(b) != lifeValue {
				err = fmt.Errorf("object holds %q", b)
			}
			return err
		})
	case events.StoreQdrant:
		return c.qdrant(ctx, func(qc *qdrant.Client, qctx context.Context) error {
			pts, err := qc.Get(qctx, &qdrant.GetPoints{CollectionName: c.f.Qdrant.Collection, Ids: []*qdrant.PointId{qdrant.NewIDNum(7)}, WithPayload: qdrant.NewWithPayload(true)})
			if err == nil && (len(pts) != 1 || pts[0].GetPayload()["v"].GetStringValue() != lifeValue) {
				err = fmt.Errorf("point 7: %v", pts)
			}
			return err
		})
	}
	return fmt.Errorf("unknown store %s", st)
}

func (c storeClient) pgConnect(ctx context.Context, database string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(c.f.Postgres.URL)
	if err != nil {
		return nil, errors.New("postgres url does not parse") // the error would quote it
	}
	if database != "" {
		cfg.Database = database
	}
	return pgx.ConnectConfig(ctx, cfg)
}

func (c storeClient) pgExec(ctx context.Context, database, sql string) error {
	conn, err := c.pgConnect(ctx, database)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

func (c storeClient) pgRead(ctx context.Context, database string) error {
	conn, err := c.pgConnect(ctx, database)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx, "SELECT x FROM life").Scan(&v); err != nil {
		return err
	}
	if v != lifeValue {
		return fmt.Errorf("row holds %q", v)
	}
	return nil
}

// redis runs f on a new connection that authenticated with the tenant's
// credential.
func (c storeClient) redis(ctx context.Context, f func(*redis.Client) error) error {
	rc := redis.NewClient(&redis.Options{Addr: c.f.Redis.Addr, Username: c.f.Redis.Username, Password: c.f.Redis.Password, PoolSize: 1, MaxRetries: -1})
	defer rc.Close()
	return f(rc)
}

func (c storeClient) minio(ctx context.Context, f func(*minio.Client) error) error {
	mc, err := minio.New(c.f.MinIO.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(c.f.MinIO.AccessKey, c.f.MinIO.SecretKey, ""), MaxRetries: 1})
	if err != nil {
		return err
	}
	return f(mc)
}

func (c storeClient) qdrant(ctx context.Context, f func(*qdrant.Client, context.Context) error) error {
	qc, err := qdrant.NewClient(&qdrant.Config{Host: c.s.qdrant.Host, Port: c.s.qdrant.GRPCPort, PoolSize: 1, SkipCompatibilityCheck: true})
	if err != nil {
		return err
	}
	defer qc.Close()
	return f(qc, metadata.AppendToOutgoingContext(ctx, "api-key", c.f.Qdrant.APIKey))
}

// reach tries the tenant's credential on another tenant's slice, per store.
func (c storeClient) reach(ctx context.Context, other *sealer.File) map[events.Store]error {
	return map[events.Store]error{
		events.StorePostgres: c.pgExec(ctx, other.Postgres.Database, "SELECT 1"),
		events.StoreRedis: c.redis(ctx, func(rc *redis.Client) error {
			return rc.Get(ctx, other.Redis.KeyPrefix+lifeKey).Err()
		}),
		events.StoreMinIO: c.minio(ctx, func(mc *minio.Client) error {
			_, err := mc.StatObject(ctx, other.MinIO.Bucket, lifeObject, minio.StatObjectOptions{})
			return err
		}),
		events.StoreQdrant: c.qdrant(ctx, func(qc *qdrant.Client, qctx context.Context) error {
			_, err := qc.Get(qctx, &qdrant.GetPoints{CollectionName: other.Qdrant.Collection, Ids: []*qdrant.PointId{qdrant.NewIDNum(7)}})
			return err
		}),
	}
}

// expect checks per-store results: every store working (ok) or refused.
func expect(t *testing.T, what string, errs map[events.Store]error, ok bool) {
	t.Helper()
	for _, st := range events.Stores() {
		err := errs[st]
		switch {
		case ok && err != nil:
			t.Errorf("%s: %s: %v", what, st, err)
		case !ok && err == nil:
			t.Errorf("%s: %s accepted the request, want it refused", what, st)
		}
	}
}

func (s *system) client(f *sealer.File) storeClient { return storeClient{s: s, f: f} }

func (s *system) ctxFor(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(s.ctx, d)
}

// failure is a failed request of a continuously running client.
type failure struct {
	at    time.Time
	store events.Store
	err   error
}

// hammer issues requests with f's credentials on every store until stop is
// closed; it returns the number of requests and the failures per store.
func (s *system) hammer(f *sealer.File, stop <-chan struct{}) (wait func() (map[events.Store]int, []failure)) {
	var (
		mu    sync.Mutex
		count = map[events.Store]int{}
		fails []failure
		wg    sync.WaitGroup
	)
	c := s.client(f)
	for _, st := range events.Stores() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := s.ctxFor(20 * time.Second)
				err := c.readStore(ctx, st)
				cancel()
				mu.Lock()
				count[st]++
				if err != nil {
					fails = append(fails, failure{time.Now(), st, err})
				}
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return func() (map[events.Store]int, []failure) { wg.Wait(); return count, fails }
}

func (s *system) settled(id string, want events.TenantState, within time.Duration) *events.TenantRecord {
	s.t.Helper()
	return s.waitFor(id, within, "settled "+string(want), func(r *events.TenantRecord) bool {
		return r.State == want && r.Announced == want && r.Lifecycle == nil && len(r.Outbox) == 0
	})
}

// runAgent starts kind's agent as startAgent does, but with an
// AGENT_ACK_WAIT well below SAGA_TIMEOUT, as in production (10s against
// 60s): a command an agent killed mid-way was working on is redelivered
// within its deadline.
func (s *system) runAgent(kind events.Store) *storetest.Agent {
	return s.runAgentWith(kind, s.newStore(kind))
}

func (s *system) runAgentWith(kind events.Store, st agent.Store) *storetest.Agent {
	a := storetest.RunAgent(s.t, s.nats, st, storetest.WithIdentity(s.cp), storetest.WithConfig(func(c *agent.Config) {
		c.AckWait = 5 * time.Second
		c.RetryBaseDelay = 200 * time.Millisecond
		c.RetryMaxDelay = time.Second
	}))
	s.mu.Lock()
	s.agents[kind] = a
	s.mu.Unlock()
	return a
}

// halting makes a store stop right after its real Rotate changed the store,
// before the agent can verify, seal and answer: the window in which a
// killed agent leaves a rotation half done. Halted is closed when it
// stopped; it waits there until the agent's context ends (a Kill).
type halting struct{ halted chan struct{} }

func newHalting() halting { return halting{make(chan struct{})} }

func (h halting) halt(ctx context.Context) {
	select {
	case <-h.halted:
	default:
		close(h.halted)
	}
	<-ctx.Done()
}

type haltingRedis struct {
	*redisstore.Store
	halting
}

func (s haltingRedis) Rotate(ctx context.Context, req agent.RotateRequest) (agent.RotateResponse, error) {
	resp, err := s.Store.Rotate(ctx, req)
	if err == nil {
		s.halt(ctx)
	}
	return resp, err
}

type haltingPostgres struct {
	*pgstore.Store
	halting
}

func (s haltingPostgres) Rotate(ctx context.Context, req agent.RotateRequest) (agent.RotateResponse, error) {
	resp, err := s.Store.Rotate(ctx, req)
	if err == nil {
		s.halt(ctx)
	}
	return resp, err
}

// awaitHalt waits until h's store halted.
func (s *system) awaitHalt(h halting, what string) {
	s.t.Helper()
	select {
	case <-h.halted:
	case <-time.After(2 * time.Minute):
		s.t.Fatalf("%s: the store's Rotate was never called", what)
	}
}

// TestLifecycleEndToEnd drives the lifecycle through the whole system and
// checks it from the tenants' side (their own clients on the real stores):
// rotation under load and a failing rotation, suspend/resume, retention
// with a restore and with a purge, restarts of the orchestrator and of an
// agent during the restore and the scheduled purge, the audit trail, and
// no secret anywhere.
func TestLifecycleEndToEnd(t *testing.T) {
	s := startSystem(t, 30*time.Second)
	s.sagaCfg.RotateGraceDefault, s.sagaCfg.RotateGraceMax = 5*time.Second, time.Minute
	var agentLogs []string // of the agents stopped or killed
	for _, st := range events.Stores() {
		if err := s.agent(st).Stop(); err != nil {
			t.Fatal(err)
		}
		agentLogs = append(agentLogs, s.agent(st).LogText())
		s.runAgent(st)
	}
	stopOrch := s.startOrchestrator()

	tenants := []string{"rot-a", "rot-b", "rot-c", "sus-a", "ret-a", "ret-b"}
	for _, id := range tenants {
		s.request(events.SubjectTenantRequested, fmt.Sprintf(`{"tenant_id":%q}`, id))
	}
	files := map[string]*sealer.File{}
	var secrets []string
	for _, id := range tenants {
		s.waitState(id, events.TenantActive, 3*time.Minute)
		files[id] = s.sealedFile(id)
		secrets = append(secrets, fileSecrets(files[id])...)
		ctx, cancel := s.ctxFor(time.Minute)
		if err := s.client(files[id]).write(ctx); err != nil {
			t.Fatalf("%s: writing as the tenant: %v", id, err)
		}
		cancel()
	}

	// 1. Rotation with clients connected on the old credential through the
	// whole grace: no failed request until the grace ended; then the old
	// credential refused, the new one (v2) working in the tenant's slice
	// only.
	{
		old := files["rot-a"]
		stop := make(chan struct{})
		wait := s.hammer(old, stop)
		time.Sleep(time.Second) // requests before the rotate request
		s.request(events.SubjectTenantRotateRequested, `{"tenant_id":"rot-a","grace":"6s","request_id":"rot-a-1"}`)
		rec := s.waitFor("rot-a", 2*time.Minute, "the retire scheduled", func(r *events.TenantRecord) bool {
			return r.State == events.TenantActive && r.Scheduled != nil && r.Scheduled.Kind == events.LifecycleRetire
		})
		graceEnd := rec.Scheduled.DueAt
		s.waitAudits(events.AuditCredentialsRetired, "rot-a", 1, 2*time.Minute)
		close(stop)
		count, fails := wait()
		for _, f := range fails {
			if f.at.Before(graceEnd) {
				t.Errorf("rot-a: %s request with the old credential failed during the grace (at %s, grace ends %s): %v", f.store, f.at.Format(time.RFC3339Nano), graceEnd.Format(time.RFC3339Nano), f.err)
			}
		}
		t.Logf("rotation: old-credential requests per store %v, %d failed (after the grace ended)", count, len(fails))
		for _, st := range events.Stores() {
			if count[st] < 3 {
				t.Errorf("only %d %s requests during the rotation", count[st], st)
			}
		}
		rec = s.settled("rot-a", events.TenantActive, time.Minute)
		if rec.Scheduled != nil {
			t.Errorf("rot-a still has a scheduled step %+v", rec.Scheduled)
		}
		ctx, cancel := s.ctxFor(time.Minute)
		defer cancel()
		expect(t, "rot-a old credential after the retire", s.client(old).read(ctx), false)
		nf := s.sealedFile("rot-a")
		secrets = append(secrets, fileSecrets(nf)...)
		if want := (sealer.CredentialVersions{MinIO: 2, Postgres: 2, Qdrant: 2, Redis: 2}); nf.CredentialVersions != want {
			t.Errorf("rot-a sealed versions %+v, want %+v", nf.CredentialVersions, want)
		}
		for i, v := range fileSecrets(nf) {
			if v == fileSecrets(old)[i] {
				t.Errorf("rot-a credential %d unchanged by the rotation", i)
			}
		}
		expect(t, "rot-a new credential", s.client(nf).read(ctx), true)
		expect(t, "rot-b's own credential on its slice", s.client(files["rot-b"]).reach(ctx, files["rot-b"]), true)
		expect(t, "rot-a new credential on rot-b's slice", s.client(nf).reach(ctx, files["rot-b"]), false)
		for _, st := range events.Stores() {
			if v := rec.Stores[st].CredentialVersion; v != 2 {
				t.Errorf("rot-a record: %s credential version %d, want 2", st, v)
			}
		}
		files["rot-a"] = nf
	}

	// 1b. One store's rotation fails (a foreign role squats PostgreSQL's
	// version-2 login role name): the tenant stays active, the failure is
	// audited, and PostgreSQL's old credential keeps working, also after
	// the other stores' old credentials were retired.
	{
		ctx, cancel := s.ctxFor(2 * time.Minute)
		defer cancel()
		admin, err := pgx.Connect(ctx, s.pg.AdminURL())
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close(context.Background())
		squat := pgx.Identifier{events.MustTenantID("rot-b").PostgresRole() + "__v2"}.Sanitize()
		if _, err := admin.Exec(ctx, "CREATE ROLE "+squat+" NOLOGIN"); err != nil {
			t.Fatal(err)
		}
		old := files["rot-b"]
		s.request(events.SubjectTenantRotateRequested, `{"tenant_id":"rot-b","grace":"0s"}`)
		failed := s.waitAudits(events.AuditCredentialsRotationFailed, "rot-b", 1, 2*time.Minute)
		if len(failed) != 1 || failed[0].Store != events.StorePostgres {
			t.Errorf("CREDENTIALS_ROTATION_FAILED %+v, want one for postgres", failed)
		}
		s.waitAudits(events.AuditCredentialsRetired, "rot-b", 1, 2*time.Minute)
		rec := s.settled("rot-b", events.TenantActive, time.Minute)
		if !strings.Contains(rec.Reason, "postgres") {
			t.Errorf("rot-b reason %q does not name postgres", rec.Reason)
		}
		nf := s.sealedFile("rot-b")
		secrets = append(secrets, fileSecrets(nf)...)
		if want := (sealer.CredentialVersions{MinIO: 2, Postgres: 1, Qdrant: 2, Redis: 2}); nf.CredentialVersions != want {
			t.Errorf("rot-b sealed versions %+v, want %+v", nf.CredentialVersions, want)
		}
		if nf.Postgres.Password != old.Postgres.Password {
			t.Error("rot-b: the sealed file lost postgres's old (kept) credential")
		}
		if err := s.client(old).pgRead(ctx, ""); err != nil {
			t.Errorf("rot-b: postgres's old credential after its rotation failed: %v", err)
		}
		oldErrs := s.client(old).read(ctx)
		delete(oldErrs, events.StorePostgres)
		for st, err := range oldErrs {
			if err == nil {
				t.Errorf("rot-b: %s's old credential still works after the retire", st)
			}
		}
		expect(t, "rot-b sealed credentials", s.client(nf).read(ctx), true)
		files["rot-b"] = nf
	}

	// 1c. An agent killed in the middle of a rotation (retired at once):
	// the tenant converges active, and each store is either rotated (the
	// new credential works, the old one is refused) or kept its old
	// credential (which works); the sealed file matches the record.
	{
		old := files["rot-c"]
		if err := s.agent(events.StoreRedis).Stop(); err != nil {
			t.Fatal(err)
		}
		agentLogs = append(agentLogs, s.agent(events.StoreRedis).LogText())
		h := newHalting()
		s.runAgentWith(events.StoreRedis, haltingRedis{s.newStore(events.StoreRedis).(*redisstore.Store), h})
		s.request(events.SubjectTenantRotateRequested, `{"tenant_id":"rot-c","grace":"0s"}`)
		s.awaitHalt(h, "rot-c")
		s.agent(events.StoreRedis).Kill()
		agentLogs = append(agentLogs, s.agent(events.StoreRedis).LogText())
		time.Sleep(time.Second)
		s.runAgent(events.StoreRedis)
		rec := s.waitFor("rot-c", 3*time.Minute, "active with nothing scheduled", func(r *events.TenantRecord) bool {
			return r.State == events.TenantActive && r.Announced == events.TenantActive && r.Lifecycle == nil && len(r.Outbox) == 0 && r.Scheduled == nil
		})
		nf := s.sealedFile("rot-c")
		secrets = append(secrets, fileSecrets(nf)...)
		ctx, cancel := s.ctxFor(2 * time.Minute)
		defer cancel()
		expect(t, "rot-c sealed credentials after the kill", s.client(nf).read(ctx), true)
		oldErrs := s.client(old).read(ctx)
		versions := map[events.Store]int{events.StoreMinIO: nf.CredentialVersions.MinIO, events.StorePostgres: nf.CredentialVersions.Postgres,
			events.StoreQdrant: nf.CredentialVersions.Qdrant, events.StoreRedis: nf.CredentialVersions.Redis}
		for _, st := range events.Stores() {
			v := rec.Stores[st].CredentialVersion
			if versions[st] != max(v, 1) {
				t.Errorf("rot-c %s: record on version %d, sealed file on %d", st, v, versions[st])
			}
			switch {
			case v == 2 && oldErrs[st] == nil:
				t.Errorf("rot-c %s rotated, but its old credential still works", st)
			case v < 2 && oldErrs[st] != nil:
				t.Errorf("rot-c %s kept its old credential, which is refused: %v", st, oldErrs[st])
			case v > 2:
				t.Errorf("rot-c %s on version %d", st, v)
			}
		}
		t.Logf("rot-c after the redis agent was killed mid-rotation: versions %+v, reason %q", nf.CredentialVersions, rec.Reason)
		files["rot-c"] = nf
	}

	// 2. Suspend and resume: refused in every store while suspended, the
	// data readable after with the same credentials.
	{
		s.request(events.SubjectTenantSuspendRequested, `{"tenant_id":"sus-a"}`)
		s.settled("sus-a", events.TenantSuspended, 2*time.Minute)
		ctx, cancel := s.ctxFor(2 * time.Minute)
		defer cancel()
		expect(t, "sus-a while suspended", s.client(files["sus-a"]).read(ctx), false)
		expect(t, "another tenant while sus-a is suspended", s.client(files["rot-a"]).read(ctx), true)
		s.request(events.SubjectTenantResumeRequested, `{"tenant_id":"sus-a"}`)
		s.settled("sus-a", events.TenantActive, 2*time.Minute)
		expect(t, "sus-a after resume (same credentials)", s.client(files["sus-a"]).read(ctx), true)
		if nf := s.sealedFile("sus-a"); nf.Postgres.Password != files["sus-a"].Postgres.Password || nf.Redis.Password != files["sus-a"].Redis.Password {
			t.Error("sus-a: suspend/resume changed the sealed credentials")
		}
	}

	// 3 and 4. Retention: ret-b with a short retention is purged after it,
	// with the orchestrator and an agent restarted while the purge is due
	// and while it runs; ret-a is restored, with the orchestrator and an
	// agent restarted during the restore.
	{
		s.request(events.SubjectTenantDeprovisionRequested, `{"tenant_id":"ret-a","retain":"168h"}`)
		s.settled("ret-a", events.TenantRetained, 2*time.Minute)
		ctx, cancel := s.ctxFor(3 * time.Minute)
		defer cancel()
		expect(t, "ret-a retained", s.client(files["ret-a"]).read(ctx), false)

		// Restore ret-a; kill the orchestrator and the PostgreSQL agent
		// while it runs (right after PostgreSQL made the new credential).
		if err := s.agent(events.StorePostgres).Stop(); err != nil {
			t.Fatal(err)
		}
		agentLogs = append(agentLogs, s.agent(events.StorePostgres).LogText())
		h := newHalting()
		s.runAgentWith(events.StorePostgres, haltingPostgres{s.newStore(events.StorePostgres).(*pgstore.Store), h})
		s.request(events.SubjectTenantRestoreRequested, `{"tenant_id":"ret-a"}`)
		s.awaitHalt(h, "ret-a")
		if r := s.record("ret-a"); r.State != events.TenantRestoring {
			t.Fatalf("ret-a is %s while PostgreSQL rotates for the restore", r.State)
		}
		stopOrch()
		s.agent(events.StorePostgres).Kill()
		agentLogs = append(agentLogs, s.agent(events.StorePostgres).LogText())
		time.Sleep(time.Second)
		stopOrch = s.startOrchestrator()
		s.runAgent(events.StorePostgres)
		rec := s.settled("ret-a", events.TenantActive, 3*time.Minute)
		if rec.Scheduled != nil {
			t.Errorf("ret-a restored with a scheduled step %+v", rec.Scheduled)
		}
		for _, st := range events.Stores() {
			if v := rec.Stores[st].CredentialVersion; v != 2 {
				t.Errorf("ret-a record after the restore: %s credential version %d, want 2", st, v)
			}
		}
		nf := s.sealedFile("ret-a")
		secrets = append(secrets, fileSecrets(nf)...)
		for i, v := range fileSecrets(nf) {
			if v == fileSecrets(files["ret-a"])[i] {
				t.Errorf("ret-a credential %d not fresh after the restore", i)
			}
		}
		expect(t, "ret-a data with the restored credentials", s.client(nf).read(ctx), true)
		expect(t, "ret-a old credentials after the restore", s.client(files["ret-a"]).read(ctx), false)

		// ret-b's purge: the orchestrator down when it falls due and the
		// Redis agent down; then the orchestrator restarted while the
		// purge runs.
		s.request(events.SubjectTenantDeprovisionRequested, `{"tenant_id":"ret-b","retain":"6s"}`)
		recB := s.settled("ret-b", events.TenantRetained, 2*time.Minute)
		if recB.Scheduled == nil || recB.Scheduled.Kind != events.LifecyclePurge {
			t.Fatalf("ret-b retained without a scheduled purge: %+v", recB.Scheduled)
		}
		stopOrch()
		s.agent(events.StoreRedis).Kill()
		agentLogs = append(agentLogs, s.agent(events.StoreRedis).LogText())
		expect(t, "ret-b retained", s.client(files["ret-b"]).read(ctx), false)
		if d := time.Until(recB.Scheduled.DueAt); d > 0 {
			time.Sleep(d + time.Second)
		}
		if r := s.record("ret-b"); r.State != events.TenantRetained {
			t.Fatalf("ret-b is %s with no orchestrator running", r.State)
		}
		stopOrch = s.startOrchestrator()
		s.waitFor("ret-b", time.Minute, "the purge running", func(r *events.TenantRecord) bool { return r.State == events.TenantDeprovisioning })
		stopOrch()
		stopOrch = s.startOrchestrator()
		s.runAgent(events.StoreRedis)
		s.settled("ret-b", events.TenantDeprovisioned, 3*time.Minute)
		s.waitClean("ret-b", time.Minute)
		obj, _ := s.js.ObjectStore(s.ctx, events.ObjectStoreSecrets)
		if _, err := obj.GetInfo(s.ctx, "ret-b.sops.yaml"); err == nil {
			t.Error("ret-b's sealed file kept after the purge")
		}
		code, r, out := s.doctor(buildTenantctl(t))
		for _, f := range r.Findings {
			if f.TenantID == "ret-b" {
				t.Errorf("doctor after the purge: %+v", f)
			}
		}
		// The only finding expected is the role squatted by hand for
		// rot-b's failed rotation: rotated, restored and resumed tenants
		// are exactly what the registry says.
		for _, f := range r.Findings {
			t.Logf("doctor finding: %s %s %s %s %s %s", f.Category, f.TenantID, f.Store, f.Kind, f.Name, f.Detail)
			if f.TenantID != "rot-b" || f.Store != events.StorePostgres || f.Category != inventory.Foreign {
				t.Errorf("doctor after the lifecycle: unexpected finding %s %s %s %s %s", f.Category, f.TenantID, f.Store, f.Kind, f.Name)
			}
		}
		if code != 0 || !r.OK {
			t.Errorf("doctor after the lifecycle: exit %d, ok %v (something is wrong):\n%s", code, r.OK, out)
		}
		if r.Tenants == 0 {
			t.Errorf("doctor saw no tenant:\n%s", out)
		}
	}

	// 5. Audit: each lifecycle event exactly once per operation; no secret
	// in any stream (audit, registry, requests, results) or log.
	_ = stopOrch
	time.Sleep(2 * time.Second) // a duplicate would be published by now
	for _, c := range []struct {
		typ    events.AuditType
		tenant string
	}{
		{events.AuditCredentialsRotated, "rot-a"}, {events.AuditCredentialsRetired, "rot-a"},
		{events.AuditCredentialsRotated, "rot-b"}, {events.AuditCredentialsRetired, "rot-b"}, {events.AuditCredentialsRotationFailed, "rot-b"},
		{events.AuditTenantSuspended, "sus-a"}, {events.AuditTenantResumed, "sus-a"},
		{events.AuditTenantRetained, "ret-a"}, {events.AuditTenantRestored, "ret-a"},
		{events.AuditCredentialsRotated, "ret-a"}, {events.AuditCredentialsRetired, "ret-a"},
		{events.AuditTenantRetained, "ret-b"}, {events.AuditTenantPurged, "ret-b"}, {events.AuditTenantDeprovisioned, "ret-b"},
	} {
		if n := s.auditCount(c.typ, c.tenant); n != 1 {
			t.Errorf("%s for %s: %d, want 1", c.typ, c.tenant, n)
		}
	}
	for _, c := range []struct {
		typ    events.AuditType
		tenant string
	}{
		{events.AuditTenantSuspended, "rot-a"}, {events.AuditTenantPurged, "ret-a"}, {events.AuditTenantRestored, "ret-b"},
		{events.AuditCredentialsRotationFailed, "rot-a"}, {events.AuditCredentialsRotationFailed, "ret-a"},
	} {
		if n := s.auditCount(c.typ, c.tenant); n != 0 {
			t.Errorf("%s for %s: %d, want none", c.typ, c.tenant, n)
		}
	}
	s.assertNoPlaintext(secrets)
	for i, l := range agentLogs {
		for _, sec := range secrets {
			if strings.Contains(l, sec) {
				t.Errorf("the log of stopped agent %d holds a credential in plain text", i)
			}
		}
	}
}
