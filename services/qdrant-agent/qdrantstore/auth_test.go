package qdrantstore

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/qdrantstandin"
)

// TestRevokedTokenRefused: a token whose revocation point is gone — after
// deprovision, or after a re-provision issued a new one — is refused with
// Unauthenticated (Qdrant's answer to a failed value_exists check), while
// the new token works.
func TestRevokedTokenRefused(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		old := provision(t, e, acme, 1).Credential
		cur := provision(t, e, acme, 2).Credential
		wantRefused(t, acme, old, codes.Unauthenticated)
		if err := ownAccess(testCtx(t), acme, cur); err != nil {
			t.Fatalf("current token: %v", err)
		}
		deprovision(t, e, acme, 2)
		wantRefused(t, acme, cur, codes.Unauthenticated)

		// Provisioning again does not revive a revoked token.
		provision(t, e, acme, 3)
		wantRefused(t, acme, cur, codes.Unauthenticated)
	})
}

// TestExpiredTokenRefused: the exp claim is honoured (Qdrant answers
// PermissionDenied, "ExpiredSignature", beyond its 30 s leeway).
func TestExpiredTokenRefused(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		e.store.now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
		e.store.cfg.TokenTTL = time.Hour // exp = one hour ago
		cred := provision(t, e, acme, 1).Credential
		wantRefused(t, acme, cred, codes.PermissionDenied)

		e.store.now = time.Now
		cred = provision(t, e, acme, 1).Credential
		if err := ownAccess(testCtx(t), acme, cred); err != nil {
			t.Fatalf("fresh token: %v", err)
		}
	})
}

// TestTokenClaims pins the credential's claims to DESIGN.md §5: rw on the
// tenant's collection only, value_exists on the system collection, exp set.
func TestTokenClaims(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		cred := provision(t, e, events.MustTenantID("acme"), 1).Credential
		parts := strings.Split(cred.Secret(CredAPIKey).Reveal(), ".")
		if len(parts) != 3 {
			t.Fatalf("api_key is not a JWT")
		}
		claims := decodeSegment(t, parts[1])
		access, _ := claims["access"].([]any)
		if len(access) != 1 {
			t.Fatalf("access = %v, want one collection", claims["access"])
		}
		if a := access[0].(map[string]any); a["collection"] != "tenant_acme" || a["access"] != "rw" {
			t.Fatalf("access = %v", a)
		}
		ve, _ := claims["value_exists"].(map[string]any)
		if ve["collection"] != events.QdrantSystemCollection {
			t.Fatalf("value_exists = %v", ve)
		}
		exp, _ := claims["exp"].(float64)
		if want := float64(time.Now().Add(e.store.cfg.TokenTTL).Unix()); exp < want-60 || exp > want+60 {
			t.Fatalf("exp = %v, want about %v", exp, want)
		}
		if h := decodeSegment(t, parts[0]); h["alg"] != "HS256" {
			t.Fatalf("header = %v", h)
		}
	})
}

// TestVerifyCatchesOverprivilegedToken makes sure Verify is not vacuous: a
// token with global manage access (no access claim) fails the canary and
// admin checks, and a token for another collection fails own access.
func TestVerifyCatchesOverprivilegedToken(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		cred := provision(t, e, acme, 1).Credential
		manage, err := sign(map[string]any{"exp": time.Now().Add(time.Hour).Unix()}, secret.String(e.q.APIKey))
		if err != nil {
			t.Fatal(err)
		}
		bad := agent.Credential{CredHost: cred[CredHost], CredGRPCPort: cred[CredGRPCPort], CredCollection: "tenant_acme", CredAPIKey: manage}
		v, err := e.store.Verify(testCtx(t), agent.VerifyRequest{Tenant: acme, Generation: 1, Credential: bad})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, c := range v.Checks {
			got[c.Name] = c.Passed
		}
		if v.Passed() || got[agent.CheckCanaryDenied] || got[agent.CheckAdminDenied] || !got[agent.CheckOwnAccess] {
			t.Fatalf("a manage token verified as: %+v", v.Checks)
		}
		if exists, err := e.admin.CollectionExists(e.adminCtx(testCtx(t)), "tenantprov_probe_acme"); err != nil || exists {
			t.Fatalf("probe collection left behind: %v %v", exists, err)
		}

		beta := provision(t, e, events.MustTenantID("beta"), 1).Credential
		beta[CredCollection] = "tenant_acme" // beta's token presented as acme's
		v, err = e.store.Verify(testCtx(t), agent.VerifyRequest{Tenant: acme, Generation: 1, Credential: beta})
		if err != nil {
			t.Fatal(err)
		}
		if v.Passed() || v.Checks[0].Name != agent.CheckOwnAccess || v.Checks[0].Passed {
			t.Fatalf("another tenant's token verified as: %+v", v.Checks)
		}
	})
}

// TestSupersededGeneration: a late command of an older generation neither
// re-provisions (which would revoke the newer token) nor deletes the newer
// generation's collection.
func TestSupersededGeneration(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		cred := provision(t, e, acme, 2).Credential
		_, err := e.store.Provision(testCtx(t), agent.ProvisionRequest{Tenant: acme, Generation: 1})
		if !errors.Is(err, ErrSuperseded) {
			t.Fatalf("provision of generation 1 after 2: %v, want ErrSuperseded", err)
		}
		if perm, reason := agent.Classify(err); !perm || reason != events.ReasonExpired {
			t.Fatalf("classified %v %q", perm, reason)
		}
		r := deprovision(t, e, acme, 1)
		if len(r.Warnings) == 0 {
			t.Fatal("no warning for a superseded deprovision")
		}
		if err := ownAccess(testCtx(t), acme, cred); err != nil {
			t.Fatalf("generation 2 damaged by generation 1's commands: %v", err)
		}
	})
}

// TestWithoutJWTRBAC runs the Store against servers that cannot confine a
// token to a collection — the stand-in with an API key but JWT RBAC off,
// and with no authentication at all: provisioning is refused (permanent,
// "unsupported") by default, and allowed with isolation=application, which
// the response records and no credential comes with.
func TestWithoutJWTRBAC(t *testing.T) {
	for _, tc := range []struct {
		name   string
		apiKey string
	}{
		{"api-key-without-jwt-rbac", "server-key-" + strings.Repeat("x", 32)},
		{"no-authentication", ""},
	} {
		t.Run("qdrant="+testkit.QdrantKindStandin+"/"+tc.name, func(t *testing.T) {
			q := startStandin(t, qdrantstandin.Config{APIKey: tc.apiKey, JWTRBAC: false})
			q.APIKey = "server-key-" + strings.Repeat("x", 32) // what the agent is configured with
			acme := events.MustTenantID("acme")

			e := newEnv(t, q, nil)
			_, err := e.store.Provision(testCtx(t), agent.ProvisionRequest{Tenant: acme, Generation: 1})
			if !errors.Is(err, ErrRBACNotEnforced) {
				t.Fatalf("Provision: %v, want ErrRBACNotEnforced", err)
			}
			if perm, reason := agent.Classify(err); !perm || reason != events.ReasonUnsupported {
				t.Fatalf("classified %v %q, want permanent %q", perm, reason, events.ReasonUnsupported)
			}
			if exists(t, e, acme) {
				t.Fatal("refused provision created resources")
			}

			app := newEnv(t, q, func(c *Config) { c.Isolation = IsolationApplication })
			r := provision(t, app, acme, 1)
			if r.IsolationMode != IsolationApplication || r.Resources[ResourceIsolationMode] != IsolationApplication {
				t.Fatalf("isolation mode %q, resources %v", r.IsolationMode, r.Resources)
			}
			if _, ok := r.Credential[CredAPIKey]; ok {
				t.Fatal("application mode handed out an api_key")
			}
			if len(r.Warnings) == 0 || !strings.Contains(strings.Join(r.Warnings, " "), "application-level") {
				t.Fatalf("warnings %v do not say application-level isolation", r.Warnings)
			}
			v, err := app.store.Verify(testCtx(t), agent.VerifyRequest{Tenant: acme, Generation: 1, Credential: r.Credential})
			if err != nil || !v.Passed() || len(agent.MissingChecks(v.Checks)) != 0 {
				t.Fatalf("Verify in application mode: %v %+v", err, v.Checks)
			}
			deprovision(t, app, acme, 1)
			if exists(t, app, acme) {
				t.Fatal("resources left after deprovision")
			}
		})
	}
}

// TestApplicationModeOnRBACServer: opting in to application-level isolation
// does not weaken a server that enforces JWT RBAC; tenants still get JWTs.
func TestApplicationModeOnRBACServer(t *testing.T) {
	q := testkit.StartQdrant(t)
	t.Run("qdrant="+q.Kind, func(t *testing.T) {
		e := newEnv(t, q, func(c *Config) { c.Isolation = IsolationApplication })
		r := provision(t, e, events.MustTenantID("acme"), 1)
		if r.IsolationMode != IsolationJWTRBAC || r.Credential.Secret(CredAPIKey).IsZero() {
			t.Fatalf("mode %q, api_key set %v", r.IsolationMode, !r.Credential.Secret(CredAPIKey).IsZero())
		}
	})
}

// TestAdminKeyRefused: a wrong QDRANT_API_KEY fails permanently, naming
// the variable, and Ping reports it.
func TestAdminKeyRefused(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		bad := newEnv(t, e.q, func(c *Config) { c.APIKey = "not-the-key" })
		_, err := bad.store.Provision(testCtx(t), agent.ProvisionRequest{Tenant: events.MustTenantID("acme"), Generation: 1})
		if !errors.Is(err, ErrAdminKeyRefused) {
			t.Fatalf("Provision: %v, want ErrAdminKeyRefused", err)
		}
		if perm, _ := agent.Classify(err); !perm {
			t.Fatal("a refused admin key should be permanent")
		}
		if err := bad.store.Ping(testCtx(t)); !errors.Is(err, ErrAdminKeyRefused) {
			t.Fatalf("Ping: %v", err)
		}
		if err := e.store.Ping(testCtx(t)); err != nil {
			t.Fatalf("Ping with the right key: %v", err)
		}
	})
}

// TestStandinNamedInRecord: against the stand-in, every provision record
// carries a warning that names it.
func TestStandinNamedInRecord(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		r := provision(t, e, events.MustTenantID("acme"), 1)
		named := strings.Contains(strings.Join(r.Warnings, " "), "STAND-IN")
		if named != e.q.Standin() {
			t.Fatalf("warnings %v; stand-in: %v", r.Warnings, e.q.Standin())
		}
	})
}

// TestSystemCollectionDeleted: if tenantprov_system disappears under a
// running agent (every token is then refused: their value_exists
// collection is gone), the next Provision fails transiently and the one
// after recreates it and succeeds.
func TestSystemCollectionDeleted(t *testing.T) {
	withQdrant(t, func(t *testing.T, e *env) {
		acme := events.MustTenantID("acme")
		old := provision(t, e, acme, 1).Credential
		if err := e.admin.DeleteCollection(e.adminCtx(testCtx(t)), events.QdrantSystemCollection); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, acme, old, codes.PermissionDenied)
		_, err := e.store.Provision(testCtx(t), agent.ProvisionRequest{Tenant: acme, Generation: 1})
		if perm, _ := agent.Classify(err); err == nil || perm {
			t.Fatalf("first Provision after the loss: %v, want a transient error", err)
		}
		cred := provision(t, e, acme, 1).Credential
		verifyPasses(t, e, acme, cred)
	})
}

// startStandin serves a stand-in with cfg on a random loopback port until t
// ends.
func startStandin(t *testing.T, cfg qdrantstandin.Config) *testkit.Qdrant {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logf = t.Logf
	srv := qdrantstandin.New(cfg)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("stand-in: %v", err)
		}
	})
	return &testkit.Qdrant{Host: "127.0.0.1", GRPCPort: lis.Addr().(*net.TCPAddr).Port, APIKey: cfg.APIKey, Kind: testkit.QdrantKindStandin}
}

// decodeSegment decodes one base64url JSON segment of a JWT.
func decodeSegment(t *testing.T, seg string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("JWT segment is not base64url: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("JWT segment is not JSON: %v", err)
	}
	return m
}
