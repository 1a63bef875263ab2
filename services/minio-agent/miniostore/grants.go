package miniostore

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/minio/madmin-go/v3"
)

// Why this file exists: no_foreign_grants must look at every canned policy
// (any of them may name the tenant's bucket through a wildcard), so its
// cost grows with the number of tenants. Three things keep that cost down
// without weakening the check:
//
//   - the policies and their users and groups are read in shared rounds
//     (rounds.go): concurrent Verifies and Observes share one read that
//     began after each of them asked, so nothing stale is ever trusted;
//   - parsed documents are cached by their exact bytes (a policy whose
//     document changed by one byte is parsed again): parsing every
//     document on every Verify cost ~240 ms of CPU and ~88 MB of
//     allocations at 10,000 tenants (BenchmarkForeignGrantScan);
//   - wildcard matching first compares the literal prefix of the pattern,
//     which rules out other tenants' resources without running the
//     matcher.

// policyCache holds parsed canned policies by name, with the exact bytes
// they were parsed from.
type policyCache struct {
	mu sync.Mutex
	m  map[string]cachedPolicy
}

type cachedPolicy struct {
	raw string
	doc policyDocument
	err bool
}

// parsedPolicy returns the canned policy name, whose document is raw,
// parsed (from the cache when raw is what was parsed last).
func (s *Store) parsedPolicy(name string, raw []byte) cachedPolicy {
	c := &s.policies
	c.mu.Lock()
	p, ok := c.m[name]
	c.mu.Unlock()
	if !ok || p.raw != string(raw) {
		doc, err := parsePolicy(raw)
		p = cachedPolicy{raw: string(raw), doc: doc, err: err != nil}
		c.mu.Lock()
		if c.m == nil {
			c.m = map[string]cachedPolicy{}
		}
		c.m[name] = p
		c.mu.Unlock()
	}
	return p
}

// prunePolicies forgets cached policies that are no longer listed, so the
// cache never outgrows the server's list.
func (s *Store) prunePolicies(all map[string]json.RawMessage) {
	c := &s.policies
	c.mu.Lock()
	defer c.mu.Unlock()
	for name := range c.m {
		if _, ok := all[name]; !ok {
			delete(c.m, name)
		}
	}
}

// grantSnapshot is one shared read for no_foreign_grants: every canned
// policy (parsed), then the users and groups of every attached policy.
type grantSnapshot struct {
	policies map[string]cachedPolicy
	entities map[string]madmin.PolicyEntities // by policy name
}

// readGrants takes a grantSnapshot (the fetch of s.grantReads). The two
// reads run at once: both begin after every caller of the round asked, as
// when each Verify made its own, one after the other.
func (s *Store) readGrants(ctx context.Context, _ []struct{}) (*grantSnapshot, error) {
	snap := &grantSnapshot{policies: map[string]cachedPolicy{}, entities: map[string]madmin.PolicyEntities{}}
	var (
		all map[string]json.RawMessage
		res madmin.PolicyEntitiesResult
	)
	err := s.call(ctx, "iam.grant_snapshot", func(ctx context.Context) error {
		return s.steps(ctx,
			func(ctx context.Context) error {
				return s.call(ctx, "iam.list_policies", func(ctx context.Context) (err error) {
					if all, err = s.admin.ListCannedPolicies(ctx); err != nil {
						return fmt.Errorf("list canned policies: %w", err)
					}
					return nil
				})
			},
			func(ctx context.Context) error {
				return s.call(ctx, "iam.policy_entities", func(ctx context.Context) (err error) {
					if res, err = s.admin.GetPolicyEntities(ctx, madmin.PolicyEntitiesQuery{}); err != nil {
						return fmt.Errorf("policy attachments: %w", err)
					}
					return nil
				})
			})
	})
	if err != nil {
		return nil, err
	}
	for name, raw := range all {
		snap.policies[name] = s.parsedPolicy(name, raw)
	}
	s.prunePolicies(all)
	for _, m := range res.PolicyMappings {
		e := snap.entities[m.Policy]
		e.Policy = m.Policy
		e.Users = append(e.Users, m.Users...)
		e.Groups = append(e.Groups, m.Groups...)
		snap.entities[m.Policy] = e
	}
	return snap, nil
}
