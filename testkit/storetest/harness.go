// Package storetest is the conformance suite every store agent runs against
// its real server (modelled on Vault's dbtesting and Watermill's
// pubsub/tests): one Run call checks the whole agent.Store contract.
package storetest

import (
	"context"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Harness is what an agent gives the suite: its Store, wired to a fresh real
// server, and store-specific probes the suite cannot write generically.
// Every probe talks to the real server. Every probe is required: a subtest
// that needs a probe the harness left nil fails, saying which.
type Harness struct {
	// Store under test.
	Store agent.Store

	// OwnAccess uses the tenant's credential (as returned by Provision) to
	// read and write in the tenant's own slice. It returns nil if both
	// worked, and an error saying what was refused otherwise.
	OwnAccess func(ctx context.Context, tenant events.TenantID, cred agent.Credential) error

	// CrossAccess uses cred to read or write in other's slice. It must
	// return nil only if access was DENIED, and an error describing what
	// succeeded otherwise.
	CrossAccess func(ctx context.Context, cred agent.Credential, other events.TenantID) error

	// Exists reports whether any resource of the tenant (user, role,
	// database, bucket, policy, collection, keys…) exists in the store.
	Exists func(ctx context.Context, tenant events.TenantID) (bool, error)

	// CreateForeign creates, with the admin credential and NOT through the
	// Store, a resource carrying the tenant's name as some other system
	// would (no tenantprov marker). ForeignIntact returns nil if that
	// resource still exists exactly as CreateForeign left it.
	CreateForeign func(ctx context.Context, tenant events.TenantID) error
	ForeignIntact func(ctx context.Context, tenant events.TenantID) error

	// Interrupt leaves the tenant as an agent that died in the middle of
	// Provision would: some of the resources created (with tenantprov's
	// marker), the rest missing. The suite then redelivers the command
	// (calls Provision again) and checks it converges.
	Interrupt func(ctx context.Context, tenant events.TenantID, generation uint64, password secret.String) error

	// Breakages are store-specific drifts for RunLifecycle's Observe
	// subtest: each is made with the admin credential on a provisioned
	// tenant, and Observe must report it (and, when Repairable, repair it
	// so that Verify passes again).
	Breakages []Breakage

	// Timeout bounds each subtest (every Store call and probe in it runs
	// under one context with this deadline). Zero means DefaultTimeout.
	Timeout time.Duration
}

// Breakage is one deliberate drift of a provisioned tenant, made with the
// store's admin credential behind the Store's back.
type Breakage struct {
	Name string
	// Break changes the store; cred is the tenant's current credential.
	Break func(ctx context.Context, tenant events.TenantID, cred agent.Credential) error
	// Repairable is true for grants and markers, false for lost data.
	Repairable bool
}

// DefaultTimeout is the per-subtest deadline when Harness.Timeout is zero.
// The concurrent subtest provisions, verifies and deprovisions 20 tenants
// within it.
const DefaultTimeout = 3 * time.Minute
