package redisstore

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"

	"github.com/tenantprov/tenantprov/testkit/storetest"
)

func TestMain(m *testing.M) {
	// go-redis prints dial failures to stderr on its own; the tests that
	// stop the server expect them.
	redis.SetLogger(quietLog{})
	os.Exit(m.Run())
}

type quietLog struct{}

func (quietLog) Printf(context.Context, string, ...any) {}

// TestConformance runs the shared agent.Store suite against a fresh
// redis-server (testkit: aclfile, default user off) per subtest.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *storetest.Harness {
		return newEnv(t).harness()
	})
}

// TestLifecycleConformance runs the shared lifecycle suite (rotate, retire,
// suspend, resume, observe) against a fresh redis-server per subtest, with
// Redis's kinds of drift.
func TestLifecycleConformance(t *testing.T) {
	storetest.RunLifecycle(t, func(t *testing.T) *storetest.Harness {
		e := newEnv(t)
		h := e.harness()
		h.Breakages = e.breakages()
		return h
	})
}

// breakages are drifts made behind the Store's back with the admin user.
func (e *env) breakages() []storetest.Breakage {
	setuser := func(rules ...any) func(ctx context.Context, tenant events.TenantID, _ agent.Credential) error {
		return func(ctx context.Context, tenant events.TenantID, _ agent.Credential) error {
			return e.admin.Do(ctx, append([]any{"ACL", "SETUSER", tenant.RedisUser()}, rules...)...).Err()
		}
	}
	return []storetest.Breakage{
		// Inward: somebody else can log in as the tenant.
		{Name: "extra password", Repairable: true, Break: setuser("#" + strings.Repeat("ab", 32))},
		{Name: "nopass", Repairable: true, Break: setuser("nopass")},
		// Outward: the tenant reaches beyond its prefix.
		{Name: "key pattern widened", Repairable: true, Break: setuser("~*")},
		{Name: "selector added", Repairable: true, Break: setuser("(~tenantprov:* +get)")},
		{Name: "admin commands granted", Repairable: true, Break: setuser("+keys", "+flushall")},
		{Name: "user turned off", Repairable: true, Break: setuser("off")},
		{Name: "user deleted", Repairable: true, Break: func(ctx context.Context, tenant events.TenantID, _ agent.Credential) error {
			return e.admin.Do(ctx, "ACL", "DELUSER", tenant.RedisUser()).Err()
		}},
		{Name: "marker deleted", Repairable: true, Break: func(ctx context.Context, tenant events.TenantID, _ agent.Credential) error {
			return e.admin.HDel(ctx, ManagedUsersKey, tenant.RedisUser()).Err()
		}},
		// Lost data: the server lost its key space and ACL users (a restart
		// without RDB/AOF and without aclfile), as FLUSHALL and DELUSER.
		{Name: "key space lost", Repairable: false, Break: func(ctx context.Context, tenant events.TenantID, cred agent.Credential) error {
			c := e.connect(cred)
			defer c.Close()
			if err := c.Set(ctx, tenant.RedisKeyPrefix()+"data", "v", 0).Err(); err != nil {
				return err
			}
			if err := e.admin.FlushAll(ctx).Err(); err != nil {
				return err
			}
			return e.admin.Do(ctx, "ACL", "DELUSER", tenant.RedisUser()).Err()
		}},
	}
}
