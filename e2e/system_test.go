package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/getsops/sops/v3/cmd/sops/formats"
	"github.com/getsops/sops/v3/decrypt"
	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/qdrant/go-client/qdrant"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/metadata"
	"gopkg.in/yaml.v3"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/busauth"
	"github.com/tenantprov/tenantprov/pkg/config"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/services/minio-agent/miniostore"
	"github.com/tenantprov/tenantprov/services/orchestrator/saga"
	"github.com/tenantprov/tenantprov/services/pg-agent/pgstore"
	"github.com/tenantprov/tenantprov/services/qdrant-agent/qdrantstore"
	"github.com/tenantprov/tenantprov/services/redis-agent/redisstore"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/capture"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// system is the whole of tenantprov in one test process: real servers, the
// four agents behind the real agent runtime, and orchestrator replicas.
type system struct {
	t        *testing.T
	ctx      context.Context
	nats     *testkit.NATS
	js       jetstream.JetStream
	kv       jetstream.KeyValue
	pg       *testkit.Postgres
	redis    *testkit.Redis
	minio    *testkit.MinIO
	qdrant   *testkit.Qdrant
	cp       *age.X25519Identity // control plane
	operator *age.X25519Identity
	opFile   string
	sagaCfg  saga.Config

	// On the authenticated bus (startAuthenticatedSystem): the bus
	// authority, the harness's own (unrestricted) connection options, and
	// the orchestrator's and a requester's JetStream.
	busDir  string
	harness []nats.Option
	orchJS  jetstream.JetStream
	reqJS   jetstream.JetStream

	mu     sync.Mutex
	agents map[events.Store]*storetest.Agent
	logs   []*capture.Log // every orchestrator replica's log
}

func startSystem(t *testing.T, sagaTimeout time.Duration) *system {
	t.Helper()
	return startSystemOn(t, sagaTimeout, false)
}

// startAuthenticatedSystem is startSystem on the authenticated bus of
// DESIGN.md §11: NATS runs the configuration busauth generates, every agent
// and the orchestrator connect with their own identity, requests come from
// a requester identity; the harness itself watches with an unrestricted one.
func startAuthenticatedSystem(t *testing.T, sagaTimeout time.Duration) *system {
	t.Helper()
	return startSystemOn(t, sagaTimeout, true)
}

func startSystemOn(t *testing.T, sagaTimeout time.Duration, authenticated bool) *system {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	s := &system{t: t, ctx: ctx, agents: map[events.Store]*storetest.Agent{}}
	if authenticated {
		s.busDir = t.TempDir()
		a, err := busauth.Init(s.busDir)
		if err != nil {
			t.Fatal(err)
		}
		admin, err := a.IssueAdmin("e2e-harness", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		adminFile := filepath.Join(s.busDir, "e2e-harness.creds")
		if err := os.WriteFile(adminFile, admin, 0o600); err != nil {
			t.Fatal(err)
		}
		s.harness = []nats.Option{nats.UserCredentials(adminFile)}
		s.nats = testkit.StartNATS(t, testkit.NATSConfigFile(filepath.Join(s.busDir, busauth.ServerConfigFile)))
	} else {
		s.nats = testkit.StartNATS(t)
	}
	s.pg = testkit.StartPostgres(t)
	s.redis = testkit.StartRedis(t)
	s.minio = testkit.StartMinIO(t)
	s.qdrant = testkit.StartQdrant(t)
	t.Logf("Qdrant under test: %s", s.qdrant.Kind)
	var err error
	if s.cp, err = age.GenerateX25519Identity(); err != nil {
		t.Fatal(err)
	}
	if s.operator, err = age.GenerateX25519Identity(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cpFile := filepath.Join(dir, "control-plane.agekey")
	s.opFile = filepath.Join(dir, "operator.agekey")
	for path, id := range map[string]*age.X25519Identity{cpFile: s.cp, s.opFile: s.operator} {
		if err := os.WriteFile(path, []byte(id.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	nc := s.nats.Connect(t, s.harness...)
	if s.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	s.orchJS, s.reqJS = s.js, s.js
	if authenticated {
		s.orchJS = s.jsAs(busauth.RoleOrchestrator)
		s.reqJS = s.jsAs(busauth.RoleRequester)
	}
	// The orchestrator's identity creates the topology (the only one that may).
	if err := service.EnsureTopology(ctx, s.orchJS, events.Topology{}); err != nil {
		t.Fatal(err)
	}
	if s.kv, err = s.js.KeyValue(ctx, events.KVTenants); err != nil {
		t.Fatal(err)
	}
	s.sagaCfg = saga.Config{
		SagaTimeout: sagaTimeout, ReconcileInterval: 250 * time.Millisecond, RetryMin: time.Second, RetryMax: 4 * time.Second,
		StuckAfter: 3 * time.Second, IdentityFile: cpFile, OperatorRecipients: s.operator.Recipient().String(),
		Workers: 16, AckWait: 5 * time.Second,
	}
	for _, st := range events.Stores() {
		s.startAgent(st)
	}
	return s
}

// jsAs is a JetStream on a new connection with role r's identity.
func (s *system) jsAs(r busauth.Role) jetstream.JetStream {
	s.t.Helper()
	nc := s.nats.Connect(s.t, nats.UserCredentials(busauth.CredsPath(s.busDir, r)), nats.CustomInboxPrefix(r.InboxPrefix()))
	js, err := jetstream.New(nc)
	if err != nil {
		s.t.Fatal(err)
	}
	return js
}

func load[T any](t *testing.T, env map[string]string) T {
	t.Helper()
	var zero T
	cfg, err := config.LoadFrom(zero, env)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newStore builds the real store for kind, configured as its main would be.
func (s *system) newStore(kind events.Store) agent.Store {
	t := s.t
	var (
		st  agent.Store
		err error
	)
	switch kind {
	case events.StorePostgres:
		st, err = pgstore.New(load[pgstore.Config](t, map[string]string{
			"PG_ADMIN_URL": s.pg.AdminURL(), "PG_SSLMODE": "disable", "PG_TENANT_CIDR": "127.0.0.1/32", "PG_CONNECT_TIMEOUT": "3s", "PG_ADMIN_MAX_CONNS": "8",
		}))
	case events.StoreRedis:
		st, err = redisstore.New(load[redisstore.Config](t, map[string]string{
			"REDIS_ADDR": s.redis.Addr, "REDIS_ADMIN_USER": s.redis.AdminUser, "REDIS_ADMIN_PASSWORD": s.redis.AdminPassword,
		}))
	case events.StoreMinIO:
		st, err = miniostore.New(load[miniostore.Config](t, map[string]string{
			"MINIO_ENDPOINT": s.minio.Endpoint, "MINIO_ROOT_USER": s.minio.RootUser, "MINIO_ROOT_PASSWORD": s.minio.RootPassword,
		}))
	case events.StoreQdrant:
		st, err = qdrantstore.New(load[qdrantstore.Config](t, map[string]string{
			"QDRANT_HOST": s.qdrant.Host, "QDRANT_GRPC_PORT": fmt.Sprint(s.qdrant.GRPCPort), "QDRANT_API_KEY": s.qdrant.APIKey, "QDRANT_CALL_TIMEOUT": "5s",
		}))
	}
	if err != nil {
		t.Fatalf("%s store: %v", kind, err)
	}
	return st
}

// startAgent runs kind's agent (a fresh store and runtime) until stopped.
func (s *system) startAgent(kind events.Store) *storetest.Agent {
	opts := []storetest.AgentOption{storetest.WithIdentity(s.cp), storetest.WithConfig(func(c *agent.Config) {
		c.AckWait = 30 * time.Second
		c.RetryBaseDelay = 200 * time.Millisecond
		c.RetryMaxDelay = time.Second
	})}
	if s.busDir != "" {
		opts = append(opts, storetest.WithNATSCreds(busauth.CredsPath(s.busDir, busauth.AgentRole(kind)), s.harness...))
	}
	a := storetest.RunAgent(s.t, s.nats, s.newStore(kind), opts...)
	s.mu.Lock()
	s.agents[kind] = a
	s.mu.Unlock()
	return a
}

func (s *system) agent(kind events.Store) *storetest.Agent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.agents[kind]
}

// startOrchestrator runs one orchestrator replica; stop kills it (as a
// crash would, without waiting for in-flight work).
func (s *system) startOrchestrator() (stop func()) {
	s.t.Helper()
	log, buf := capture.NewLogger(zapcore.DebugLevel)
	s.mu.Lock()
	s.logs = append(s.logs, buf)
	s.mu.Unlock()
	sg, err := saga.New(s.ctx, s.sagaCfg, s.orchJS, log, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = sg.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	s.t.Cleanup(stop)
	return stop
}

func (s *system) request(subject, payload string) {
	s.t.Helper()
	if _, err := s.reqJS.Publish(s.ctx, subject, []byte(payload)); err != nil {
		s.t.Fatal(err)
	}
}

func (s *system) record(id string) *events.TenantRecord {
	e, err := s.kv.Get(s.ctx, id)
	if err != nil {
		return nil
	}
	rec, err := events.DecodeTenantRecord(e.Value())
	if err != nil {
		s.t.Fatal(err)
	}
	return rec
}

// waitFor polls the record until cond holds.
func (s *system) waitFor(id string, within time.Duration, what string, cond func(*events.TenantRecord) bool) *events.TenantRecord {
	s.t.Helper()
	deadline := time.Now().Add(within)
	var rec *events.TenantRecord
	for time.Now().Before(deadline) {
		if rec = s.record(id); rec != nil && cond(rec) {
			return rec
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := json.MarshalIndent(rec, "", "  ")
	s.t.Fatalf("tenant %s: %s not reached within %s; record:\n%s", id, what, within, b)
	return nil
}

func (s *system) waitState(id string, want events.TenantState, within time.Duration) *events.TenantRecord {
	s.t.Helper()
	return s.waitFor(id, within, string(want), func(r *events.TenantRecord) bool { return r.State == want && r.Announced == want })
}

// secretsFile decrypts a tenant's sealed secrets with the operator key.
func (s *system) secretsFile(id string) (raw []byte, file map[string]map[string]any) {
	s.t.Helper()
	rec := s.record(id)
	if rec == nil || rec.Secrets == nil {
		s.t.Fatalf("tenant %s has no sealed secrets", id)
	}
	obj, err := s.js.ObjectStore(s.ctx, events.ObjectStoreSecrets)
	if err != nil {
		s.t.Fatal(err)
	}
	raw, err = obj.GetBytes(s.ctx, rec.Secrets.Object)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Setenv("SOPS_AGE_KEY_FILE", s.opFile)
	plain, err := decrypt.DataWithFormat(raw, formats.Yaml)
	if err != nil {
		s.t.Fatalf("sops decrypt with the operator key: %v", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(plain, &doc); err != nil {
		s.t.Fatal(err)
	}
	file = map[string]map[string]any{}
	for _, st := range events.Stores() {
		m, _ := doc[string(st)].(map[string]any)
		file[string(st)] = m
	}
	file["_"] = map[string]any{"tenant_id": doc["tenant_id"], "generation": doc["generation"]}
	return raw, file
}

// secretValues are the credential values of a decrypted secrets file.
func secretValues(file map[string]map[string]any) []string {
	var out []string
	for _, k := range [][2]string{{"minio", "secret_key"}, {"postgres", "password"}, {"postgres", "url"}, {"qdrant", "api_key"}, {"redis", "password"}} {
		if v, _ := file[k[0]][k[1]].(string); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// useCredentials proves every credential of a secrets file works on its
// store: own read/write in the tenant's slice.
func (s *system) useCredentials(file map[string]map[string]any) {
	t := s.t
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	pg := file["postgres"]
	conn, err := pgx.Connect(ctx, pg["url"].(string))
	if err != nil {
		t.Fatalf("postgres credential refused: %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE e2e (x int); INSERT INTO e2e VALUES (1)"); err != nil {
		t.Fatalf("postgres write as tenant: %v", err)
	}
	_ = conn.Close(ctx)

	rd := file["redis"]
	rc := redis.NewClient(&redis.Options{Addr: rd["addr"].(string), Username: rd["username"].(string), Password: rd["password"].(string)})
	defer rc.Close()
	key := rd["key_prefix"].(string) + "e2e"
	if err := rc.Set(ctx, key, "v", 0).Err(); err != nil {
		t.Fatalf("redis write as tenant: %v", err)
	}

	mn := file["minio"]
	mc, err := minio.New(mn["endpoint"].(string), &minio.Options{Creds: credentials.NewStaticV4(mn["access_key"].(string), mn["secret_key"].(string), "")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mc.PutObject(ctx, mn["bucket"].(string), "e2e.txt", strings.NewReader("hi"), 2, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("minio write as tenant: %v", err)
	}

	qd := file["qdrant"]
	qc := s.qdrant.Client(t, "")
	qctx := metadata.AppendToOutgoingContext(ctx, "api-key", qd["api_key"].(string))
	vec := make([]float32, 768)
	vec[0] = 1
	if _, err := qc.Upsert(qctx, &qdrant.UpsertPoints{CollectionName: qd["collection"].(string), Points: []*qdrant.PointStruct{{Id: qdrant.NewIDNum(1), Vectors: qdrant.NewVectors(vec...)}}}); err != nil {
		t.Fatalf("qdrant write as tenant: %v", err)
	}
}

// leftovers lists every resource of tenant id that still exists in any
// store, checked with the admin credentials.
func (s *system) leftovers(id events.TenantID) []string {
	t := s.t
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	var out []string
	conn, err := pgx.Connect(ctx, s.pg.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM pg_roles WHERE rolname=$1) + (SELECT count(*) FROM pg_database WHERE datname=$1)", id.PostgresRole()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		out = append(out, "postgres role/database "+id.PostgresRole())
	}
	rc := redis.NewClient(&redis.Options{Addr: s.redis.Addr, Username: s.redis.AdminUser, Password: s.redis.AdminPassword})
	defer rc.Close()
	if users, err := rc.Do(ctx, "ACL", "USERS").StringSlice(); err != nil {
		t.Fatal(err)
	} else {
		for _, u := range users {
			if u == id.RedisUser() {
				out = append(out, "redis user "+u)
			}
		}
	}
	if keys, _ := rc.Keys(ctx, id.RedisKeyPrefix()+"*").Result(); len(keys) > 0 {
		out = append(out, fmt.Sprintf("%d redis keys", len(keys)))
	}
	mc, err := minio.New(s.minio.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.minio.RootUser, s.minio.RootPassword, "")})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := mc.BucketExists(ctx, id.MinIOBucket()); err != nil {
		t.Fatal(err)
	} else if ok {
		out = append(out, "minio bucket "+id.MinIOBucket())
	}
	qc := s.qdrant.Client(t, s.qdrant.APIKey)
	if ok, err := qc.CollectionExists(ctx, id.QdrantCollection()); err != nil {
		t.Fatal(err)
	} else if ok {
		out = append(out, "qdrant collection "+id.QdrantCollection())
	}
	return out
}

// waitClean polls until no resource of tenant id is left in any store: a
// provision attempt that was running when the rollback began may finish
// after it and is compensated then, so "nothing leaks" is a statement about
// where the system converges.
func (s *system) waitClean(id events.TenantID, within time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := s.leftovers(id)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(s.record(string(id)), "", "  ")
			s.t.Fatalf("tenant %s: still in the stores after %s: %v\nrecord:\n%s", id, within, left, b)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// streamData returns the raw data and headers of every message still in
// stream (including KV and object-store streams).
func (s *system) streamData(name string) [][]byte {
	s.t.Helper()
	st, err := s.js.Stream(s.ctx, name)
	if err != nil {
		s.t.Fatalf("stream %s: %v", name, err)
	}
	info, err := st.Info(s.ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	var out [][]byte
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(s.ctx, seq)
		if err != nil {
			continue // deleted (work queue, purged)
		}
		out = append(out, m.Data)
		for k, vs := range m.Header {
			for _, v := range vs {
				out = append(out, []byte(k+": "+v))
			}
		}
	}
	return out
}

// auditCount counts audit events of type t for tenant in the AUDIT stream.
func (s *system) auditCount(t events.AuditType, tenant string) int {
	n := 0
	for _, d := range s.streamData(events.StreamAudit) {
		if ev, err := events.DecodeAuditEvent(d); err == nil && ev.Type == t && ev.TenantID == tenant {
			n++
		}
	}
	return n
}

// assertNoPlaintext scans every stream (the KV bucket's and the object
// store's included), and every log line of every agent and orchestrator,
// for the given secrets.
func (s *system) assertNoPlaintext(secrets []string) {
	s.t.Helper()
	names := s.js.StreamNames(s.ctx)
	var scanned, found int
	for name := range names.Name() {
		for _, d := range s.streamData(name) {
			scanned++
			for _, sec := range secrets {
				if bytes.Contains(d, []byte(sec)) {
					found++
					s.t.Errorf("stream %s holds a credential in plain text", name)
				}
			}
		}
	}
	var logs []string
	for _, st := range events.Stores() {
		logs = append(logs, s.agent(st).LogText())
	}
	s.mu.Lock()
	for _, b := range s.logs {
		logs = append(logs, b.String())
	}
	s.mu.Unlock()
	for i, l := range logs {
		for _, sec := range secrets {
			if strings.Contains(l, sec) {
				s.t.Errorf("log %d holds a credential in plain text", i)
			}
		}
	}
	if scanned == 0 || len(secrets) == 0 {
		s.t.Fatalf("scan saw %d messages and %d secrets: it proves nothing", scanned, len(secrets))
	}
	s.t.Logf("scanned %d stream messages and %d logs for %d secrets: %d found", scanned, len(logs), len(secrets), found)
}
