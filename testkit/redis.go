package testkit

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RedisInstallHint is the command that installs redis-server.
const RedisInstallHint = "apt-get install -y redis-server"

// Redis is a redis-server for one test, listening on 127.0.0.1 only, with
// the default user disabled (every command needs AUTH as a named user),
// ACLs kept in ACLFile, and no persistence of data.
type Redis struct {
	// Addr is host:port, 127.0.0.1:<port>; it stays the same across Stop
	// and Start.
	Addr string
	// AdminUser has all permissions on all keys and channels.
	AdminUser string
	// AdminPassword is AdminUser's random password.
	AdminPassword string
	// ACLFile is the server's aclfile; ACL SAVE writes to it and ACL LOAD
	// and a restart read it.
	ACLFile string

	proc *childProcess
}

// StartRedis starts redis-server on a random port and returns once AdminUser
// can authenticate and run PING. The server is stopped when the test ends.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	begin := time.Now()
	bin := RequireBinary(t, "redis-server", RedisInstallHint)
	dir := t.TempDir()
	port := FreePort(t)
	r := &Redis{
		Addr:          net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		AdminUser:     "tpadmin",
		AdminPassword: randomHex(t, 16),
		ACLFile:       filepath.Join(dir, "users.acl"),
	}
	sum := sha256.Sum256([]byte(r.AdminPassword))
	acl := fmt.Sprintf("user default off\nuser %s on #%s ~* &* +@all\n", r.AdminUser, hex.EncodeToString(sum[:]))
	if err := os.WriteFile(r.ACLFile, []byte(acl), 0o600); err != nil {
		t.Fatalf("testkit: write redis aclfile: %v", err)
	}
	conf := strings.Join([]string{
		"# Written by testkit.",
		"bind 127.0.0.1",
		"port " + strconv.Itoa(port),
		"protected-mode yes",
		"daemonize no",
		`save ""`,
		"appendonly no",
		"dir " + strconv.Quote(dir),
		"aclfile " + strconv.Quote(r.ACLFile),
		`logfile ""`,
		"loglevel notice",
		"",
	}, "\n")
	confPath := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatalf("testkit: write redis.conf: %v", err)
	}
	r.proc = &childProcess{
		name:    "redis-server",
		path:    bin,
		args:    []string{confPath},
		env:     []string{"PATH=/usr/bin:/bin", "HOME=" + dir},
		dir:     dir,
		logPath: filepath.Join(dir, "redis-server.log"),
	}
	t.Cleanup(func() {
		if err := r.proc.stop(syscall.SIGKILL, 5*time.Second); err != nil {
			t.Errorf("testkit: stop redis-server: %v", err)
		}
	})
	if err := r.start(); err != nil {
		t.Fatalf("testkit: %v", err)
	}
	t.Logf("testkit: redis-server (%s) at %s started in %s", bin, r.Addr, time.Since(begin).Round(time.Millisecond))
	return r
}

func (r *Redis) start() error {
	if r.proc.running() {
		return fmt.Errorf("redis-server at %s is already running", r.Addr)
	}
	if err := r.proc.start(); err != nil {
		return err
	}
	return r.proc.waitReady(r.ping)
}

// ping authenticates as AdminUser and runs PING over a raw RESP connection.
func (r *Redis) ping() error {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(c, "%s%s", respCommand("AUTH", r.AdminUser, r.AdminPassword), respCommand("PING")); err != nil {
		return err
	}
	br := bufio.NewReader(c)
	for _, want := range []string{"+OK", "+PONG"} {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if got := strings.TrimRight(line, "\r\n"); got != want {
			return fmt.Errorf("redis replied %q, want %q", got, want)
		}
	}
	return nil
}

func respCommand(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

// Stop shuts redis-server down (SIGTERM, no save) and returns once it has
// exited; connections fail until Start. ACLs not saved with ACL SAVE are
// lost, as is all data. Stopping a stopped server does nothing.
func (r *Redis) Stop(t testing.TB) {
	t.Helper()
	if err := r.proc.stop(syscall.SIGTERM, 10*time.Second); err != nil {
		t.Fatalf("testkit: stop redis-server: %v", err)
	}
}

// Start starts redis-server again on the same address with the same config;
// users come from ACLFile. It returns once AdminUser can run PING (so it
// fails the test if ACLFile no longer lets AdminUser in).
func (r *Redis) Start(t testing.TB) {
	t.Helper()
	begin := time.Now()
	if err := r.start(); err != nil {
		t.Fatalf("testkit: restart redis-server: %v", err)
	}
	t.Logf("testkit: redis-server at %s restarted in %s", r.Addr, time.Since(begin).Round(time.Millisecond))
}
