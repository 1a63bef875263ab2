package events

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

const armored = "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n"

func TestDecodeTenantRequested(t *testing.T) {
	ok := []string{
		`{"tenant_id":"acme"}`,
		` {"tenant_id":"acme"} `,
		`{"tenant_id":"acme","request_id":"r-1","requested_by":"signup","labels":{"plan":"pro","team.io/x":"y"}}`,
		`{"tenant_id":"acme","unknown_field":{"nested":[1,2,3]},"another":true}`,
	}
	for _, in := range ok {
		m, err := DecodeTenantRequested([]byte(in))
		if err != nil {
			t.Errorf("DecodeTenantRequested(%s) = %v", in, err)
			continue
		}
		if m.TenantID != "acme" {
			t.Errorf("tenant = %q", m.TenantID)
		}
	}

	bad := map[string]struct {
		in    string
		field string
		is    error
	}{
		"empty":              {``, "", ErrInvalidPayload},
		"not json":           {`tenant_id=acme`, "", ErrInvalidPayload},
		"array":              {`[{"tenant_id":"acme"}]`, "", ErrInvalidPayload},
		"string":             {`"acme"`, "", ErrInvalidPayload},
		"null":               {`null`, "", ErrInvalidPayload},
		"truncated":          {`{"tenant_id":"acme"`, "", ErrInvalidPayload},
		"trailing garbage":   {`{"tenant_id":"acme"} x`, "", ErrInvalidPayload},
		"missing tenant":     {`{}`, "tenant_id", ErrInvalidTenantID},
		"wrong type":         {`{"tenant_id":42}`, "", ErrInvalidPayload},
		"invalid tenant":     {`{"tenant_id":"Acme"}`, "tenant_id", ErrInvalidTenantID},
		"injection":          {`{"tenant_id":"acme'; DROP TABLE x;--"}`, "tenant_id", ErrInvalidTenantID},
		"reserved":           {`{"tenant_id":"tenantprov-canary"}`, "tenant_id", ErrInvalidTenantID},
		"long request id":    {`{"tenant_id":"acme","request_id":"` + strings.Repeat("r", 200) + `"}`, "request_id", ErrInvalidPayload},
		"control chars":      {`{"tenant_id":"acme","requested_by":"a\u0007b"}`, "requested_by", ErrInvalidPayload},
		"bad label key":      {`{"tenant_id":"acme","labels":{"bad key":"v"}}`, "labels", ErrInvalidPayload},
		"label value length": {`{"tenant_id":"acme","labels":{"k":"` + strings.Repeat("v", 300) + `"}}`, "labels.k", ErrInvalidPayload},
		"oversized":          {`{"tenant_id":"acme","pad":"` + strings.Repeat("x", MaxPayloadBytes) + `"}`, "", ErrPayloadTooLarge},
	}
	for name, c := range bad {
		t.Run(name, func(t *testing.T) {
			m, err := DecodeTenantRequested([]byte(c.in))
			if err == nil {
				t.Fatalf("decoded %+v, want error", m)
			}
			if !errors.Is(err, ErrInvalidPayload) || !errors.Is(err, c.is) {
				t.Fatalf("error %v, want ErrInvalidPayload and %v", err, c.is)
			}
			var pe *PayloadError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not a *PayloadError", err)
			}
			if pe.Field != c.field {
				t.Fatalf("field = %q, want %q (%v)", pe.Field, c.field, err)
			}
			if len(err.Error()) > 600 {
				t.Fatalf("error message too long (%d bytes)", len(err.Error()))
			}
		})
	}
}

func TestLabelsLimit(t *testing.T) {
	labels := map[string]string{}
	for i := 0; i <= maxLabels; i++ {
		labels["k"+strings.Repeat("x", i%10)+string(rune('a'+i%26))+string(rune('a'+i/26))] = "v"
	}
	m := &TenantRequested{TenantID: "acme", Labels: labels}
	if err := m.Validate(); !errors.Is(err, ErrInvalidPayload) {
		t.Fatalf("%d labels accepted: %v", len(labels), err)
	}
}

func TestDecodeDeprovisionRequested(t *testing.T) {
	if _, err := DecodeDeprovisionRequested([]byte(`{"tenant_id":"acme","x":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeDeprovisionRequested([]byte(`{"tenant_id":"ac--me"}`)); !errors.Is(err, ErrInvalidTenantID) {
		t.Fatalf("err = %v", err)
	}
}

func validCommand() *StoreCommand {
	now := time.Now().UTC()
	return &StoreCommand{TenantID: "acme", Generation: 1, SagaID: "saga-1", Store: StoreMinIO, Action: ActionProvision, IssuedAt: now, Deadline: now.Add(time.Minute)}
}

func TestStoreCommandValidation(t *testing.T) {
	if _, err := roundTrip(validCommand(), DecodeStoreCommand); err != nil {
		t.Fatal(err)
	}
	mutations := map[string]func(c *StoreCommand){
		"bad tenant":     func(c *StoreCommand) { c.TenantID = "A" },
		"generation 0":   func(c *StoreCommand) { c.Generation = 0 },
		"no saga":        func(c *StoreCommand) { c.SagaID = "" },
		"unknown store":  func(c *StoreCommand) { c.Store = "mysql" },
		"unknown action": func(c *StoreCommand) { c.Action = "drop" },
		"no deadline":    func(c *StoreCommand) { c.Deadline = time.Time{} },
		"no issued at":   func(c *StoreCommand) { c.IssuedAt = time.Time{} },
		"negative try":   func(c *StoreCommand) { c.Attempt = -1 },
	}
	for name, mutate := range mutations {
		t.Run(name, func(t *testing.T) {
			c := validCommand()
			mutate(c)
			if _, err := Encode(c); !errors.Is(err, ErrInvalidPayload) {
				t.Fatalf("Encode accepted an invalid command: %v", err)
			}
			raw, _ := json.Marshal(c)
			if _, err := DecodeStoreCommand(raw); !errors.Is(err, ErrInvalidPayload) {
				t.Fatalf("Decode accepted an invalid command: %v", err)
			}
		})
	}
	c := validCommand()
	c.Store = "mysql"
	if _, err := Encode(c); !errors.Is(err, ErrUnknownStore) {
		t.Fatalf("unknown store error = %v, want ErrUnknownStore", err)
	}
}

func validResult() *StoreResult {
	return &StoreResult{
		TenantID: "acme", Generation: 1, SagaID: "saga-1", Store: StoreRedis, Outcome: OutcomeProvisioned,
		Resources: map[string]string{"user": "tenant_acme"}, Credential: armored, CredentialID: "c1",
		Verification: &Verification{Passed: true, Checks: []Check{{Name: "own_access", Passed: true}}},
		CompletedAt:  time.Now().UTC(),
	}
}

func TestStoreResultValidation(t *testing.T) {
	if _, err := roundTrip(validResult(), DecodeStoreResult); err != nil {
		t.Fatal(err)
	}
	mutations := map[string]func(r *StoreResult){
		"plaintext credential": func(r *StoreResult) { r.Credential = "hunter2" },
		"no credential":        func(r *StoreResult) { r.Credential = "" },
		"no verification":      func(r *StoreResult) { r.Verification = nil },
		"no credential id":     func(r *StoreResult) { r.CredentialID = "" },
		"failure sans reason":  func(r *StoreResult) { r.Outcome = OutcomeProvisionFailed; r.Credential = "" },
		"unknown outcome":      func(r *StoreResult) { r.Outcome = "done" },
		"no completed at":      func(r *StoreResult) { r.CompletedAt = time.Time{} },
	}
	for name, mutate := range mutations {
		t.Run(name, func(t *testing.T) {
			r := validResult()
			mutate(r)
			if _, err := Encode(r); !errors.Is(err, ErrInvalidPayload) {
				t.Fatalf("Encode accepted: %v", err)
			}
		})
	}
}

func TestTenantOutcomeValidation(t *testing.T) {
	now := time.Now().UTC()
	good := []*TenantOutcomeEvent{
		{Outcome: TenantOutcomeProvisioned, TenantID: "acme", Generation: 1, OccurredAt: now},
		{Outcome: TenantOutcomeProvisionFailed, TenantID: "acme", Generation: 1, Reason: "minio: store_error", OccurredAt: now},
		{Outcome: TenantOutcomeRejected, TenantID: "Not Valid", Reason: "invalid tenant id", OccurredAt: now},
		{Outcome: TenantOutcomeRejected, Reason: "malformed JSON", OccurredAt: now},
	}
	for _, m := range good {
		if _, err := roundTrip(m, DecodeTenantOutcomeEvent); err != nil {
			t.Errorf("%+v: %v", m, err)
		}
	}
	bad := []*TenantOutcomeEvent{
		{Outcome: TenantOutcomeRejected, OccurredAt: now},
		{Outcome: TenantOutcomeProvisioned, TenantID: "acme", OccurredAt: now},
		{Outcome: "weird", TenantID: "acme", Generation: 1, OccurredAt: now},
		{Outcome: TenantOutcomeProvisioned, TenantID: "acme", Generation: 1},
	}
	for _, m := range bad {
		if _, err := Encode(m); !errors.Is(err, ErrInvalidPayload) {
			t.Errorf("%+v accepted: %v", m, err)
		}
	}
}

func TestAuditEventValidation(t *testing.T) {
	now := time.Now().UTC()
	ev := &AuditEvent{
		EventID: AuditEventID(AuditTenantProvisioned, "acme", 1, "", ""), Type: AuditTenantProvisioned,
		TenantID: "acme", Generation: 1, Actor: "orchestrator", Source: "orchestrator", OccurredAt: now,
		Details: json.RawMessage(`{"stores":4}`),
	}
	if _, err := roundTrip(ev, DecodeAuditEvent); err != nil {
		t.Fatal(err)
	}
	rejected := *ev
	rejected.Type, rejected.TenantID = AuditTenantRequestRejected, "NOT VALID"
	if err := rejected.Validate(); err != nil {
		t.Fatalf("rejection audit with an invalid tenant id must be representable: %v", err)
	}
	mutations := map[string]func(e *AuditEvent){
		"no id":         func(e *AuditEvent) { e.EventID = "" },
		"lowercase":     func(e *AuditEvent) { e.Type = "tenant_provisioned" },
		"not utc":       func(e *AuditEvent) { e.OccurredAt = now.In(time.FixedZone("x", 3600)) },
		"details array": func(e *AuditEvent) { e.Details = json.RawMessage(`[1]`) },
		"no actor":      func(e *AuditEvent) { e.Actor = "" },
		"no source":     func(e *AuditEvent) { e.Source = "" },
		"bad tenant":    func(e *AuditEvent) { e.TenantID = "X" },
	}
	for name, mutate := range mutations {
		t.Run(name, func(t *testing.T) {
			e := *ev
			mutate(&e)
			if err := e.Validate(); !errors.Is(err, ErrInvalidPayload) {
				t.Fatalf("accepted: %v", err)
			}
		})
	}
}

func TestTenantRecordRoundTrip(t *testing.T) {
	now := time.Now().UTC()
	rec := &TenantRecord{
		TenantID: "acme", State: TenantProvisioning, Generation: 2, SagaID: "s",
		Stores:    map[Store]*StoreStatus{StoreMinIO: {State: StorePending}},
		CreatedAt: now, UpdatedAt: now, Deadline: &now,
	}
	got, err := roundTrip(rec, DecodeTenantRecord)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stores[StoreMinIO].State != StorePending || !got.Deadline.Equal(now) {
		t.Fatalf("round trip lost data: %+v", got)
	}
	rec.Stores["mysql"] = &StoreStatus{State: StorePending}
	if err := rec.Validate(); !errors.Is(err, ErrUnknownStore) {
		t.Fatalf("unknown store in record: %v", err)
	}
	if !TenantRollingBack.InFlight() || TenantActive.InFlight() || !TenantFailed.Terminal() {
		t.Fatal("state predicates broken")
	}
}

func roundTrip[T any, P interface {
	*T
	Payload
}](m P, dec func([]byte) (*T, error)) (*T, error) {
	data, err := Encode(m)
	if err != nil {
		return nil, err
	}
	return dec(data)
}
