package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Plans and dry-run (DESIGN.md §10): named per-tenant limits from the
// orchestrator's configuration (PLANS_FILE), applied, read back and
// verified per store; and a dry run in which every agent reports what it
// would do and every conflict it sees, changing nothing.
//
// On the bus a plan travels in StoreCommand.Plan holding only the section
// of the store the command is for (Plan.ForStore). A store command with
// action apply_plan applies it to a provisioned tenant (result
// plan_applied, carrying the limits read back in StoreResult.Limits); a
// provision command with a Plan applies it after creating the resources
// and before verifying them; a command with action plan is a dry run
// (result planned, carrying StoreResult.DryRun).

// Plan store actions and outcomes.
const (
	// ActionApplyPlan applies StoreCommand.Plan to a provisioned tenant,
	// reads the limits back and verifies they hold. Idempotent.
	ActionApplyPlan Action = "apply_plan"
	// ActionPlan is a dry run of a provision with StoreCommand.Plan (which
	// may be nil): the agent reports the operations it would run, the
	// names and every conflict, and changes nothing.
	ActionPlan Action = "plan"

	OutcomePlanApplied     Outcome = "plan_applied"
	OutcomeApplyPlanFailed Outcome = "apply_plan_failed"
	OutcomePlanned         Outcome = "planned"
	OutcomePlanFailed      Outcome = "plan_failed"
)

// Plan audit types, written by the orchestrator.
const (
	AuditTenantPlanApplied AuditType = "TENANT_PLAN_APPLIED"
	AuditTenantPlanned     AuditType = "TENANT_PLANNED"
)

// DefaultPlanName is the plan a tenant gets when its request names none.
const DefaultPlanName = "default"

// maxPlans bounds a plans file.
const maxPlans = 256

var planNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ErrInvalidPlan reports a plan, or a plans file, that breaks the rules
// below; ErrUnknownPlan a plan name the configuration does not define.
var (
	ErrInvalidPlan = errors.New("invalid plan")
	ErrUnknownPlan = errors.New("unknown plan")
)

// Plan is a named set of per-store limits. A store section left out (nil)
// means "no limit of tenantprov's in that store" (the store's defaults
// apply); inside a section a zero field means "not limited by the plan".
// Applying a plan sets every limit of its section and removes the limits
// tenantprov set before that the new plan leaves unset, so changing a
// tenant from one plan to another converges on exactly the new plan.
type Plan struct {
	Name     string        `json:"name" yaml:"-"`
	MinIO    *MinIOPlan    `json:"minio,omitempty" yaml:"minio,omitempty"`
	Postgres *PostgresPlan `json:"postgres,omitempty" yaml:"postgres,omitempty"`
	Qdrant   *QdrantPlan   `json:"qdrant,omitempty" yaml:"qdrant,omitempty"`
	Redis    *RedisPlan    `json:"redis,omitempty" yaml:"redis,omitempty"`
}

// MinIOPlan is what MinIO enforces per bucket.
type MinIOPlan struct {
	// BucketQuotaBytes is the bucket's hard quota: a put that would take
	// the bucket beyond it is refused by the server.
	BucketQuotaBytes uint64 `json:"bucket_quota_bytes,omitempty" yaml:"bucket_quota_bytes,omitempty"`
}

// PostgresPlan is what PostgreSQL enforces per role: the role's connection
// limit and role-level settings (ALTER ROLE … SET) the tenant cannot
// override beyond what the server allows a non-superuser.
type PostgresPlan struct {
	// ConnectionLimit is the role's CONNECTION LIMIT (>= 1); a connection
	// beyond it is refused. 0 leaves the store's default.
	ConnectionLimit int `json:"connection_limit,omitempty" yaml:"connection_limit,omitempty"`
	// StatementTimeout cancels any statement of the role running longer.
	StatementTimeout Duration `json:"statement_timeout,omitempty" yaml:"statement_timeout,omitempty"`
	// IdleInTransactionSessionTimeout ends a session of the role idle in a
	// transaction for longer.
	IdleInTransactionSessionTimeout Duration `json:"idle_in_transaction_session_timeout,omitempty" yaml:"idle_in_transaction_session_timeout,omitempty"`
	// TempFileLimitKB caps the temporary file space one session of the
	// role may use (temp_file_limit, in kB).
	TempFileLimitKB int64 `json:"temp_file_limit_kb,omitempty" yaml:"temp_file_limit_kb,omitempty"`
}

// QdrantPlan is the tenant collection's vector parameters and the
// server's strict-mode limits on it (Qdrant ≥ 1.13, strict_mode_config).
type QdrantPlan struct {
	// VectorSize and Distance are fixed when the collection is created
	// (0/"" keep the agent's defaults); a plan that changes them for an
	// existing collection is a conflict, never a recreation.
	VectorSize int    `json:"vector_size,omitempty" yaml:"vector_size,omitempty"`
	Distance   string `json:"distance,omitempty" yaml:"distance,omitempty"`
	// MaxPointsCount refuses an upsert that would take the collection
	// beyond this many points.
	MaxPointsCount uint64 `json:"max_points_count,omitempty" yaml:"max_points_count,omitempty"`
	// MaxCollectionPayloadSizeBytes refuses an update once the
	// collection's payload storage exceeds it.
	MaxCollectionPayloadSizeBytes uint64 `json:"max_collection_payload_size_bytes,omitempty" yaml:"max_collection_payload_size_bytes,omitempty"`
	// UpsertMaxBatchsize refuses an upsert of more points in one request.
	UpsertMaxBatchsize uint64 `json:"upsert_max_batchsize,omitempty" yaml:"upsert_max_batchsize,omitempty"`
	// MaxQueryLimit refuses a search/query asking for more results.
	MaxQueryLimit uint64 `json:"max_query_limit,omitempty" yaml:"max_query_limit,omitempty"`
}

// RedisPlan is what Redis can enforce per ACL user: which commands the
// user may run. Redis has no per-user memory, key-count or connection
// limit; MaxMemoryBytes and MaxConnections exist so that a plan that asks
// for them is reported as a conflict ("unenforceable") instead of being
// silently ignored. An agent refuses to apply them.
type RedisPlan struct {
	// DenyCategories are ACL categories removed from the user ("@slow",
	// "@blocking", "@pubsub", …), on top of -@admin -@dangerous.
	DenyCategories []string `json:"deny_categories,omitempty" yaml:"deny_categories,omitempty"`
	// DenyCommands are commands removed from the user ("keys", "eval").
	DenyCommands []string `json:"deny_commands,omitempty" yaml:"deny_commands,omitempty"`
	// MaxMemoryBytes and MaxConnections cannot be enforced by Redis per
	// user (maxmemory and maxclients are server-wide).
	MaxMemoryBytes uint64 `json:"max_memory_bytes,omitempty" yaml:"max_memory_bytes,omitempty"`
	MaxConnections int    `json:"max_connections,omitempty" yaml:"max_connections,omitempty"`
}

// Qdrant distances a plan may name.
var qdrantDistances = []string{"Cosine", "Dot", "Euclid", "Manhattan"}

var redisTokenPattern = regexp.MustCompile(`^[a-z][a-z0-9_|-]{0,63}$`)

// Validate reports every problem with p at once (errors.Join); each
// matches ErrInvalidPlan.
func (p *Plan) Validate() error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w %q: %s", ErrInvalidPlan, Truncate(p.Name, 64), fmt.Sprintf(format, a...)))
	}
	if !planNamePattern.MatchString(p.Name) {
		bad("name must match %s", planNamePattern)
	}
	if m := p.MinIO; m != nil && m.BucketQuotaBytes > 0 && m.BucketQuotaBytes < 1<<20 {
		bad("minio.bucket_quota_bytes must be at least 1 MiB (a smaller quota is taken for a unit mistake), got %d", m.BucketQuotaBytes)
	}
	if pg := p.Postgres; pg != nil {
		if pg.ConnectionLimit < 0 || pg.ConnectionLimit > 10000 {
			bad("postgres.connection_limit must be between 1 and 10000 (or 0 for the default)")
		}
		for name, d := range map[string]Duration{"statement_timeout": pg.StatementTimeout, "idle_in_transaction_session_timeout": pg.IdleInTransactionSessionTimeout} {
			if d < 0 || (d > 0 && time.Duration(d) < time.Millisecond) || time.Duration(d) > 24*time.Hour {
				bad("postgres.%s must be between 1ms and 24h, got %s", name, time.Duration(d))
			}
		}
		if pg.TempFileLimitKB < 0 || pg.TempFileLimitKB > math.MaxInt32 {
			bad("postgres.temp_file_limit_kb must be between 1 and %d (or 0 for the default)", math.MaxInt32)
		}
	}
	if q := p.Qdrant; q != nil {
		if q.VectorSize < 0 || q.VectorSize > 65536 {
			bad("qdrant.vector_size must be between 1 and 65536, got %d", q.VectorSize)
		}
		if q.MaxQueryLimit > math.MaxUint32-1 {
			bad("qdrant.max_query_limit must be below %d", uint64(math.MaxUint32))
		}
		if q.MaxPointsCount == math.MaxUint64 || q.MaxCollectionPayloadSizeBytes == math.MaxUint64 || q.UpsertMaxBatchsize == math.MaxUint64 {
			bad("qdrant limits must be below %d (that value means no limit)", uint64(math.MaxUint64))
		}
		if q.Distance != "" && !slices.Contains(qdrantDistances, q.Distance) {
			bad("qdrant.distance must be one of %v, got %q", qdrantDistances, Truncate(q.Distance, 32))
		}
	}
	if r := p.Redis; r != nil {
		for _, c := range r.DenyCategories {
			if !strings.HasPrefix(c, "@") || !redisTokenPattern.MatchString(c[1:]) {
				bad("redis.deny_categories: %q is not an ACL category (\"@slow\")", Truncate(c, 64))
			}
		}
		for _, c := range r.DenyCommands {
			if !redisTokenPattern.MatchString(c) {
				bad("redis.deny_commands: %q is not a lower-case command name", Truncate(c, 64))
			}
		}
		if r.MaxConnections < 0 {
			bad("redis.max_connections is negative")
		}
	}
	return errors.Join(errs...)
}

// ForStore returns a copy of p holding only store s's section (and the
// name): what a store command carries.
func (p *Plan) ForStore(s Store) *Plan {
	if p == nil {
		return nil
	}
	out := &Plan{Name: p.Name}
	switch s {
	case StoreMinIO:
		if p.MinIO != nil {
			c := *p.MinIO
			out.MinIO = &c
		}
	case StorePostgres:
		if p.Postgres != nil {
			c := *p.Postgres
			out.Postgres = &c
		}
	case StoreQdrant:
		if p.Qdrant != nil {
			c := *p.Qdrant
			out.Qdrant = &c
		}
	case StoreRedis:
		if p.Redis != nil {
			c := *p.Redis
			c.DenyCategories = slices.Clone(c.DenyCategories)
			c.DenyCommands = slices.Clone(c.DenyCommands)
			out.Redis = &c
		}
	}
	return out
}

// Duration is a time.Duration written as a Go duration string ("30s") in
// JSON and YAML.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes d as "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "30s".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string like \"30s\": %w", err)
	}
	return d.parse(s)
}

// UnmarshalYAML reads "30s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration must be a string like \"30s\"", n.Line)
	}
	if err := d.parse(n.Value); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	return nil
}

func (d *Duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("not a duration (want e.g. \"30s\"): %q", Truncate(s, 32))
	}
	*d = Duration(v)
	return nil
}

// Plans is the orchestrator's set of named plans; it always holds
// DefaultPlanName.
type Plans map[string]*Plan

// Lookup returns the plan called name ("" is DefaultPlanName), or an
// error matching ErrUnknownPlan.
func (ps Plans) Lookup(name string) (*Plan, error) {
	if name == "" {
		name = DefaultPlanName
	}
	if p, ok := ps[name]; ok {
		return p, nil
	}
	return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownPlan, Truncate(name, 64), strings.Join(ps.Names(), ", "))
}

// Names lists the plans' names, sorted.
func (ps Plans) Names() []string {
	names := make([]string, 0, len(ps))
	for n := range ps {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// DefaultPlans is the configuration when no PLANS_FILE is given: one
// default plan that limits nothing.
func DefaultPlans() Plans { return Plans{DefaultPlanName: {Name: DefaultPlanName}} }

// plansFile is the YAML shape of PLANS_FILE:
//
//	plans:
//	  default:
//	    postgres: {connection_limit: 10, statement_timeout: 30s}
//	  small:
//	    minio: {bucket_quota_bytes: 1073741824}
type plansFile struct {
	Plans map[string]*Plan `yaml:"plans"`
}

// ParsePlans decodes a plans file: unknown fields are errors, every plan
// is validated (all problems reported at once), and a default plan is
// required.
func ParsePlans(r io.Reader) (Plans, error) {
	data, err := io.ReadAll(io.LimitReader(r, 1<<20+1))
	if err != nil {
		return nil, fmt.Errorf("read plans: %w", err)
	}
	if len(data) > 1<<20 {
		return nil, fmt.Errorf("%w: plans file larger than 1 MiB", ErrInvalidPlan)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f plansFile
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: empty plans file", ErrInvalidPlan)
		}
		return nil, fmt.Errorf("%w: %v", ErrInvalidPlan, err)
	}
	if len(f.Plans) > maxPlans {
		return nil, fmt.Errorf("%w: more than %d plans", ErrInvalidPlan, maxPlans)
	}
	out := make(Plans, len(f.Plans))
	var errs []error
	for name, p := range f.Plans {
		if p == nil {
			p = &Plan{}
		}
		p.Name = name
		if err := p.Validate(); err != nil {
			errs = append(errs, err)
		}
		out[name] = p
	}
	if _, ok := out[DefaultPlanName]; !ok {
		errs = append(errs, fmt.Errorf("%w: no %q plan", ErrInvalidPlan, DefaultPlanName))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// LoadPlans reads the plans file at path (PLANS_FILE); an empty path gives
// DefaultPlans.
func LoadPlans(path string) (Plans, error) {
	if path == "" {
		return DefaultPlans(), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("plans file: %w", err)
	}
	defer f.Close()
	ps, err := ParsePlans(f)
	if err != nil {
		return nil, fmt.Errorf("plans file %s: %w", path, err)
	}
	return ps, nil
}

// DryRun is a store's answer to a plan command (StoreResult.DryRun): what
// a provision with the plan would do, changing nothing. It never holds a
// secret: a statement that would carry one shows a placeholder.
type DryRun struct {
	// Operations are the statements and admin calls, in order.
	Operations []Operation `json:"operations"`
	// Names are the resources the tenant would get (as in
	// StoreResult.Resources).
	Names map[string]string `json:"names,omitempty"`
	// Conflicts are what would make the provision, or the plan, fail.
	Conflicts []Conflict `json:"conflicts,omitempty"`
}

// Operation is one statement or admin call a store would run.
type Operation struct {
	// Kind is "statement" (SQL), "command" (Redis), "admin_call" (an admin
	// API) or "http" (a REST call).
	Kind string `json:"kind"`
	// Text is the statement or call with every secret replaced by
	// "<redacted>".
	Text string `json:"text"`
	// Skip says why the operation would not run (the resource already
	// exists, the limit already holds); empty when it would.
	Skip string `json:"skip,omitempty"`
}

// Usage keys (StoreResult.Usage): what a tenant uses, reported next to
// the limits a plan sets.
const (
	UsageDatabaseBytes = "database_bytes" // PostgreSQL: pg_database_size of the tenant's database
	UsagePoints        = "points"         // Qdrant: points in the tenant's collection
)

// Conflict kinds.
const (
	// ConflictNameTaken: a resource tenantprov did not create holds a name
	// the tenant would get.
	ConflictNameTaken = "name_taken"
	// ConflictUnenforceable: the plan asks for a limit this server cannot
	// enforce.
	ConflictUnenforceable = "unenforceable"
	// ConflictImmutable: the plan changes something fixed at creation
	// (Qdrant vector size/distance).
	ConflictImmutable = "immutable"
)

// Conflict is one reason a provision or a plan would fail.
type Conflict struct {
	Kind     string `json:"kind"`
	Resource string `json:"resource"`
	Detail   string `json:"detail,omitempty"`
}

// validatePlanCommand checks the plan fields of a store command.
func (m *StoreCommand) validatePlanCommand() error {
	if m.Action == ActionApplyPlan && m.Plan == nil {
		return fieldErr(m, "plan", "required for apply_plan", nil)
	}
	if m.Plan == nil {
		return nil
	}
	if m.Action != ActionApplyPlan && m.Action != ActionPlan && m.Action != ActionProvision {
		return fieldErr(m, "plan", "only provision, apply_plan and plan carry a plan", nil)
	}
	if err := m.Plan.Validate(); err != nil {
		return fieldErr(m, "plan", Truncate(err.Error(), 512), err)
	}
	return nil
}

// validatePlanResult checks the plan fields of a store result.
func (m *StoreResult) validatePlanResult() error {
	switch m.Outcome {
	case OutcomePlanned:
		if m.DryRun == nil {
			return fieldErr(m, "dry_run", "required for planned", nil)
		}
	case OutcomePlanApplied:
		if m.Limits == nil {
			return fieldErr(m, "limits", "required for plan_applied", nil)
		}
	case OutcomeApplyPlanFailed, OutcomePlanFailed:
		if m.Reason == "" {
			return fieldErr(m, "reason", "required for a failure", nil)
		}
	}
	return nil
}
