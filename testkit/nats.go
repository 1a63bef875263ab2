package testkit

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// NATS is an embedded nats-server with JetStream enabled, listening on
// 127.0.0.1 only. Its client port and store directory never change for its
// lifetime, so Restart brings back the same server with its JetStream state.
type NATS struct {
	// URL is the client URL, nats://127.0.0.1:<port>.
	URL string
	// StoreDir is the JetStream store directory (inside t.TempDir()).
	StoreDir string
	// Name is the server name (unique within a cluster).
	Name string

	logPath string
	cluster *NATSCluster // nil for a standalone server

	mu   sync.Mutex
	opts *server.Options // ports are fixed after the first start
	srv  *server.Server  // nil while shut down
}

// StartNATS starts a standalone nats-server with JetStream on a random port
// and returns once it accepts connections and JetStream is enabled. The
// server is shut down when the test ends.
//
// Options (NATSConfigFile) start it with authentication and authorization
// from a nats-server configuration file; without them it accepts anyone.
func StartNATS(t testing.TB, options ...NATSOption) *NATS {
	t.Helper()
	begin := time.Now()
	dir := t.TempDir()
	opts := natsOptions(t, dir, "tenantprov-nats", options)
	n := &NATS{
		StoreDir: opts.StoreDir,
		Name:     opts.ServerName,
		logPath:  filepath.Join(dir, "nats-server.log"),
		opts:     opts,
	}
	t.Cleanup(n.Shutdown)
	if err := n.start(); err != nil {
		t.Fatalf("testkit: start nats-server: %v", err)
	}
	t.Logf("testkit: nats-server with JetStream at %s (store %s) started in %s",
		n.URL, n.StoreDir, time.Since(begin).Round(time.Millisecond))
	return n
}

// NATSOption configures the servers StartNATS and StartNATSCluster start.
type NATSOption func(*natsSettings)

type natsSettings struct{ configFile string }

// NATSConfigFile starts the server(s) with the settings of a nats-server
// configuration file — typically the authorization a deployment generates
// (operator JWT, resolver, accounts, users), so that tests run against
// exactly that configuration. Listen addresses, server name, cluster and
// JetStream storage are still chosen by the kit.
func NATSConfigFile(path string) NATSOption {
	return func(s *natsSettings) { s.configFile = path }
}

func natsOptions(t testing.TB, dir, name string, options []NATSOption) *server.Options {
	t.Helper()
	var set natsSettings
	for _, o := range options {
		o(&set)
	}
	opts := &server.Options{}
	if set.configFile != "" {
		var err error
		if opts, err = server.ProcessConfigFile(set.configFile); err != nil {
			t.Fatalf("testkit: nats-server configuration %s: %v", set.configFile, err)
		}
	}
	opts.ServerName = name
	opts.Host = "127.0.0.1"
	opts.Port = server.RANDOM_PORT
	opts.JetStream = true
	opts.StoreDir = filepath.Join(dir, "jetstream")
	opts.NoSigs = true
	// Small fixed limits: the defaults reserve a share of the machine's
	// memory and disk, which makes several servers per test binary compete
	// for nothing.
	opts.JetStreamMaxMemory = 256 << 20
	opts.JetStreamMaxStore = 2 << 30
	return opts
}

// start runs a new server from n.opts and waits until it is ready. After the
// first start the randomly chosen client port is written back into n.opts
// so that restarts reuse it.
func (n *NATS) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.srv != nil {
		return fmt.Errorf("nats-server %s is already running", n.Name)
	}
	logger, err := newNATSLogger(n.logPath)
	if err != nil {
		return err
	}
	srv, err := server.NewServer(n.opts.Clone())
	if err != nil {
		logger.close()
		return fmt.Errorf("configure nats-server %s: %w", n.Name, err)
	}
	srv.SetLoggerV2(logger, false, false, false)
	srv.Start()
	fail := func(format string, args ...any) error {
		srv.Shutdown()
		srv.WaitForShutdown()
		logger.close()
		return fmt.Errorf("nats-server %s: %s\n--- %s (tail) ---\n%s",
			n.Name, fmt.Sprintf(format, args...), n.logPath, fileTail(n.logPath, 40))
	}
	if !srv.ReadyForConnections(startupTimeout) {
		return fail("not ready for connections after %s", startupTimeout)
	}
	if msg := logger.fatal(); msg != "" {
		return fail("fatal error during startup: %s", msg)
	}
	if !srv.JetStreamEnabled() {
		return fail("JetStream is not enabled")
	}
	if n.opts.Port == server.RANDOM_PORT {
		tcp, ok := srv.Addr().(*net.TCPAddr)
		if !ok {
			return fail("unexpected listener address %v", srv.Addr())
		}
		n.opts.Port = tcp.Port
	}
	n.srv = srv
	if n.URL == "" { // set once: restarts reuse the port
		n.URL = fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port)
	}
	go func() { srv.WaitForShutdown(); logger.close() }()
	return nil
}

// Connect returns a client connection to this server that keeps trying to
// reconnect while the server is down (every 100ms, without limit) and is
// closed when the test ends. opts are applied after those defaults.
func (n *NATS) Connect(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	return connectNATS(t, n.URL, opts)
}

func connectNATS(t testing.TB, urls string, opts []nats.Option) *nats.Conn {
	t.Helper()
	all := append([]nats.Option{
		nats.Name(t.Name()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100 * time.Millisecond),
		nats.Timeout(5 * time.Second),
	}, opts...)
	nc, err := nats.Connect(urls, all...)
	if err != nil {
		t.Fatalf("testkit: connect to NATS at %s: %v", urls, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Server returns the running embedded server, or nil while it is shut down.
// It is meant for assertions (JetStreamIsLeader, NumRoutes, ...), not for
// reconfiguring the server.
func (n *NATS) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Running reports whether the server is up (started and not shut down).
func (n *NATS) Running() bool { return n.Server() != nil }

// Shutdown stops the server, as a crash would from the clients' point of
// view, and returns once it has stopped. Its port and store directory are
// kept for Restart. Shutdown of a stopped server does nothing.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Restart starts the server again on the same client port (and cluster port)
// with the same store directory, so JetStream state written before Shutdown
// is there again. For a cluster node it returns once the node has rejoined:
// see NATSCluster.WaitForMetaLeader.
func (n *NATS) Restart(t testing.TB) {
	t.Helper()
	begin := time.Now()
	if err := n.start(); err != nil {
		t.Fatalf("testkit: restart nats-server: %v", err)
	}
	if n.cluster != nil {
		n.cluster.WaitForMetaLeader(t)
	}
	t.Logf("testkit: nats-server %s restarted at %s in %s", n.Name, n.URL, time.Since(begin).Round(time.Millisecond))
}

// NATSCluster is a JetStream cluster of embedded nats-servers on 127.0.0.1.
// Every node has routes to every other node, so any node can be shut down
// and restarted on its own and rejoins the cluster.
type NATSCluster struct {
	// Nodes are the cluster members, in start order. Nodes[i].Name is "n<i>".
	Nodes []*NATS
	// Name is the cluster name.
	Name string
}

// StartNATSCluster starts size nodes (size >= 1; use 3 for R3 streams) with
// JetStream clustered on random client and route ports, and returns once the
// cluster is ready for streams of up to size replicas (see
// WaitForMetaLeader). All nodes are shut down when the test ends.
// Options apply to every node (see StartNATS).
func StartNATSCluster(t testing.TB, size int, options ...NATSOption) *NATSCluster {
	t.Helper()
	if size < 1 {
		t.Fatalf("testkit: StartNATSCluster: size must be at least 1, got %d", size)
	}
	begin := time.Now()
	c := &NATSCluster{Name: "tenantprov-test"}
	clusterPorts := make([]int, size)
	routes := make([]string, size)
	for i := range size {
		clusterPorts[i] = FreePort(t)
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", clusterPorts[i])
	}
	for i := range size {
		dir := t.TempDir()
		opts := natsOptions(t, dir, fmt.Sprintf("n%d", i), options)
		opts.Port = FreePort(t)
		opts.Cluster = server.ClusterOpts{
			Name: c.Name,
			Host: "127.0.0.1",
			Port: clusterPorts[i],
		}
		// Routes to every node, this one included (the server ignores a
		// route to itself): the JetStream meta group sizes itself from the
		// number of configured routes.
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		n := &NATS{
			StoreDir: opts.StoreDir,
			Name:     opts.ServerName,
			logPath:  filepath.Join(dir, "nats-server.log"),
			cluster:  c,
			opts:     opts,
		}
		t.Cleanup(n.Shutdown)
		c.Nodes = append(c.Nodes, n)
	}
	// Start all nodes before waiting on any: a node is not ready for
	// connections until its route listener is up, which does not depend on
	// peers, but meta leader election needs a quorum.
	errs := make([]error, size)
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Go(func() { errs[i] = n.start() })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("testkit: start NATS cluster: %v", err)
		}
	}
	c.WaitForMetaLeader(t)
	t.Logf("testkit: %d-node NATS JetStream cluster at %s started in %s",
		size, c.URLs(), time.Since(begin).Round(time.Millisecond))
	return c
}

// URLs returns the client URLs of all nodes, comma-separated, as accepted
// by nats.Connect.
func (c *NATSCluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = n.URL
	}
	return strings.Join(urls, ",")
}

// Connect returns a client connection to the cluster (any node, failing
// over between them) that is closed when the test ends; see NATS.Connect.
func (c *NATSCluster) Connect(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	return connectNATS(t, c.URLs(), opts)
}

// WaitForMetaLeader waits until the running nodes form a working JetStream
// cluster, and returns the meta leader: exactly one running node is meta
// leader, it sees every running node as an online JetStream peer (so stream
// placement can use them all), and every running node is current with it.
// It fails the test after the startup timeout.
func (c *NATSCluster) WaitForMetaLeader(t testing.TB) *NATS {
	t.Helper()
	var leader *NATS
	err := waitFor(startupTimeout, func() error {
		leader = nil
		leaders, running := 0, 0
		for _, n := range c.Nodes {
			srv := n.Server()
			if srv == nil {
				continue
			}
			running++
			if srv.JetStreamIsLeader() {
				leaders++
				leader = n
			}
			if !srv.JetStreamIsCurrent() {
				return fmt.Errorf("node %s is not current with the meta leader", n.Name)
			}
		}
		if leaders != 1 {
			return fmt.Errorf("%d meta leaders among %d running nodes, want 1", leaders, running)
		}
		srv := leader.Server()
		if srv == nil {
			return fmt.Errorf("meta leader %s shut down", leader.Name)
		}
		if peers := srv.JetStreamClusterPeers(); len(peers) != running {
			return fmt.Errorf("meta leader %s sees JetStream peers %v, want all %d running nodes", leader.Name, peers, running)
		}
		return nil
	})
	if err != nil {
		var tails strings.Builder
		for _, n := range c.Nodes {
			fmt.Fprintf(&tails, "\n--- %s (tail) ---\n%s", n.logPath, fileTail(n.logPath, 15))
		}
		t.Fatalf("testkit: NATS cluster: %v%s", err, tails.String())
	}
	return leader
}

// waitFor polls cond every 50ms until it returns nil or timeout passes, and
// then returns cond's last error.
func waitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// natsLogger writes the server log to a file (for failure messages) and
// remembers the first fatal error instead of exiting the test binary, which
// is what the server's own loggers do on Fatalf.
type natsLogger struct {
	mu       sync.Mutex
	f        *os.File
	fatalMsg string
}

func newNATSLogger(path string) (*natsLogger, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open nats-server log: %w", err)
	}
	return &natsLogger{f: f}, nil
}

func (l *natsLogger) logf(level, format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		fmt.Fprintf(l.f, "%s [%s] %s\n", time.Now().Format("15:04:05.000"), level, fmt.Sprintf(format, v...))
	}
}

func (l *natsLogger) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatalMsg
}

func (l *natsLogger) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

func (l *natsLogger) Noticef(format string, v ...any) { l.logf("INF", format, v...) }
func (l *natsLogger) Warnf(format string, v ...any)   { l.logf("WRN", format, v...) }
func (l *natsLogger) Errorf(format string, v ...any)  { l.logf("ERR", format, v...) }
func (l *natsLogger) Debugf(format string, v ...any)  { l.logf("DBG", format, v...) }
func (l *natsLogger) Tracef(format string, v ...any)  { l.logf("TRC", format, v...) }
func (l *natsLogger) Fatalf(format string, v ...any) {
	l.logf("FTL", format, v...)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fatalMsg == "" {
		l.fatalMsg = fmt.Sprintf(format, v...)
	}
}
