package auditlog

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/events"
)

func sampleEvent() *events.AuditEvent {
	return &events.AuditEvent{
		EventID:    "audit:acme:g1:postgres:STORE_PROVISIONED",
		Type:       events.AuditStoreProvisioned,
		TenantID:   "acme",
		Generation: 1,
		SagaID:     "saga-1",
		Store:      events.StorePostgres,
		Actor:      "orchestrator",
		OccurredAt: time.Date(2025, 1, 2, 3, 4, 5, 120_000_999, time.UTC),
		Source:     "pg-agent",
		Details:    json.RawMessage(`{ "z": 1.0, "a": [true, null, "x\u00e9\n"], "m": {"b": 2, "a": 1e2} }`),
	}
}

// TestCanonicalGolden pins the canonical form: any change here breaks the
// verification of every chain already written.
func TestCanonicalGolden(t *testing.T) {
	e, err := Prepare(sampleEvent())
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"actor":"orchestrator","details":{"a":[true,null,"xé\n"],"m":{"a":100,"b":2},"z":1},` +
		`"event_id":"audit:acme:g1:postgres:STORE_PROVISIONED","generation":1,"occurred_at":"2025-01-02T03:04:05.12Z",` +
		`"saga_id":"saga-1","source":"pg-agent","store":"postgres","tenant_id":"acme","type":"STORE_PROVISIONED","v":1}`
	if got := string(e.Canonical); got != want {
		t.Fatalf("canonical:\n got %s\nwant %s", got, want)
	}
	if got := string(e.Event.Details); got != `{"a":[true,null,"xé\n"],"m":{"a":100,"b":2},"z":1}` {
		t.Errorf("stored details %s", got)
	}
	if !e.Event.OccurredAt.Equal(time.Date(2025, 1, 2, 3, 4, 5, 120_000_000, time.UTC)) {
		t.Errorf("occurred_at not truncated to µs: %s", e.Event.OccurredAt)
	}
	// The hash is sha256 over prev ‖ canonical, nothing else.
	sum := sha256.Sum256(append(GenesisHash(), want...))
	if got := ChainHash(GenesisHash(), e.Canonical); hex.EncodeToString(got) != hex.EncodeToString(sum[:]) {
		t.Errorf("ChainHash %x, want %x", got, sum)
	}
}

func TestCanonicalMinimal(t *testing.T) {
	e := &events.AuditEvent{EventID: "e1", Type: events.AuditTenantRequestRejected, Actor: "a", Source: "s",
		OccurredAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	got, err := Canonical(e)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"actor":"a","details":{},"event_id":"e1","generation":0,"occurred_at":"2025-01-02T03:04:05Z",` +
		`"saga_id":"","source":"s","store":"","tenant_id":"","type":"TENANT_REQUEST_REJECTED","v":1}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	e.Details = json.RawMessage(`{}`)
	if again, _ := Canonical(e); string(again) != want {
		t.Errorf("empty details differ from absent details: %s", again)
	}
}

// TestCanonicalStableThroughJSONB: what PostgreSQL's jsonb gives back
// (reordered keys, other whitespace, normalised numbers and escapes)
// canonicalises to the same text.
func TestCanonicalStableThroughJSONB(t *testing.T) {
	pairs := [][2]string{
		{`{"b":1,"a":2}`, `{"a": 2, "b": 1}`},
		{`{"n":1.0}`, `{"n": 1.0}`},
		{`{"n":1e2}`, `{"n": 100}`},
		{`{"s":"\u00e9\u2028"}`, `{"s": "é` + "\u2028" + `"}`},
		{`{"a":1,"a":2}`, `{"a": 2}`},
		{`{"x":[1,{"d":0.5,"c":-0}]}`, `{"x": [1, {"c": -0, "d": 0.5}]}`},
	}
	for _, p := range pairs {
		a, err := CanonicalJSON([]byte(p[0]))
		if err != nil {
			t.Fatalf("%s: %v", p[0], err)
		}
		b, err := CanonicalJSON([]byte(p[1]))
		if err != nil {
			t.Fatalf("%s: %v", p[1], err)
		}
		if string(a) != string(b) {
			t.Errorf("%s → %s but %s → %s", p[0], a, p[1], b)
		}
	}
}

// TestCanonicalJSONRFC8785 checks the scheme's rules on numbers, strings
// and member order.
func TestCanonicalJSONRFC8785(t *testing.T) {
	cases := map[string]string{
		`[1e21, 1e20, 1e-7, 0.000001, -0, 123.456, 4.5e-10, 9007199254740993]`: `[1e+21,100000000000000000000,1e-7,0.000001,0,123.456,4.5e-10,9007199254740992]`,
		`"\u0001\b\t\n\f\r\"\\/"`: `"\u0001\b\t\n\f\r\"\\/"`,
		`"<>&\u2028"`:             "\"<>&\u2028\"",
		// UTF-16 order puts U+FB33 after U+1F600 (a surrogate pair, 0xD83D…);
		// UTF-8 byte order would not.
		`{"\ufb33":7,"\u20ac":1,"\ud83d\ude00":2,"\r":3,"1":4,"\u0080":5,"a":6}`: "{\"\\r\":3,\"1\":4,\"a\":6,\"\u0080\":5,\"\u20ac\":1,\"\U0001F600\":2,\"\ufb33\":7}",
	}
	for in, want := range cases {
		got, err := CanonicalJSON([]byte(in))
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if string(got) != want {
			t.Errorf("%s:\n got %s\nwant %s", in, got, want)
		}
	}
}

func TestPrepareRejectsUnstorable(t *testing.T) {
	cases := map[string]func(e *events.AuditEvent){
		"NUL in source":         func(e *events.AuditEvent) { e.Source = "a\x00b" },
		"invalid UTF-8 in saga": func(e *events.AuditEvent) { e.SagaID = "\xff" },
		"NUL in details":        func(e *events.AuditEvent) { e.Details = json.RawMessage(`{"a":"\u0000"}`) },
		"NUL in a details key":  func(e *events.AuditEvent) { e.Details = json.RawMessage(`{"\u0000":1}`) },
		"huge number":           func(e *events.AuditEvent) { e.Details = json.RawMessage(`{"a":1e400}`) },
		"details not object":    func(e *events.AuditEvent) { e.Details = json.RawMessage(`[1]`) },
		"generation too large":  func(e *events.AuditEvent) { e.Generation = 1 << 60 },
		"invalid JSON":          func(e *events.AuditEvent) { e.Details = json.RawMessage(`{"a":}`) },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			e := sampleEvent()
			mutate(e)
			if _, err := Prepare(e); !errors.Is(err, ErrUnstorable) {
				t.Fatalf("Prepare: %v, want ErrUnstorable", err)
			}
		})
	}
}

func TestMigrationsOrdered(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || SchemaVersion() != len(ms) {
		t.Fatalf("%d migrations, schema version %d", len(ms), SchemaVersion())
	}
}

func TestFilterQuery(t *testing.T) {
	since := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	sql, args, limit, err := Filter{TenantID: "acme", Type: events.AuditTenantProvisioned, Since: since, Before: 42, Limit: 10}.query()
	if err != nil {
		t.Fatal(err)
	}
	want := `SELECT ` + recordColumns + ` FROM ` + Table + ` WHERE tenant_id = $1 AND type = $2 AND occurred_at >= $3 AND seq < $4 ORDER BY seq DESC LIMIT $5`
	if sql != want || len(args) != 5 || limit != 10 || args[4] != 11 {
		t.Errorf("query:\n%s\n%v limit %d", sql, args, limit)
	}
	for _, bad := range []Filter{{Limit: -1}, {Limit: MaxPageSize + 1}, {Before: -1}, {Since: since, Until: since}} {
		if _, _, _, err := bad.query(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}
