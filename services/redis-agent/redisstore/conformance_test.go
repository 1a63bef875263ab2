package redisstore

import (
	"context"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

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
