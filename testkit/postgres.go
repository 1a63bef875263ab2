package testkit

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PostgresInstallHint is the command that installs the PostgreSQL server
// binaries StartPostgres needs.
const PostgresInstallHint = "apt-get install -y postgresql"

// Postgres is a PostgreSQL cluster created by its own initdb for one test,
// listening on 127.0.0.1 only, with SCRAM-SHA-256 as the only accepted
// authentication method (no trust lines, for TCP or the Unix socket).
type Postgres struct {
	// Host is always 127.0.0.1.
	Host string
	// Port is the TCP port; it stays the same across Stop and Start.
	Port int
	// AdminUser is the bootstrap superuser created by initdb.
	AdminUser string
	// AdminPassword is AdminUser's random password.
	AdminPassword string
	// DataDir is the cluster's data directory (PGDATA).
	DataDir string

	proc *childProcess
}

// StartPostgres runs initdb into a fresh directory and starts postgres on a
// random port, returning once the server accepts TCP connections. The server
// is stopped and its files removed when the test ends.
//
// initdb and postgres refuse to run as root; when the test runs as root both
// run as the "postgres" OS user, in a directory outside t.TempDir() that
// user can reach.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	begin := time.Now()
	initdb := RequireBinary(t, "initdb", PostgresInstallHint, postgresCandidates("initdb")...)
	postgres := filepath.Join(filepath.Dir(initdb), "postgres")
	if !isExecutable(postgres) {
		t.Fatalf("testkit: found %s but no postgres next to it; install the server with: %s", initdb, PostgresInstallHint)
	}

	var cred *syscall.Credential
	var uid, gid = -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("testkit: running as root, and PostgreSQL refuses to run as root, but there is no 'postgres' OS user to run it as (%v); install the server package with: %s", err, PostgresInstallHint)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: false}
	}

	// Not t.TempDir(): that lives under a 0700 directory the postgres user
	// cannot enter when we are root.
	base, err := os.MkdirTemp("", "tenantprov-pg-")
	if err != nil {
		t.Fatalf("testkit: create postgres directory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatalf("testkit: chmod %s: %v", base, err)
	}
	if cred != nil {
		if err := checkTraversable(filepath.Dir(base)); err != nil {
			t.Fatalf("testkit: the postgres OS user cannot reach %s: %v (set TMPDIR to a world-traversable directory)", base, err)
		}
		if err := os.Chown(base, uid, gid); err != nil {
			t.Fatalf("testkit: chown %s to postgres: %v", base, err)
		}
	}

	p := &Postgres{
		Host:          "127.0.0.1",
		Port:          FreePort(t),
		AdminUser:     "tpadmin",
		AdminPassword: randomHex(t, 16),
		DataDir:       filepath.Join(base, "data"),
	}

	pwfile := filepath.Join(base, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.AdminPassword+"\n"), 0o600); err != nil {
		t.Fatalf("testkit: write pwfile: %v", err)
	}
	if cred != nil {
		if err := os.Chown(pwfile, uid, gid); err != nil {
			t.Fatalf("testkit: chown pwfile: %v", err)
		}
	}
	env := []string{"PATH=/usr/bin:/bin", "HOME=" + base, "LC_ALL=C", "LANG=C", "TZ=UTC"}
	initLog := filepath.Join(base, "initdb.log")
	cmd := exec.Command(initdb,
		"--pgdata="+p.DataDir,
		"--username="+p.AdminUser,
		"--pwfile="+pwfile,
		"--auth=scram-sha-256",
		"--encoding=UTF8",
		"--locale=C",
		"--no-sync",
	)
	cmd.Env = env
	cmd.Dir = base
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	_ = os.WriteFile(initLog, out, 0o644)
	os.Remove(pwfile)
	if err != nil {
		t.Fatalf("testkit: %s failed: %v\n--- output (tail) ---\n%s", initdb, err, fileTail(initLog, 40))
	}
	initDone := time.Now()

	hba := strings.Join([]string{
		"# Written by testkit: SCRAM only, no trust.",
		"local all all scram-sha-256",
		"host  all all 127.0.0.1/32 scram-sha-256",
		"host  all all ::1/128 scram-sha-256",
		"",
	}, "\n")
	conf := strings.Join([]string{
		"",
		"# Written by testkit.",
		"listen_addresses = '127.0.0.1'",
		"port = " + strconv.Itoa(p.Port),
		"unix_socket_directories = '" + p.DataDir + "'",
		"password_encryption = 'scram-sha-256'",
		"fsync = off",
		"synchronous_commit = off",
		"full_page_writes = off",
		"max_connections = 50",
		"shared_buffers = 32MB",
		"logging_collector = off",
		"log_min_messages = warning",
		"",
	}, "\n")
	if err := os.WriteFile(filepath.Join(p.DataDir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatalf("testkit: write pg_hba.conf: %v", err)
	}
	f, err := os.OpenFile(filepath.Join(p.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("testkit: open postgresql.conf: %v", err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("testkit: write postgresql.conf: %v", err)
	}

	p.proc = &childProcess{
		name:    "postgres",
		path:    postgres,
		args:    []string{"-D", p.DataDir},
		env:     env,
		dir:     base,
		logPath: filepath.Join(base, "postgres.log"),
		cred:    cred,
	}
	// Immediate shutdown (SIGQUIT) at the end of the test: nothing in it
	// needs to survive.
	t.Cleanup(func() {
		if err := p.proc.stop(syscall.SIGQUIT, 10*time.Second); err != nil {
			t.Errorf("testkit: stop postgres: %v", err)
		}
	})
	if err := p.start(); err != nil {
		t.Fatalf("testkit: %v", err)
	}
	t.Logf("testkit: postgres (%s) on %s:%d started in %s (initdb %s); data %s",
		filepath.Dir(initdb), p.Host, p.Port, time.Since(begin).Round(time.Millisecond),
		initDone.Sub(begin).Round(time.Millisecond), p.DataDir)
	return p
}

// postgresCandidates lists where the server binary name may be: the bindir
// reported by pg_config, then every /usr/lib/postgresql/<version>/bin (the
// highest version first).
func postgresCandidates(name string) []string {
	var c []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); dir != "" {
			c = append(c, filepath.Join(dir, name))
		}
	}
	return append(c, filepath.Join("/usr/lib/postgresql/*/bin", name))
}

func (p *Postgres) start() error {
	if p.proc.running() {
		return fmt.Errorf("postgres on port %d is already running", p.Port)
	}
	// A postmaster.pid left by a killed server would only be ignored after a
	// check; remove it so the readiness probe never reads a stale one.
	pidfile := filepath.Join(p.DataDir, "postmaster.pid")
	os.Remove(pidfile)
	if err := p.proc.start(); err != nil {
		return err
	}
	return p.proc.waitReady(func() error {
		if err := postmasterReady(pidfile); err != nil {
			return err
		}
		c, err := net.DialTimeout("tcp", net.JoinHostPort(p.Host, strconv.Itoa(p.Port)), time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// postmasterReady reads the status line pg_ctl -w also waits on: the eighth
// line of postmaster.pid is "ready" once the server accepts connections.
func postmasterReady(pidfile string) error {
	f, err := os.Open(pidfile)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for i := 1; sc.Scan(); i++ {
		if i == 8 {
			if status := strings.TrimSpace(sc.Text()); status != "ready" {
				return fmt.Errorf("postmaster status %q", status)
			}
			return nil
		}
	}
	return fmt.Errorf("postmaster.pid has no status line yet")
}

// AdminURL returns a connection URL for AdminUser to the postgres database,
// postgres://tpadmin:<pw>@127.0.0.1:<port>/postgres?sslmode=disable.
func (p *Postgres) AdminURL() string {
	return p.URL(p.AdminUser, p.AdminPassword, "postgres")
}

// URL returns a connection URL for any user and database on this server,
// with user and password escaped and sslmode=disable.
func (p *Postgres) URL(user, password, db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     net.JoinHostPort(p.Host, strconv.Itoa(p.Port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Stop shuts the server down (fast shutdown: open sessions are terminated)
// and returns once it has exited; connections fail until Start. Stopping a
// stopped server does nothing.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	if err := p.proc.stop(syscall.SIGINT, 15*time.Second); err != nil {
		t.Fatalf("testkit: stop postgres: %v", err)
	}
}

// Start starts the same cluster again, on the same port with the same data
// and passwords, and returns once it accepts connections.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	begin := time.Now()
	if err := p.start(); err != nil {
		t.Fatalf("testkit: restart postgres: %v", err)
	}
	t.Logf("testkit: postgres on %s:%d restarted in %s", p.Host, p.Port, time.Since(begin).Round(time.Millisecond))
}

// checkTraversable returns an error naming the first directory from dir up
// to / that other users cannot enter (no o+x).
func checkTraversable(dir string) error {
	for {
		st, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s has mode %s (no search permission for others)", dir, st.Mode().Perm())
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil
		}
		dir = parent
	}
}

// randomHex returns 2*n random hex characters, safe in URLs and configs.
func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testkit: random: %v", err)
	}
	return hex.EncodeToString(b)
}
