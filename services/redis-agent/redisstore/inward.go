package redisstore

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Why this file exists: inward_isolation (Verify and Observe) needs every
// ACL user's patterns, and ACL LIST renders every user — with the long
// command rules each tenant user has — on Redis's only command thread: its
// cost grows with the number of tenants, and one per Verify made the
// per-tenant cost grow with them too.
//
// Each caller's answer must be as fresh as a read of its own, or the check
// would prove less than before. A round gives exactly that (pkg/agent's Rounds,
// as in the MinIO agent): a caller joins the next round
// that has not started yet, so the read it gets began after it asked, and
// everyone who asked while a round was running shares the next one. At most
// one round of a kind runs at a time, so under load Redis renders the ACL a
// bounded number of times whatever the number of tenants waiting.

// aclSnapshot is one read of every ACL user, shared by the inward checks of
// a round: the users' patterns, parsed, and which command
// shapes may run a serverWideCommands entry. Nothing in it depends on the
// tenant being checked but for the exemptions every caller applies itself.
type aclSnapshot struct {
	// lines is the number of ACL LIST lines (users) read.
	lines int
	// users are the users other than the admin and the trusted users, in
	// ACL LIST order.
	users []*aclEntry
	// unreadable are failures for lines this check cannot read.
	unreadable []string
	// reaching are the shape groups (users other than the admin and the
	// trusted ones) whose command rules let them run a command that reaches
	// every key without a pattern.
	reaching []shapeGroup
}

// shapeGroup is the users of one command shape and what they may run of
// serverWideCommands.
type shapeGroup struct {
	users   []string
	allowed []string
}

// aclEntry is one ACL LIST line, parsed. Entries are immutable and cached
// by the exact line text (Store.aclParsed), so an unchanged user is parsed
// once.
type aclEntry struct {
	name     string
	keys     []aclPattern
	channels []aclPattern
	// defaultOpen: this is the default user, on, with patterns.
	defaultOpen bool
	shape       string
}

// aclPattern is one key or channel pattern with a fast, exact reading of
// the common shapes: a literal (no glob syntax) optionally followed by one
// `*` — every tenant user's patterns are of that shape.
type aclPattern struct {
	text string
	// simple: text is lit, or lit followed by `*` (star), lit holding no
	// glob syntax.
	simple bool
	star   bool
	lit    string
}

func newACLPattern(p string) aclPattern {
	body, star := strings.CutSuffix(p, "*")
	if strings.ContainsAny(body, "*?[]\\") {
		return aclPattern{text: p}
	}
	return aclPattern{text: p, simple: true, star: star, lit: body}
}

// reaches is globReaches(p.text, prefix), without parsing the glob for the
// simple shapes: lit* reaches a name under prefix when one of lit and prefix
// begins with the other; a bare literal when it begins with prefix.
func (p aclPattern) reaches(prefix string) bool {
	switch {
	case !p.simple:
		return globReaches(p.text, prefix)
	case p.star:
		return strings.HasPrefix(prefix, p.lit) || strings.HasPrefix(p.lit, prefix)
	default:
		return strings.HasPrefix(p.lit, prefix)
	}
}

// parseACLLine parses one ACL LIST line; ok is false for a line this check
// cannot read.
func parseACLLine(line string) (e *aclEntry, ok bool) {
	fields := strings.Fields(line)
	if len(fields) < 2 || fields[0] != "user" {
		return nil, false
	}
	name, rules := fields[1], fields[2:]
	keys, channels := aclPatterns(rules)
	e = &aclEntry{name: name, shape: commandShape(rules)}
	for _, k := range keys {
		e.keys = append(e.keys, newACLPattern(k))
	}
	for _, c := range channels {
		e.channels = append(e.channels, newACLPattern(c))
	}
	e.defaultOpen = name == "default" && len(keys)+len(channels) > 0 && slices.Contains(rules, "on")
	return e, true
}

// readACL is the shared read behind checkInward: ACL LIST (as the admin),
// each line parsed (or taken from the cache of the previous round's lines),
// and one ACL DRYRUN per command shape (serverWideReach): whether a user may
// run a command without key or channel arguments depends on nothing else,
// so one user per shape answers for every user of it (thousands of tenant
// users share one). Only one round runs at a time, so the cache needs no
// lock; it keeps exactly the lines of the latest read.
func (s *Store) readACL(ctx context.Context, _ []struct{}) (*aclSnapshot, error) {
	lines, err := s.admin.Do(ctx, "ACL", "LIST").StringSlice()
	if err != nil {
		return nil, storeError("verify "+CheckInwardIsolation+": acl list", err)
	}
	exempt := map[string]bool{s.cfg.adminUser(): true}
	for _, u := range s.cfg.TrustedUsers {
		exempt[strings.TrimSpace(u)] = true
	}
	snap := &aclSnapshot{lines: len(lines)}
	cache := make(map[string]*aclEntry, len(lines))
	shapes := map[string][]string{}
	var order []string
	for _, line := range lines {
		e, ok := s.aclParsed[line]
		if !ok {
			if e, ok = parseACLLine(line); !ok {
				snap.unreadable = append(snap.unreadable, fmt.Sprintf("an ACL LIST line this check cannot read (%d fields)", len(strings.Fields(line))))
				continue
			}
		}
		cache[line] = e
		if exempt[e.name] {
			continue
		}
		snap.users = append(snap.users, e)
		if _, ok := shapes[e.shape]; !ok {
			order = append(order, e.shape)
		}
		shapes[e.shape] = append(shapes[e.shape], e.name)
	}
	s.aclParsed = cache
	groups := make([][]string, 0, len(order))
	for _, shape := range order {
		groups = append(groups, shapes[shape])
	}
	if snap.reaching, err = s.serverWideReach(ctx, groups); err != nil {
		return nil, err
	}
	return snap, nil
}

// checkInward fails for each ACL user outside the tenant, the admin and
// the trusted users whose key or channel patterns could reach the tenant's
// prefix or who may run a command reaching every key (serverWideCommands),
// and for a default user that is on with any pattern. It reads the ACL in
// a round shared with the other callers asking meanwhile (agent.Rounds): the
// read begins after this call. Details name users and patterns, never the
// password hashes ACL LIST also shows.
func (s *Store) checkInward(ctx context.Context, id events.TenantID) (events.Check, error) {
	check := events.Check{Name: CheckInwardIsolation}
	snap, err := s.aclRounds.Get(ctx, struct{}{}, s.readACL)
	if err != nil {
		return check, err
	}
	self := id.RedisUser()
	keyPrefix, channelPrefix := id.RedisKeyPrefix(), id.RedisChannelPrefix()
	failures := slices.Clone(snap.unreadable)
	for _, e := range snap.users {
		if e.name == self {
			continue
		}
		for _, k := range e.keys {
			if k.reaches(keyPrefix) {
				failures = append(failures, fmt.Sprintf("user %s has key pattern %q", e.name, k.text))
			}
		}
		for _, c := range e.channels {
			if c.reaches(channelPrefix) {
				failures = append(failures, fmt.Sprintf("user %s has channel pattern %q", e.name, c.text))
			}
		}
		if e.defaultOpen {
			failures = append(failures, "user default is on and has key or channel patterns")
		}
	}
	for _, g := range snap.reaching {
		others := slices.DeleteFunc(slices.Clone(g.users), func(u string) bool { return u == self })
		if len(others) > 0 {
			failures = append(failures, fmt.Sprintf("user %s may run %s", nameList(others), strings.Join(g.allowed, ", ")))
		}
	}
	if len(failures) > 0 {
		check.Detail = "reachable by others: " + strings.Join(failures, "; ")
		return check, nil
	}
	check.Passed = true
	check.Detail = fmt.Sprintf("%d ACL users checked: none but %s and the admin reaches %s", snap.lines, self, keyPrefix)
	return check, nil
}
