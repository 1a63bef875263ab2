package redisstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// Plans on Redis (DESIGN.md §10): what an ACL user can be limited to is
// the commands it may run, so a plan denies command categories and
// commands on top of CommandRules. Redis has no per-user limit on memory,
// keys, connections, bandwidth or CPU (maxmemory and maxclients are
// server-wide): a plan that asks for MaxMemoryBytes or MaxConnections is
// refused (reason unsupported) and reported as a conflict by DryRun.

var (
	_ agent.PlanApplier = (*Store)(nil)
	_ agent.DryRunner   = (*Store)(nil)
)

// ErrUnenforceable: the plan asks for a limit Redis cannot enforce per
// user.
var ErrUnenforceable = errors.New("redis cannot enforce this limit per user")

func redisSection(p *events.Plan) *events.RedisPlan {
	if p == nil || p.Redis == nil {
		return &events.RedisPlan{}
	}
	return p.Redis
}

// planRules are the ACL rules of p, in a fixed order.
func planRules(p *events.RedisPlan) []string {
	var rules []string
	for _, c := range p.DenyCategories {
		rules = append(rules, "-"+c)
	}
	for _, c := range p.DenyCommands {
		rules = append(rules, "-"+c)
	}
	return rules
}

// unenforceable lists what of p Redis cannot enforce.
func unenforceable(p *events.RedisPlan) []events.Conflict {
	var out []events.Conflict
	if p.MaxMemoryBytes > 0 {
		out = append(out, events.Conflict{Kind: events.ConflictUnenforceable, Resource: "max_memory_bytes",
			Detail: "Redis has no per-user memory limit (maxmemory is server-wide)"})
	}
	if p.MaxConnections > 0 {
		out = append(out, events.Conflict{Kind: events.ConflictUnenforceable, Resource: "max_connections",
			Detail: "Redis has no per-user connection limit (maxclients is server-wide)"})
	}
	return out
}

// unknownNames are the categories and commands of p the server does not
// know (ACL SETUSER would refuse them).
func (s *Store) unknownNames(ctx context.Context, p *events.RedisPlan) ([]string, error) {
	var unknown []string
	if len(p.DenyCategories) > 0 {
		cats, err := s.admin.Do(ctx, "ACL", "CAT").StringSlice()
		if err != nil {
			return nil, storeError("acl cat", err)
		}
		for _, c := range p.DenyCategories {
			if !slices.Contains(cats, strings.TrimPrefix(c, "@")) {
				unknown = append(unknown, c)
			}
		}
	}
	for _, c := range p.DenyCommands {
		name, _, _ := strings.Cut(c, "|")
		info, err := s.admin.Do(ctx, "COMMAND", "INFO", name).Slice()
		if err != nil {
			return nil, storeError("command info "+name, err)
		}
		if len(info) == 0 || info[0] == nil {
			unknown = append(unknown, c)
		}
	}
	return unknown, nil
}

// ApplyPlan records the plan's rules, then replaces the user's command
// rules (and only them: passwords, key and channel patterns, on/off stay)
// with CommandRules, the scripting stance's rules and the plan's, in one
// ACL SETUSER; reads the user back and compares it with a reference user
// built from the same rules; and persists the ACL. Sessions already open
// are bound by the new rules at their next command.
func (s *Store) ApplyPlan(ctx context.Context, req agent.PlanRequest) (agent.PlanResponse, error) {
	id, err := tenantOf(req.Tenant)
	if err != nil {
		return agent.PlanResponse{}, err
	}
	want := redisSection(req.Plan)
	if cs := unenforceable(want); len(cs) > 0 {
		return agent.PlanResponse{}, agent.Permanent(events.ReasonUnsupported, fmt.Errorf("redis: plan for %s: %s: %w", id, cs[0].Resource, ErrUnenforceable))
	}
	unknown, err := s.unknownNames(ctx, want)
	if err != nil {
		return agent.PlanResponse{}, err
	}
	if len(unknown) > 0 {
		return agent.PlanResponse{}, agent.Permanent(events.ReasonUnsupported, fmt.Errorf("redis: plan for %s: this server has no ACL category or command %v", id, unknown))
	}
	user := id.RedisUser()
	rec, _, err := s.owned(ctx, id, req.Generation, "apply plan")
	if err != nil {
		return agent.PlanResponse{}, err
	}
	rec.PlanRules = planRules(want)
	rec.UpdatedAt = s.now().UTC()
	if err := s.writeRecord(ctx, user, rec); err != nil {
		return agent.PlanResponse{}, err
	}
	args := []any{"ACL", "SETUSER", user, "nocommands"}
	for _, r := range append(commandRules(s.cfg.TenantScripting), rec.PlanRules...) {
		args = append(args, r)
	}
	if err := s.admin.Do(ctx, args...).Err(); err != nil {
		return agent.PlanResponse{}, storeError("acl setuser "+user+" (plan)", err)
	}
	got, ok, err := s.getUser(ctx, user)
	if err != nil {
		return agent.PlanResponse{}, err
	}
	if !ok {
		return agent.PlanResponse{}, fmt.Errorf("redis: apply plan: %w (%s)", ErrUserMissing, user)
	}
	diffs, err := s.ruleDiffs(ctx, id, got, s.cfg.TenantScripting)
	if err != nil {
		return agent.PlanResponse{}, err
	}
	if len(diffs) > 0 {
		return agent.PlanResponse{}, fmt.Errorf("redis: ACL user %s after applying the plan: %s", user, strings.Join(diffs, "; "))
	}
	var warnings []string
	w, err := s.persist(ctx, user)
	if err != nil {
		return agent.PlanResponse{}, err
	}
	if w != "" {
		warnings = append(warnings, w)
	}
	name := ""
	if req.Plan != nil {
		name = req.Plan.Name
	}
	limits := &events.RedisPlan{DenyCategories: slices.Clone(want.DenyCategories), DenyCommands: slices.Clone(want.DenyCommands)}
	return agent.PlanResponse{Limits: &events.Plan{Name: name, Redis: limits}, Warnings: warnings}, nil
}

// DryRun reports the commands a provision with req.Plan would send (the
// password hash shown as <redacted>), the names, and every conflict: a
// foreign ACL user with the tenant's name, a limit Redis cannot enforce,
// an unknown category. It only reads (HGET, ACL GETUSER, ACL CAT).
func (s *Store) DryRun(ctx context.Context, req agent.PlanRequest) (events.DryRun, error) {
	id, err := tenantOf(req.Tenant)
	if err != nil {
		return events.DryRun{}, err
	}
	user := id.RedisUser()
	out := events.DryRun{Names: map[string]string{
		ResourceUser: user, ResourceKeyPrefix: id.RedisKeyPrefix(), ResourceChannelPrefix: id.RedisChannelPrefix(),
	}}
	_, managed, err := s.record(ctx, user)
	if err != nil {
		return events.DryRun{}, err
	}
	existed, err := s.userExists(ctx, user)
	if err != nil {
		return events.DryRun{}, err
	}
	if existed && !managed {
		out.Conflicts = append(out.Conflicts, events.Conflict{Kind: events.ConflictNameTaken, Resource: "redis ACL user " + user, Detail: "exists and was not created by tenantprov"})
	}
	cmd := func(text string) {
		out.Operations = append(out.Operations, events.Operation{Kind: "command", Text: text})
	}
	cmd("SET " + CanaryKey + " <canary text> NX")
	cmd(fmt.Sprintf("HSET %s %s <record: tenant %s, generation %d>", ManagedUsersKey, user, id, req.Generation))
	cmd(fmt.Sprintf("ACL SETUSER %s reset on #<redacted> %s resetchannels %s %s", user, keyPattern(id), channelPattern(id), strings.Join(commandRules(s.cfg.TenantScripting), " ")))
	if existed {
		cmd("CLIENT KILL USER " + user)
	}
	cmd("ACL SAVE")
	if req.Plan != nil {
		want := redisSection(req.Plan)
		out.Conflicts = append(out.Conflicts, unenforceable(want)...)
		unknown, err := s.unknownNames(ctx, want)
		if err != nil {
			return events.DryRun{}, err
		}
		for _, c := range unknown {
			out.Conflicts = append(out.Conflicts, events.Conflict{Kind: events.ConflictUnenforceable, Resource: c, Detail: "this server has no such ACL category or command"})
		}
		cmd(fmt.Sprintf("HSET %s %s <record with plan_rules %v>", ManagedUsersKey, user, planRules(want)))
		cmd(fmt.Sprintf("ACL SETUSER %s nocommands %s %s", user, strings.Join(commandRules(s.cfg.TenantScripting), " "), strings.Join(planRules(want), " ")))
		cmd("ACL SAVE")
	}
	return out, nil
}
