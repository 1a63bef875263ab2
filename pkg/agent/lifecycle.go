package agent

import (
	"context"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// The lifecycle after provisioning (DESIGN.md §10) as optional interfaces a
// Store implements next to Store. Like Store's methods, every method is
// idempotent, safe to call concurrently for different tenants (the runtime
// holds the tenant's lock around each call), and reports transient errors
// unless they are wrapped with Permanent or match ErrConflict. No request,
// response or error carries a secret in plain text: secrets travel as
// secret.String and are sealed by the runtime.

// Rotator rotates a tenant's credential with a grace period during which
// the old and the new credential both work (Vault's database engine
// rotates; tenantprov also verifies).
type Rotator interface {
	// Rotate gives the tenant a new credential next to the current one,
	// named by req.Version. Afterwards both the credential of
	// req.CurrentVersion and the new one authenticate and reach exactly
	// the tenant's slice. Calling it again for the same Version converges
	// (the new credential is reset to req.Password). The store's Verify
	// must accept exactly these two credentials while both exist.
	Rotate(ctx context.Context, req RotateRequest) (RotateResponse, error)

	// Retire revokes every credential of the tenant except the one named
	// by req.Keep and confirms the retired ones are refused. Retiring what
	// is already gone succeeds.
	Retire(ctx context.Context, req RetireRequest) (RetireResponse, error)
}

// Suspender disables and re-enables a tenant's credentials without
// touching its data.
type Suspender interface {
	// Suspend makes every credential of the tenant refused (login fails)
	// and ends its open sessions; data, grants and markers stay as they
	// are. Suspending a suspended tenant succeeds.
	Suspend(ctx context.Context, req SuspendRequest) error

	// Resume makes the same credentials work again, exactly as before
	// Suspend. Resuming an active tenant succeeds.
	Resume(ctx context.Context, req SuspendRequest) error
}

// Observer compares a provisioned tenant's slice with what tenantprov
// provisioned (Crossplane's observe), in both directions of DESIGN.md §5.
type Observer interface {
	// Observe reports every difference between the store and what was
	// provisioned for req.Tenant at req.Generation: resources present,
	// markers intact, grants exactly as provisioned inward and outward,
	// the credential of req.CredentialVersion still authenticating. With
	// req.Repair it puts grants and markers back and reports what it
	// repaired; lost data (a dropped database, a deleted bucket) is only
	// reported, never recreated empty.
	Observe(ctx context.Context, req ObserveRequest) (ObserveResponse, error)
}

// RotateRequest asks for a tenant's next credential.
type RotateRequest struct {
	Tenant     events.TenantID
	Generation uint64
	// CurrentVersion is the credential version in use (1 after
	// Provision); Version is the new one (CurrentVersion+1).
	CurrentVersion int
	Version        int
	// Password is the freshly generated secret of the new credential.
	// Stores whose credential is not a password (Qdrant) may ignore it.
	Password secret.String
	// Grace is how long the old credential is meant to keep working; a
	// store with its own expiry (a Qdrant token) may use it, the others
	// wait for Retire.
	Grace time.Duration
}

// RotateResponse is the new credential, the store's section of the
// secrets file (DESIGN.md §6) with the same keys as Provision's.
type RotateResponse struct {
	Credential Credential
	Warnings   []string
}

// RetireRequest asks for every credential but Keep to be revoked.
type RetireRequest struct {
	Tenant     events.TenantID
	Generation uint64
	Keep       int
}

// RetireResponse reports what was revoked.
type RetireResponse struct {
	// Retired names the credential versions revoked (and confirmed
	// refused) by this call.
	Retired  []int
	Warnings []string
}

// SuspendRequest names the tenant to suspend or resume.
type SuspendRequest struct {
	Tenant     events.TenantID
	Generation uint64
}

// ObserveRequest asks for one tenant's drift.
type ObserveRequest struct {
	Tenant            events.TenantID
	Generation        uint64
	CredentialVersion int
	// Credential is the current credential (from the sealed file), so
	// that Observe can check it still authenticates; nil skips that check.
	Credential Credential
	Repair     bool
}

// ObserveResponse lists what differs, and what was repaired.
type ObserveResponse struct {
	Drift    []Drift
	Repaired []Drift
}

// Drift is one difference between the store and what was provisioned
// (events.Drift, so that results carry it unchanged). It never holds a
// secret.
type Drift = events.Drift
