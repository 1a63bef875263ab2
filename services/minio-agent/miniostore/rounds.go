package miniostore

import "slices"

// Why this file exists: three reads that Provision, Verify, Observe and
// Deprovision need cost MinIO far more than the rest of a tenant's calls,
// and two of them grow with the number of tenants.
//
//   - no_foreign_grants needs every canned policy and who they are
//     attached to. MinIO answers ListCannedPolicies by loading every
//     policy from its drives while holding the IAM write lock, which
//     stalls every other request's authentication meanwhile (≈130 ms at
//     1,000 tenants, linear in them), and GetPolicyEntities is sealed with
//     Argon2id (≈150 ms of CPU on each side, whatever the size).
//   - A user's access keys (no_extra_keys, Deprovision) come only from
//     Argon2id-sealed calls.
//   - A bucket's creation date (the ownership stamp, owner.go) comes only
//     from the listing of every bucket.
//
// Each caller's answer must be as fresh as a read of its own, or the check
// would prove less than before. A round gives exactly that: a caller joins
// the next round that has not started yet, so the read it gets began after
// it asked, and everyone who asked while a round was running shares the
// next one. At most one round of a kind runs at a time, so under load the
// reads cost MinIO a bounded rate whatever the number of tenants waiting,
// instead of one read per tenant.

// The rounds are pkg/agent's Rounds, resting between rounds (Rest) so that
// under steady demand the reads keep MinIO busy at most about half of the
// time.

// sortedKeys returns keys sorted, for fetches whose request lists them.
func sortedKeys(keys []string) []string {
	out := slices.Clone(keys)
	slices.Sort(out)
	return out
}
