package events

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const plansYAML = `
plans:
  default:
    postgres: {connection_limit: 10, statement_timeout: 30s}
  small:
    minio: {bucket_quota_bytes: 10485760}
    postgres:
      connection_limit: 3
      statement_timeout: 2s
      idle_in_transaction_session_timeout: 1m
      temp_file_limit_kb: 1024
    qdrant: {vector_size: 4, distance: Dot, max_points_count: 100, upsert_max_batchsize: 10}
    redis: {deny_categories: ["@slow"], deny_commands: [keys]}
`

func TestParsePlans(t *testing.T) {
	ps, err := ParsePlans(strings.NewReader(plansYAML))
	if err != nil {
		t.Fatal(err)
	}
	small, err := ps.Lookup("small")
	if err != nil {
		t.Fatal(err)
	}
	if small.Name != "small" || small.Postgres.StatementTimeout.D() != 2*time.Second || small.Postgres.IdleInTransactionSessionTimeout.D() != time.Minute ||
		small.MinIO.BucketQuotaBytes != 10<<20 || small.Qdrant.MaxPointsCount != 100 || small.Redis.DenyCommands[0] != "keys" {
		t.Fatalf("small parsed as %+v", small)
	}
	if def, err := ps.Lookup(""); err != nil || def.Name != DefaultPlanName {
		t.Fatalf("Lookup(\"\") = %v, %v", def, err)
	}
	if _, err := ps.Lookup("gold"); !errors.Is(err, ErrUnknownPlan) {
		t.Fatalf("Lookup(gold) = %v, want ErrUnknownPlan", err)
	}
	sec := small.ForStore(StorePostgres)
	if sec.Postgres == nil || sec.MinIO != nil || sec.Qdrant != nil || sec.Redis != nil || sec.Name != "small" {
		t.Fatalf("ForStore(postgres) = %+v", sec)
	}
}

func TestParsePlansRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field":  "plans:\n  default:\n    postgres: {conn_limit: 3}\n",
		"no default":     "plans:\n  small: {}\n",
		"bad duration":   "plans:\n  default:\n    postgres: {statement_timeout: soon}\n",
		"bad distance":   "plans:\n  default:\n    qdrant: {distance: Cosinus}\n",
		"tiny quota":     "plans:\n  default:\n    minio: {bucket_quota_bytes: 10}\n",
		"bad category":   "plans:\n  default:\n    redis: {deny_categories: [slow]}\n",
		"bad name":       "plans:\n  default: {}\n  Gold Plan: {}\n",
		"empty":          "",
		"top-level typo": "plan:\n  default: {}\n",
		"negative limit": "plans:\n  default:\n    postgres: {connection_limit: -1}\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParsePlans(strings.NewReader(doc)); !errors.Is(err, ErrInvalidPlan) {
				t.Fatalf("ParsePlans = %v, want ErrInvalidPlan", err)
			}
		})
	}
}

func TestStoreCommandPlan(t *testing.T) {
	now := time.Now()
	cmd := &StoreCommand{TenantID: "acme", Generation: 1, SagaID: "s", Store: StorePostgres, Action: ActionApplyPlan, IssuedAt: now, Deadline: now.Add(time.Minute)}
	if _, err := Encode(cmd); err == nil {
		t.Fatal("apply_plan without a plan was accepted")
	}
	cmd.Plan = &Plan{Name: "small", Postgres: &PostgresPlan{StatementTimeout: Duration(time.Second)}}
	data, err := Encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"statement_timeout":"1s"`) {
		t.Fatalf("encoded %s", data)
	}
	got, err := DecodeStoreCommand(data)
	if err != nil || got.Plan.Postgres.StatementTimeout.D() != time.Second {
		t.Fatalf("decode = %+v, %v", got, err)
	}
	if !ActionPlan.Valid() || ActionPlan.SuccessOutcome() != OutcomePlanned || OutcomeApplyPlanFailed.Action() != ActionApplyPlan {
		t.Fatal("plan actions and outcomes are not wired")
	}
	res := &StoreResult{TenantID: "acme", Generation: 1, SagaID: "s", Store: StorePostgres, Outcome: OutcomePlanned, CompletedAt: now}
	if err := res.Validate(); err == nil {
		t.Fatal("planned without dry_run was accepted")
	}
	res.DryRun = &DryRun{Operations: []Operation{{Kind: "statement", Text: "CREATE ROLE x"}}}
	if err := res.Validate(); err != nil {
		t.Fatal(err)
	}
}
