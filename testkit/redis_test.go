package testkit

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

func newRedisClient(t *testing.T, addr, user, password string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:       addr,
		Username:   user,
		Password:   password,
		MaxRetries: -1,
		// A plain standalone server: no cluster maintenance notifications.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	t.Cleanup(func() { c.Close() })
	return c
}

func TestRedisACLs(t *testing.T) {
	r := StartRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	admin := newRedisClient(t, r.Addr, r.AdminUser, r.AdminPassword)
	if err := admin.Do(ctx, "ACL", "SETUSER", "u1", "on", ">pw-u1", "~t1:*", "+@all").Err(); err != nil {
		t.Fatalf("ACL SETUSER as admin: %v", err)
	}

	u1 := newRedisClient(t, r.Addr, "u1", "pw-u1")
	if err := u1.Set(ctx, "t1:x", "v", 0).Err(); err != nil {
		t.Fatalf("u1 SET t1:x: %v", err)
	}
	if got, err := admin.Get(ctx, "t1:x").Result(); err != nil || got != "v" {
		t.Fatalf("admin GET t1:x = %q, %v; want \"v\"", got, err)
	}
	err := u1.Set(ctx, "t2:x", "v", 0).Err()
	if err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
		t.Fatalf("u1 SET t2:x: err = %v, want NOPERM", err)
	}

	// The default user is off: no command without AUTH, and AUTH <password>
	// (which means the default user) is refused.
	anon := newRedisClient(t, r.Addr, "", "")
	err = anon.Ping(ctx).Err()
	if err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("unauthenticated PING: err = %v, want NOAUTH", err)
	}
	def := newRedisClient(t, r.Addr, "", r.AdminPassword)
	err = def.Ping(ctx).Err()
	if err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("AUTH as the default user: err = %v, want WRONGPASS", err)
	}

	if err := admin.Do(ctx, "ACL", "SAVE").Err(); err != nil {
		t.Fatalf("ACL SAVE: %v", err)
	}
	saved, err := os.ReadFile(r.ACLFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(saved), "user u1 on") || !strings.Contains(string(saved), "user default off") {
		t.Fatalf("aclfile after ACL SAVE lacks u1 or the disabled default user:\n%s", saved)
	}
}

func TestRedisStopStart(t *testing.T) {
	r := StartRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	admin := newRedisClient(t, r.Addr, r.AdminUser, r.AdminPassword)
	if err := admin.Do(ctx, "ACL", "SETUSER", "u1", "on", ">pw-u1", "~t1:*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "ACL", "SAVE").Err(); err != nil {
		t.Fatal(err)
	}

	r.Stop(t)
	if err := admin.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded while redis-server was stopped")
	}

	r.Start(t)
	if err := admin.Ping(ctx).Err(); err != nil {
		t.Fatalf("admin PING after Start: %v", err)
	}
	// Users saved with ACL SAVE come back from the aclfile.
	u1 := newRedisClient(t, r.Addr, "u1", "pw-u1")
	if err := u1.Set(ctx, "t1:x", "v", 0).Err(); err != nil {
		t.Fatalf("u1 after restart: %v", err)
	}
}
