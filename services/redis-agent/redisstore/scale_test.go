package redisstore

import (
	"fmt"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// BenchmarkScale: one tenant's Provision + Verify with 0 and with 1,000
// other tenants present (storetest.BenchScale). The other tenants are ACL
// users with exactly the rules Provision gives, made directly (ACL SETUSER,
// pipelined) to keep the setup short:
//
//	CI=true go test -run '^$' -bench Scale -benchtime 20x ./services/redis-agent/redisstore/
func BenchmarkScale(b *testing.B) {
	e := newEnv(b)
	ctx := ctxFor(b, 20*time.Minute)
	others := 0
	grow := func(n int) {
		pipe := e.admin.Pipeline()
		for ; others < n; others++ {
			id := events.MustTenantID(fmt.Sprintf("other-%d", others))
			args := []any{"ACL", "SETUSER", id.RedisUser()}
			for _, r := range userRules(id, []string{passwordHash(password(b))}, true, ScriptingDeny) {
				args = append(args, r)
			}
			pipe.Do(ctx, args...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	storetest.BenchScale(b, ctx, e.store, "", grow, func(id events.TenantID) agent.ProvisionRequest {
		return agent.ProvisionRequest{Tenant: id, Generation: 1, Password: password(b)}
	})
}
