package testkit

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/qdrant/go-client/qdrant"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
	"google.golang.org/grpc"

	"github.com/tenantprov/tenantprov/testkit/qdrantstandin"
)

// Kinds of Qdrant that StartQdrant can hand out; Qdrant.Kind is one of them.
const (
	// QdrantKindDocker is real Qdrant in a container started through
	// testcontainers.
	QdrantKindDocker = "qdrant (testcontainers)"
	// QdrantKindStandin is the in-process gRPC stand-in of package
	// qdrantstandin, used when no Docker engine answers.
	QdrantKindStandin = "qdrant-standin"
)

// QdrantEnv names the environment variable that forces a kind of Qdrant:
// "standin" or "docker". Unset (or "auto") picks Docker when an engine
// answers and the stand-in otherwise.
const QdrantEnv = "TENANTPROV_QDRANT"

// QdrantImageEnv names the environment variable that overrides the Qdrant
// image used with Docker (default qdrantImage).
const QdrantImageEnv = "TENANTPROV_QDRANT_IMAGE"

// qdrantImage is the real Qdrant run under Docker: the release line whose
// API the stand-in follows and the go-client (v1.17) is compatible with.
const qdrantImage = "qdrant/qdrant:v1.17.0"

// Qdrant is a Qdrant server for one test, with API-key authentication and
// JWT RBAC enabled. It is stopped by the test's cleanup.
type Qdrant struct {
	// Host and GRPCPort address the gRPC API.
	Host     string
	GRPCPort int
	// APIKey is the admin key (full manage access) and the HS256 secret
	// that signs JWTs the server accepts.
	APIKey string
	// Kind says which Qdrant this is: QdrantKindDocker or QdrantKindStandin.
	Kind string

	standin *qdrantstandin.Server
}

// Stop makes the server unavailable, for failure tests. The stand-in answers
// every call with codes.Unavailable (its state is kept, as across a restart
// of a persistent server); a Docker Qdrant is not supported yet and fails
// the test.
func (q *Qdrant) Stop(t testing.TB) {
	t.Helper()
	if q.standin == nil {
		t.Fatalf("testkit: Qdrant.Stop is implemented for the stand-in only (this is %s)", q.Kind)
	}
	q.standin.SetDown(true)
	t.Logf("Qdrant %s: stopped (answers Unavailable)", q.Kind)
}

// Start undoes Stop.
func (q *Qdrant) Start(t testing.TB) {
	t.Helper()
	if q.standin == nil {
		t.Fatalf("testkit: Qdrant.Start is implemented for the stand-in only (this is %s)", q.Kind)
	}
	q.standin.SetDown(false)
	t.Logf("Qdrant %s: started", q.Kind)
}

// Standin reports whether q is the stand-in rather than real Qdrant.
func (q *Qdrant) Standin() bool { return q.Kind == QdrantKindStandin }

// StartQdrant starts a fresh Qdrant for t — real Qdrant in Docker when an
// engine answers, otherwise the stand-in on 127.0.0.1 — with a random API
// key and JWT RBAC on, logs which one ran, and stops it when t ends.
// TENANTPROV_QDRANT=standin|docker forces the choice; with "docker" and no
// engine the test fails, saying so.
func StartQdrant(t testing.TB) *Qdrant {
	t.Helper()
	apiKey := qdrantRandomKey(t)
	switch mode := os.Getenv(QdrantEnv); mode {
	case "standin":
		t.Logf("Qdrant: STAND-IN (forced by %s=standin)", QdrantEnv)
		return startQdrantStandin(t, apiKey)
	case "docker":
		if err := qdrantDockerAvailable(); err != nil {
			t.Fatalf("testkit: %s=docker but no Docker engine answers: %v (start Docker, or unset %s to use the stand-in)", QdrantEnv, err, QdrantEnv)
		}
		return startQdrantDocker(t, apiKey)
	case "", "auto":
		if err := qdrantDockerAvailable(); err != nil {
			t.Logf("Qdrant: STAND-IN (no Docker engine: %v)", err)
			return startQdrantStandin(t, apiKey)
		}
		return startQdrantDocker(t, apiKey)
	default:
		t.Fatalf("testkit: %s=%q: want standin, docker or auto", QdrantEnv, mode)
		return nil
	}
}

// Client returns an official go-client connected to q with apiKey (an API
// key or a JWT; "" sends none), closed when t ends. It skips the client's
// version check, which only logs, so tests stay quiet.
func (q *Qdrant) Client(t testing.TB, apiKey string) *qdrant.Client {
	t.Helper()
	c, err := qdrant.NewClient(&qdrant.Config{Host: q.Host, Port: q.GRPCPort, APIKey: apiKey, PoolSize: 1, SkipCompatibilityCheck: true})
	if err != nil {
		t.Fatalf("testkit: connect to %s at %s:%d: %v", q.Kind, q.Host, q.GRPCPort, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func qdrantRandomKey(t testing.TB) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("testkit: random Qdrant API key: %v", err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func startQdrantStandin(t testing.TB, apiKey string) *Qdrant {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testkit: listen for the Qdrant stand-in on 127.0.0.1: %v", err)
	}
	srv := qdrantstandin.New(qdrantstandin.Config{
		APIKey:  apiKey,
		JWTRBAC: true,
		Logf:    t.Logf,
	})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("testkit: Qdrant stand-in: %v", err)
		}
	})
	addr := lis.Addr().(*net.TCPAddr)
	return &Qdrant{Host: "127.0.0.1", GRPCPort: addr.Port, APIKey: apiKey, Kind: QdrantKindStandin, standin: srv}
}

func startQdrantDocker(t testing.TB, apiKey string) *Qdrant {
	t.Helper()
	image := qdrantImage
	if v := os.Getenv(QdrantImageEnv); v != "" {
		image = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ctr, err := testcontainers.Run(ctx, image,
		testcontainers.WithEnv(map[string]string{
			"QDRANT__SERVICE__API_KEY":  apiKey,
			"QDRANT__SERVICE__JWT_RBAC": "true",
		}),
		testcontainers.WithExposedPorts("6334/tcp"),
		testcontainers.WithWaitStrategy(wait.ForListeningPort("6334/tcp").WithStartupTimeout(2*time.Minute)),
	)
	testcontainers.CleanupContainer(t, ctr)
	if err != nil {
		t.Fatalf("testkit: start %s with testcontainers: %v", image, err)
	}
	endpoint, err := ctr.PortEndpoint(ctx, "6334/tcp", "")
	if err != nil {
		t.Fatalf("testkit: Qdrant container gRPC port: %v", err)
	}
	host, port, err := net.SplitHostPort(endpoint)
	if err != nil {
		t.Fatalf("testkit: Qdrant container endpoint %q: %v", endpoint, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("testkit: Qdrant container port %q: %v", port, err)
	}
	q := &Qdrant{Host: host, GRPCPort: p, APIKey: apiKey, Kind: QdrantKindDocker}
	t.Logf("Qdrant: REAL Qdrant %s via testcontainers at %s", image, endpoint)
	return q
}

var (
	qdrantDockerOnce sync.Once
	qdrantDockerErr  error
)

// qdrantDockerAvailable reports, once per process, whether a Docker engine
// answers; nil means yes. Without DOCKER_HOST and without a known socket it
// answers at once, without asking testcontainers.
func qdrantDockerAvailable() error {
	qdrantDockerOnce.Do(func() { qdrantDockerErr = probeQdrantDocker() })
	return qdrantDockerErr
}

func probeQdrantDocker() (err error) {
	if os.Getenv("DOCKER_HOST") == "" && os.Getenv("TESTCONTAINERS_DOCKER_SOCKET_OVERRIDE") == "" {
		found := false
		for _, s := range qdrantDockerSockets() {
			if fi, err := os.Stat(s); err == nil && fi.Mode()&os.ModeSocket != 0 {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("no DOCKER_HOST and no Docker socket")
		}
	}
	defer func() {
		if r := recover(); r != nil { // testcontainers panics on some broken setups
			err = fmt.Errorf("testcontainers: %v", r)
		}
	}()
	provider, err := testcontainers.NewDockerProvider()
	if err != nil {
		return err
	}
	defer provider.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return provider.Health(ctx)
}

// qdrantDockerSockets lists where Docker (rootful, rootless, Desktop) and
// Podman usually put their socket.
func qdrantDockerSockets() []string {
	s := []string{"/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock"}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		s = append(s, filepath.Join(d, "docker.sock"), filepath.Join(d, "podman", "podman.sock"))
	}
	if h, err := os.UserHomeDir(); err == nil {
		s = append(s, filepath.Join(h, ".docker", "run", "docker.sock"), filepath.Join(h, ".docker", "desktop", "docker.sock"))
	}
	return s
}
