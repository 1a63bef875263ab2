// Package qdrantstore is the qdrant-agent's store logic (DESIGN.md §5,
// Qdrant): per tenant a collection tenant_<id>, and a JWT — signed with the
// server's API key, Qdrant's JWT RBAC — granting read-write on that
// collection only and bound by a value_exists claim to a revocation point,
// so that deprovisioning revokes it at once.
//
// tenantprov keeps two collections of its own: tenantprov_system (markers
// of origin and revocation points; no tenant can read it) and
// tenantprov_canary (a collection no tenant may reach, for verification).
//
// A server that does not enforce JWT RBAC cannot give a tenant a credential
// confined to its collection. The Store probes for that and refuses to
// provision (reason "unsupported") unless configured for application-level
// isolation only; ProvisionResponse.IsolationMode records which mode was
// used.
package qdrantstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/codes"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Resource keys of ProvisionResponse.Resources.
const (
	ResourceCollection    = "collection"
	ResourceIsolationMode = "isolation_mode"
)

// Credential keys (DESIGN.md §6, section qdrant).
const (
	CredHost       = "host"
	CredGRPCPort   = "grpc_port"
	CredCollection = "collection"
	CredAPIKey     = "api_key"
)

// Store provisions Qdrant collections and JWTs. It implements agent.Store
// and is safe for concurrent use; Close releases its connection.
type Store struct {
	cfg      Config
	distance qdrant.Distance
	client   *qdrant.Client
	now      func() time.Time

	mu    sync.Mutex // guards ready; held while prepare runs
	ready *readiness
}

var _ agent.Store = (*Store)(nil)

// New returns a Store for cfg. It does not contact the server: the
// connection is made on first use, so the agent can start before Qdrant
// does (readiness reports it through Ping).
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	distance, _ := parseDistance(cfg.Distance)
	// The client holds no API key: every call carries the admin key or a
	// tenant token in its own metadata (withKey), over one connection.
	client, err := qdrant.NewClient(&qdrant.Config{
		Host:                   cfg.Host,
		Port:                   cfg.GRPCPort,
		UseTLS:                 cfg.UseTLS,
		PoolSize:               1,
		SkipCompatibilityCheck: true, // it blocks without a deadline; identify checks the server instead
	})
	if err != nil {
		return nil, fmt.Errorf("qdrant client for %s:%d: %w", cfg.Host, cfg.GRPCPort, err)
	}
	return &Store{cfg: cfg, distance: distance, client: client, now: time.Now}, nil
}

// Close closes the connection to Qdrant.
func (s *Store) Close() error { return s.client.Close() }

// Kind returns events.StoreQdrant.
func (s *Store) Kind() events.Store { return events.StoreQdrant }

// bound applies the configured per-call timeout.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.CallTimeout)
}

// Ping reports whether Qdrant answers and accepts the admin API key.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if _, err := s.client.HealthCheck(ctx); err != nil {
		return fmt.Errorf("qdrant health check: %w", err)
	}
	if _, err := s.client.CollectionExists(withKey(ctx, s.cfg.APIKey), events.CanaryCollection); err != nil {
		return s.adminErr(fmt.Errorf("qdrant admin call: %w", err))
	}
	return nil
}

// Provision creates, idempotently, the tenant's collection (marked as
// tenantprov's) and, in jwt_rbac mode, issues a new JWT for it: a fresh
// revocation point is written and every older one of the tenant deleted, so
// a previously issued token stops working. req.Password is not used: the
// JWT is the credential. An existing collection that tenantprov did not
// create fails with agent.ErrConflict and is not touched.
func (s *Store) Provision(ctx context.Context, req agent.ProvisionRequest) (resp agent.ProvisionResponse, err error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	defer func() {
		// Whatever failed may have been something prepare vouched for (the
		// system collection deleted under us, the server restarted without
		// JWT RBAC): check again on the next attempt.
		if err != nil && !errors.Is(err, agent.ErrConflict) && !errors.Is(err, ErrSuperseded) {
			s.forget()
		}
	}()
	mode, warnings, err := s.prepare(ctx)
	if err != nil {
		return resp, classify(err)
	}
	resp.Warnings = slices.Clone(warnings)
	admin := withKey(ctx, s.cfg.APIKey)
	tenant, name := req.Tenant, req.Tenant.QdrantCollection()

	st, err := s.inspect(admin, tenant)
	if err != nil {
		return resp, classify(err)
	}
	if g := st.generation(); g > req.Generation {
		return resp, agent.Permanent(events.ReasonExpired, fmt.Errorf("provision %s generation %d: %w (generation %d exists); nothing changed", name, req.Generation, ErrSuperseded, g))
	}
	switch st.owner {
	case foreign:
		return resp, agent.Conflict("qdrant collection " + name)
	case absent:
		if err := s.createTenantCollectionWith(admin, tenant, req.Generation, s.vectorParamsFor(req.Plan)); err != nil {
			return resp, classify(err)
		}
	case ours:
		resp.Warnings = append(resp.Warnings, s.configDrift(st.info, s.vectorParamsFor(req.Plan))...)
	}
	if err := s.putMarker(admin, tenant, req.Generation); err != nil {
		return resp, classify(err)
	}

	host, port := s.cfg.publicEndpoint()
	resp.Resources = map[string]string{ResourceCollection: name, ResourceIsolationMode: mode}
	resp.IsolationMode = mode
	resp.Credential = agent.Credential{CredHost: host, CredGRPCPort: port, CredCollection: name}
	if mode == IsolationApplication {
		return resp, nil
	}

	tokenID, err := newTokenID()
	if err != nil {
		return resp, err
	}
	now := s.now().Truncate(time.Second)
	exp := now.Add(s.cfg.TokenTTL)
	if err := s.putToken(admin, tenant, req.Generation, tokenID, exp); err != nil {
		return resp, classify(err)
	}
	if err := s.revokeTokens(admin, tenant, tokenID, 0); err != nil {
		return resp, classify(err)
	}
	tok, err := sign(tokenClaims(tenant, tokenID, now, exp), s.cfg.APIKey)
	if err != nil {
		return resp, err
	}
	resp.Credential[CredAPIKey] = tok
	return resp, nil
}

// createTenantCollection creates the tenant's collection with tenantprov's
// metadata. If it appeared meanwhile, it is accepted only if it is ours.
func (s *Store) createTenantCollection(admin context.Context, tenant events.TenantID, generation uint64) error {
	return s.createTenantCollectionWith(admin, tenant, generation, s.vectorParamsFor(nil))
}

// createTenantCollectionWith is createTenantCollection with the vector
// parameters of the tenant's plan (plan.go).
func (s *Store) createTenantCollectionWith(admin context.Context, tenant events.TenantID, generation uint64, params *qdrant.VectorParams) error {
	name := tenant.QdrantCollection()
	err := s.client.CreateCollection(admin, &qdrant.CreateCollection{
		CollectionName: name,
		VectorsConfig:  qdrant.NewVectorsConfig(params),
		Metadata: qdrant.NewValueMap(map[string]any{
			metaManagedBy:  managedBy,
			metaTenant:     tenant.String(),
			metaGeneration: int64(generation),
		}),
	})
	if code(err) == codes.AlreadyExists {
		st, err := s.inspect(admin, tenant)
		if err != nil {
			return err
		}
		if st.owner != ours {
			return agent.Conflict("qdrant collection " + name)
		}
		return nil
	}
	if err != nil {
		return s.adminErr(fmt.Errorf("create collection %s: %w", name, err))
	}
	return nil
}

// configDrift warns when an existing collection of ours has another vector
// configuration than want, the agent's or the plan's (the configuration
// changed since).
func (s *Store) configDrift(info *qdrant.CollectionInfo, want *qdrant.VectorParams) []string {
	p := info.GetConfig().GetParams().GetVectorsConfig().GetParams()
	if p == nil {
		return nil
	}
	if p.GetSize() != want.GetSize() || p.GetDistance() != want.GetDistance() {
		return []string{fmt.Sprintf("existing collection has %d dimensions, %s; configuration says %d, %s (left as it is)",
			p.GetSize(), p.GetDistance(), want.GetSize(), want.GetDistance())}
	}
	return nil
}

// Deprovision revokes the tenant's tokens (deleting every point that keeps
// one valid, so they stop working at once), then drops the collection,
// then its marker, and reads each step back: it never succeeds while a
// token of the generation being deprovisioned could still be valid or a
// collection of that generation remains (that is a transient error, so the
// runtime retries and the record shows it). Absent resources are fine. A
// collection tenantprov did not create is left exactly as it is and named
// in Skipped. A command for an older generation than the one in place
// revokes that generation's tokens and touches nothing else.
func (s *Store) Deprovision(ctx context.Context, req agent.DeprovisionRequest) (agent.DeprovisionResponse, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var resp agent.DeprovisionResponse
	admin := withKey(ctx, s.cfg.APIKey)
	tenant, name := req.Tenant, req.Tenant.QdrantCollection()

	st, err := s.inspect(admin, tenant)
	if err != nil {
		return resp, classify(err)
	}
	if g := st.generation(); req.Generation > 0 && g > req.Generation {
		if err := s.revokeTokens(admin, tenant, "", req.Generation); err != nil {
			return resp, classify(err)
		}
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("collection %s belongs to generation %d; deprovision of generation %d revoked that generation's tokens only", name, g, req.Generation))
		return resp, nil
	}
	// The collection goes (or is foreign, or absent): no token naming it may
	// survive, whatever generation its record says — a collection created
	// later under the same name must not bring it back.
	if err := s.revokeTokens(admin, tenant, "", 0); err != nil {
		return resp, classify(err)
	}
	switch st.owner {
	case foreign:
		resp.Skipped = append(resp.Skipped, "qdrant collection "+name+" (not created by tenantprov)")
	case ours:
		_, err := s.client.GetCollectionsClient().Delete(admin, &qdrant.DeleteCollection{CollectionName: name})
		if err != nil && !isNotFound(err) {
			return resp, classify(s.adminErr(fmt.Errorf("delete collection %s: %w", name, err)))
		}
		still, err := s.client.CollectionExists(admin, name)
		if err != nil {
			return resp, classify(s.adminErr(fmt.Errorf("check collection %s: %w", name, err)))
		}
		if still {
			return resp, fmt.Errorf("delete collection %s: it still exists after the delete", name)
		}
	}
	if st.marker != nil {
		if err := s.deleteMarker(admin, tenant); err != nil {
			return resp, classify(err)
		}
	}
	return resp, nil
}

// classify marks the errors retrying cannot fix as permanent, with their
// reason; everything else stays transient.
func classify(err error) error {
	var pe *agent.PermanentError
	switch {
	case err == nil, errors.As(err, &pe):
		return err
	case errors.Is(err, ErrRBACNotEnforced):
		return agent.Permanent(events.ReasonUnsupported, err)
	case errors.Is(err, ErrAdminKeyRefused):
		return agent.Permanent(events.ReasonStoreError, err)
	case code(err) == codes.InvalidArgument:
		return agent.Permanent(events.ReasonStoreError, err)
	}
	return err
}

// tokenOf returns the JWT in a credential.
func tokenOf(cred agent.Credential) (secret.String, bool) {
	tok := cred.Secret(CredAPIKey)
	return tok, !tok.IsZero()
}
