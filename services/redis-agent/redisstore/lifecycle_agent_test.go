package redisstore

import (
	"context"
	"fmt"
	"testing"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestLifecycleThroughTheAgent sends rotate, retire, suspend, resume and
// observe commands through the real agent runtime on a real NATS server
// into the Store on a fresh redis-server per subtest (storetest's
// RunLifecycleAgent), including an agent killed in the middle of a
// rotation.
func TestLifecycleThroughTheAgent(t *testing.T) {
	storetest.RunLifecycleAgent(t, func(t *testing.T) *storetest.LifecycleAgentHarness {
		e := newEnv(t)
		h := e.harness()
		h.Breakages = e.breakages()
		key := func(tenant events.TenantID) string { return tenant.RedisKeyPrefix() + "kept" }
		return &storetest.LifecycleAgentHarness{
			Harness: h,
			PutData: func(ctx context.Context, tenant events.TenantID, cred agent.Credential) error {
				c := e.connect(cred)
				defer c.Close()
				return c.Set(ctx, key(tenant), "written before", 0).Err()
			},
			DataIntact: func(ctx context.Context, tenant events.TenantID, cred agent.Credential) error {
				c := e.connect(cred)
				defer c.Close()
				v, err := c.Get(ctx, key(tenant)).Result()
				if err != nil {
					return err
				}
				if v != "written before" {
					return fmt.Errorf("%s = %q", key(tenant), v)
				}
				return nil
			},
		}
	})
}
