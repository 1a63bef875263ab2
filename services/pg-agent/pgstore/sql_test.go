package pgstore

import (
	"errors"
	"testing"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

func TestIdentQuotesTenantNames(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"tenant_acme", `"tenant_acme"`},
		{"tenant_acme-eu", `"tenant_acme-eu"`},                          // a hyphen: must be quoted
		{`tenant_x"; DROP ROLE x; --`, `"tenant_x""; DROP ROLE x; --"`}, // quote doubled: stays one identifier
		{"tenant_\x00x", `"tenant_x"`},                                  // NUL stripped
	} {
		if got := ident(tc.name); got != tc.want {
			t.Errorf("ident(%q) = %s, want %s", tc.name, got, tc.want)
		}
	}
	id := events.MustTenantID("acme-eu")
	if got := ident(id.PostgresRole()); got != `"tenant_acme-eu"` {
		t.Errorf("role of acme-eu = %s", got)
	}
}

func TestQuoteLiteral(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "", want: "''"},
		{in: `{"managed_by":"tenantprov","tenant":"acme","generation":1}`, want: `'{"managed_by":"tenantprov","tenant":"acme","generation":1}'`},
		{in: "it's", want: "'it''s'"},
		{in: "'; DROP ROLE x; --", want: "'''; DROP ROLE x; --'"},
		{in: `back\slash`, want: `E'back\\slash'`},
		{in: `\'`, want: `E'\\'''`},
		{in: "SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5", want: "'SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5'"},
		{in: "nul\x00", bad: true},
		{in: "\xff", bad: true},
	} {
		got, err := quoteLiteral(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("quoteLiteral(%q) = %s, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("quoteLiteral(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestMarkerLiteral(t *testing.T) {
	lit, err := Marker{ManagedBy: ManagedBy, Purpose: "canary"}.literal()
	if err != nil {
		t.Fatal(err)
	}
	if want := `'{"managed_by":"tenantprov","purpose":"canary"}'`; lit != want {
		t.Errorf("literal = %s, want %s", lit, want)
	}
}

func TestHBALine(t *testing.T) {
	id := events.MustTenantID("acme-eu")
	for _, tc := range []struct{ cidr, want string }{
		{"0.0.0.0/0", "hostssl tenant_acme-eu tenant_acme-eu 0.0.0.0/0 scram-sha-256"},
		{"10.1.0.0/16", "hostssl tenant_acme-eu tenant_acme-eu 10.1.0.0/16 scram-sha-256"},
		{"samenet", "hostssl tenant_acme-eu tenant_acme-eu samenet scram-sha-256"},
	} {
		if got := HBALine(id.PostgresDatabase(), id.PostgresRole(), tc.cidr); got != tc.want {
			t.Errorf("HBALine(%s) = %q, want %q", tc.cidr, got, tc.want)
		}
	}
	if got := hbaQuote("all"); got != `"all"` {
		t.Errorf(`hbaQuote("all") = %s, want "all" quoted`, got)
	}
}

// TestInvalidTenantNeverReachesSQL: a TenantID is a string type, so a caller
// can convert anything into one; the store re-validates before deriving a
// name, and refuses permanently.
func TestInvalidTenantNeverReachesSQL(t *testing.T) {
	for _, raw := range []string{`x"; DROP ROLE tpadmin; --`, "Acme", "a", "tenantprov-x", "acme--eu", ""} {
		_, err := checkTenant(events.TenantID(raw))
		if !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("checkTenant(%q) = %v, want ErrInvalidRequest", raw, err)
		}
		if perm, reason := agent.Classify(err); !perm || reason != events.ReasonInvalid {
			t.Errorf("checkTenant(%q): permanent=%t reason=%s, want permanent invalid", raw, perm, reason)
		}
	}
}
