package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// env is one test's Redis with a Store on it and an admin client for
// inspecting it.
type env struct {
	redis *testkit.Redis // nil for servers started by startRedisWithoutACLFile
	addr  string
	store *Store
	admin *redis.Client

	mu      sync.Mutex
	foreign map[events.TenantID]foreignSnapshot
}

type foreignSnapshot struct {
	user string // ACL LIST line of the foreign user
	key  string // value of the foreign key under tenant:<id>:
}

// newEnv starts a fresh redis-server (testkit: aclfile, default user off)
// and a Store on it.
func newEnv(t testing.TB) *env {
	t.Helper()
	r := testkit.StartRedis(t)
	return newEnvAt(t, r, r.Addr, r.AdminUser, r.AdminPassword)
}

// newEnvWith starts a fresh redis-server and a Store on it whose Config is
// first changed by each of opts.
func newEnvWith(t testing.TB, opts ...func(*Config)) *env {
	t.Helper()
	r := testkit.StartRedis(t)
	return newEnvAt(t, r, r.Addr, r.AdminUser, r.AdminPassword, opts...)
}

func newEnvAt(t testing.TB, r *testkit.Redis, addr, adminUser, adminPassword string, opts ...func(*Config)) *env {
	t.Helper()
	cfg := Config{Addr: addr, AdminUser: adminUser, AdminPassword: secret.String(adminPassword)}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return &env{
		redis:   r,
		addr:    addr,
		store:   s,
		admin:   newClient(t, addr, adminUser, adminPassword),
		foreign: map[events.TenantID]foreignSnapshot{},
	}
}

func newClient(t testing.TB, addr, user, password string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr: addr, Username: user, Password: password,
		MaxRetries: -1, DisableIdentity: true, ContextTimeoutEnabled: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// tenantClient connects with the credential Provision returned.
func tenantClient(t testing.TB, cred agent.Credential) *redis.Client {
	t.Helper()
	return newClient(t, cred.String(CredAddr), cred.String(CredUsername), cred.Secret(CredPassword).Reveal())
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func password(t testing.TB) secret.String {
	t.Helper()
	p, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// provision provisions tenant and fails the test on error.
func (e *env) provision(t testing.TB, ctx context.Context, tenant events.TenantID, gen uint64) agent.ProvisionResponse {
	t.Helper()
	resp, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: tenant, Generation: gen, SagaID: "saga-test", Password: password(t)})
	if err != nil {
		t.Fatalf("Provision(%s, gen %d): %v", tenant, gen, err)
	}
	return resp
}

func (e *env) deprovision(t testing.TB, ctx context.Context, tenant events.TenantID, gen uint64) agent.DeprovisionResponse {
	t.Helper()
	resp, err := e.store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: tenant, Generation: gen, SagaID: "saga-test"})
	if err != nil {
		t.Fatalf("Deprovision(%s, gen %d): %v", tenant, gen, err)
	}
	return resp
}

// userExists reports whether the ACL user exists, as the admin sees it.
func (e *env) userExists(ctx context.Context, user string) (bool, error) {
	err := e.admin.Do(ctx, "ACL", "GETUSER", user).Err()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	return err == nil, err
}

// aclLine returns user's line of ACL LIST ("" when absent).
func (e *env) aclLine(ctx context.Context, user string) (string, error) {
	lines, err := e.admin.Do(ctx, "ACL", "LIST").StringSlice()
	if err != nil {
		return "", err
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "user "+user+" ") {
			return l, nil
		}
	}
	return "", nil
}

func (e *env) countKeys(ctx context.Context, prefix string) (int, error) {
	n := 0
	iter := e.admin.Scan(ctx, 0, escapeGlob(prefix)+"*", 1000).Iterator()
	for iter.Next(ctx) {
		n++
	}
	return n, iter.Err()
}

// harness is the conformance suite's view of this store.
func (e *env) harness() *storetest.Harness {
	return &storetest.Harness{
		Store:         e.store,
		OwnAccess:     e.ownAccess,
		CrossAccess:   e.crossAccess,
		Exists:        e.exists,
		CreateForeign: e.createForeign,
		ForeignIntact: e.foreignIntact,
		Interrupt:     e.interrupt,
	}
}

func (e *env) connect(cred agent.Credential) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: cred.String(CredAddr), Username: cred.String(CredUsername), Password: cred.Secret(CredPassword).Reveal(),
		MaxRetries: -1, DisableIdentity: true, ContextTimeoutEnabled: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// ownAccess writes, reads and deletes a key in the tenant's prefix and
// publishes to its channel.
func (e *env) ownAccess(ctx context.Context, tenant events.TenantID, cred agent.Credential) error {
	if got := cred.String(CredKeyPrefix); got != tenant.RedisKeyPrefix() {
		return fmt.Errorf("credential key_prefix %q, want %q", got, tenant.RedisKeyPrefix())
	}
	c := e.connect(cred)
	defer c.Close()
	key := tenant.RedisKeyPrefix() + "own-access"
	if err := c.Set(ctx, key, "v", 0).Err(); err != nil {
		return fmt.Errorf("SET %s: %w", key, err)
	}
	if got, err := c.Get(ctx, key).Result(); err != nil || got != "v" {
		return fmt.Errorf("GET %s = %q, %v", key, got, err)
	}
	if err := c.Publish(ctx, tenant.RedisChannelPrefix()+"own", "m").Err(); err != nil {
		return fmt.Errorf("PUBLISH: %w", err)
	}
	return nil
}

// crossAccess returns nil only if every access to other's keys and
// channels is refused with NOPERM.
func (e *env) crossAccess(ctx context.Context, cred agent.Credential, other events.TenantID) error {
	c := e.connect(cred)
	defer c.Close()
	key := other.RedisKeyPrefix() + "own-access"
	var errs []error
	for what, err := range map[string]error{
		"GET " + key:     c.Get(ctx, key).Err(),
		"SET " + key:     c.Set(ctx, key, "stolen", 0).Err(),
		"DEL " + key:     c.Del(ctx, key).Err(),
		"PUBLISH " + key: c.Publish(ctx, other.RedisChannelPrefix()+"own", "m").Err(),
	} {
		if !redis.IsPermissionError(err) {
			errs = append(errs, fmt.Errorf("%s was not refused with NOPERM (err = %v)", what, err))
		}
	}
	return errors.Join(errs...)
}

func (e *env) exists(ctx context.Context, tenant events.TenantID) (bool, error) {
	user := tenant.RedisUser()
	if ok, err := e.userExists(ctx, user); err != nil || ok {
		return ok, err
	}
	if ok, err := e.admin.HExists(ctx, ManagedUsersKey, user).Result(); err != nil || ok {
		return ok, err
	}
	n, err := e.countKeys(ctx, tenant.RedisKeyPrefix())
	return n > 0, err
}

// createForeign makes, as some other system would, an ACL user with the
// tenant's name (no tenantprov record) and a key under the tenant's prefix.
func (e *env) createForeign(ctx context.Context, tenant events.TenantID) error {
	user := tenant.RedisUser()
	if err := e.admin.Do(ctx, "ACL", "SETUSER", user, "on", ">foreign-password", "~foreign:*", "+get").Err(); err != nil {
		return err
	}
	key := tenant.RedisKeyPrefix() + "foreign-data"
	if err := e.admin.Set(ctx, key, "foreign-value", 0).Err(); err != nil {
		return err
	}
	line, err := e.aclLine(ctx, user)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.foreign[tenant] = foreignSnapshot{user: line, key: "foreign-value"}
	e.mu.Unlock()
	return nil
}

func (e *env) foreignIntact(ctx context.Context, tenant events.TenantID) error {
	e.mu.Lock()
	want, ok := e.foreign[tenant]
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("no foreign resource was created for %s", tenant)
	}
	line, err := e.aclLine(ctx, tenant.RedisUser())
	if err != nil {
		return err
	}
	if line != want.user {
		return fmt.Errorf("foreign ACL user changed:\n got %q\nwant %q", line, want.user)
	}
	key := tenant.RedisKeyPrefix() + "foreign-data"
	if got, err := e.admin.Get(ctx, key).Result(); err != nil || got != want.key {
		return fmt.Errorf("foreign key %s = %q, %v; want %q", key, got, err, want.key)
	}
	if ok, err := e.admin.HExists(ctx, ManagedUsersKey, tenant.RedisUser()).Result(); err != nil || ok {
		return fmt.Errorf("a tenantprov record appeared for the foreign user (%v, %v)", ok, err)
	}
	return nil
}

// interrupt leaves the tenant as an agent that died inside Provision after
// the record and ACL SETUSER (with an older password), before ACL SAVE, and
// with a key the tenant had already written.
func (e *env) interrupt(ctx context.Context, tenant events.TenantID, gen uint64, pw secret.String) error {
	user := tenant.RedisUser()
	raw := fmt.Sprintf(`{"tenant":%q,"generation":%d,"created_at":%q,"updated_at":%q}`,
		tenant, gen, time.Now().UTC().Format(time.RFC3339Nano), time.Now().UTC().Format(time.RFC3339Nano))
	if err := e.admin.HSet(ctx, ManagedUsersKey, user, raw).Err(); err != nil {
		return err
	}
	old, err := secret.Generate()
	if err != nil {
		return err
	}
	args := []any{"ACL", "SETUSER", user}
	for _, r := range aclRules(tenant, old, e.store.cfg.TenantScripting) {
		args = append(args, r)
	}
	if err := e.admin.Do(ctx, args...).Err(); err != nil {
		return err
	}
	return e.admin.Set(ctx, tenant.RedisKeyPrefix()+"written-before-crash", "v", 0).Err()
}

// plainRedis is a redis-server this test starts itself, without an aclfile
// (testkit.StartRedis always has one): ACL users live in memory only.
type plainRedis struct {
	addr, user, password string
}

func startRedisWithoutACLFile(t testing.TB) plainRedis {
	t.Helper()
	bin := testkit.RequireBinary(t, "redis-server", testkit.RedisInstallHint)
	dir := t.TempDir()
	port := testkit.FreePort(t)
	r := plainRedis{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), user: "tpadmin", password: "admin-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	sum := sha256.Sum256([]byte(r.password))
	cmd := exec.Command(bin,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"),
		"--user", "default", "off",
		"--user", r.user, "on", "#"+hex.EncodeToString(sum[:]), "~*", "&*", "+@all")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := newClient(t, r.addr, r.user, r.password)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return r
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("redis-server without aclfile not ready: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
