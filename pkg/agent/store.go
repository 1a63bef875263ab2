// Package agent is the runtime every store agent shares (DESIGN.md §3–6):
// the Store interface a store implements, and — written once for all four —
// the NATS loop that turns store commands into calls on it and its results
// into replies.
package agent

import (
	"context"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Store is one store's provisioning logic. Implementations hold the store's
// admin credential and nothing else of the control plane; the runtime owns
// transport, credentials generation, sealing, retries, metrics and error
// sanitising.
//
// Every method must be idempotent and safe to call concurrently for
// different tenants. Errors are transient unless wrapped with Permanent (or
// are ErrConflict): the runtime retries transient errors with backoff.
type Store interface {
	// Kind is the store this implementation provisions.
	Kind() events.Store

	// Provision creates the tenant's resources with the least-privilege
	// grant and sets the tenant's credential to req.Password. Calling it
	// again for the same tenant converges on the same resources (no
	// duplicate, no error) and resets the credential to the new
	// req.Password. A resource with the tenant's name that tenantprov did
	// not create must not be touched: return an error matching
	// ErrConflict.
	Provision(ctx context.Context, req ProvisionRequest) (ProvisionResponse, error)

	// Verify checks isolation with the tenant's own credential: its own
	// read/write works, the canary and admin operations are denied, a wrong
	// password is refused. A failed check is reported in the response, not
	// as an error; an error means the checks could not run.
	Verify(ctx context.Context, req VerifyRequest) (VerifyResponse, error)

	// Deprovision removes everything Provision created for the tenant and
	// revokes its credential. Deprovisioning something absent succeeds. A
	// resource with the tenant's name that tenantprov did not create is left
	// exactly as it is (and is not an error).
	Deprovision(ctx context.Context, req DeprovisionRequest) (DeprovisionResponse, error)

	// Ping reports whether the store answers with the admin credential; it
	// backs the agent's readiness.
	Ping(ctx context.Context) error
}

// ProvisionRequest asks for one tenant generation's resources.
type ProvisionRequest struct {
	Tenant     events.TenantID
	Generation uint64
	SagaID     string
	// Password is the freshly generated credential (secret.Generate) the
	// tenant's user must end up with. Stores whose credential is not a
	// password (Qdrant's JWT) may ignore it and return their own in
	// Credential.
	Password secret.String
	// Plan is the tenant's plan (this store's section), nil for none. A
	// store reads it only for what must be fixed at creation (Qdrant's
	// vector size and distance); the runtime applies the limits with
	// PlanApplier after Provision and before Verify.
	Plan *events.Plan
}

// ProvisionResponse describes what exists after a successful Provision.
type ProvisionResponse struct {
	// Resources names what was created (bucket, database, role, …); it is
	// recorded in the registry and must hold no secret.
	Resources map[string]string
	// Credential is the store's section of the tenant's secrets file
	// (DESIGN.md §6), with the keys given there. Secret values are
	// secret.String; the runtime seals the whole section with age before it
	// leaves the process.
	Credential Credential
	// IsolationMode says how isolation is enforced where a store has more
	// than one way (Qdrant: "jwt_rbac" or "application").
	IsolationMode string
	// Warnings are things an operator should know (e.g. Redis without an
	// aclfile cannot persist the ACL user).
	Warnings []string
}

// VerifyRequest asks for the isolation checks of a provisioned tenant.
type VerifyRequest struct {
	Tenant     events.TenantID
	Generation uint64
	// Credential is what Provision returned.
	Credential Credential
}

// VerifyResponse lists every check that ran.
type VerifyResponse struct {
	Checks []events.Check
}

// Passed reports whether at least one check ran and all passed.
func (r VerifyResponse) Passed() bool {
	if len(r.Checks) == 0 {
		return false
	}
	for _, c := range r.Checks {
		if !c.Passed {
			return false
		}
	}
	return true
}

// DeprovisionRequest asks for a tenant's resources to be removed.
type DeprovisionRequest struct {
	Tenant     events.TenantID
	Generation uint64
	SagaID     string
}

// DeprovisionResponse reports what an operator should know about a
// deprovision.
type DeprovisionResponse struct {
	// Skipped names resources that had the tenant's name but were not
	// created by tenantprov, and so were left alone.
	Skipped  []string
	Warnings []string
}

// Credential is one store's section of the secrets file: keys as in
// DESIGN.md §6, values plain (string, int, bool) or secret.String.
type Credential map[string]any

// Plain returns a copy with every secret.String revealed, for sealing
// only.
func (c Credential) Plain() map[string]any {
	out := make(map[string]any, len(c))
	for k, v := range c {
		if s, ok := v.(secret.String); ok {
			v = s.Reveal()
		}
		out[k] = v
	}
	return out
}

// Secret returns the secret.String under key, or "" if absent or not a
// secret.
func (c Credential) Secret(key string) secret.String {
	s, _ := c[key].(secret.String)
	return s
}

// String returns the plain string under key ("" if absent or a secret).
func (c Credential) String(key string) string {
	s, _ := c[key].(string)
	return s
}
