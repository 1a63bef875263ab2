package events

import (
	"reflect"
	"testing"
)

// fuzzDecoder checks the properties every decoder must keep for any input:
// no panic; an accepted payload re-encodes, and decodes again to the same
// value.
func fuzzDecoder[T any, P interface {
	*T
	Payload
}](f *testing.F, dec func([]byte) (*T, error), seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := dec(data)
		if err != nil {
			if v != nil {
				t.Fatalf("decoder returned a value with error %v", err)
			}
			return
		}
		out, err := Encode(P(v))
		if err != nil {
			t.Fatalf("accepted payload does not re-encode: %v", err)
		}
		v2, err := dec(out)
		if err != nil {
			t.Fatalf("re-encoded payload rejected: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("round trip changed the value:\n%#v\n%#v", v, v2)
		}
	})
}

var commonSeeds = []string{
	``, `{}`, `null`, `[]`, `"x"`, `{"tenant_id":"acme"}`, `{"tenant_id":"Acme"}`, `{"tenant_id":"ac--me"}`,
	`{"tenant_id":"acme"`, `{"tenant_id":"\u0430cme"}`, `{"tenant_id":"acme","x":{"y":[1,2]}}`,
}

func FuzzDecodeTenantRequested(f *testing.F) {
	fuzzDecoder(f, DecodeTenantRequested, append(commonSeeds,
		`{"tenant_id":"acme","request_id":"r1","requested_by":"me","labels":{"a":"b"}}`,
		`{"tenant_id":"acme","labels":{"bad key":"v"}}`)...)
}

func FuzzDecodeDeprovisionRequested(f *testing.F) {
	fuzzDecoder(f, DecodeDeprovisionRequested, append(commonSeeds, `{"tenant_id":"acme","request_id":"r"}`)...)
}

func FuzzDecodeTenantOutcomeEvent(f *testing.F) {
	fuzzDecoder(f, DecodeTenantOutcomeEvent, append(commonSeeds,
		`{"outcome":"provisioned","tenant_id":"acme","generation":1,"occurred_at":"2026-01-01T00:00:00Z"}`,
		`{"outcome":"rejected","tenant_id":"X","reason":"bad","occurred_at":"2026-01-01T00:00:00Z"}`)...)
}

func FuzzDecodeStoreCommand(f *testing.F) {
	fuzzDecoder(f, DecodeStoreCommand, append(commonSeeds,
		`{"tenant_id":"acme","generation":1,"saga_id":"s","store":"minio","action":"provision","issued_at":"2026-01-01T00:00:00Z","deadline":"2026-01-01T00:01:00Z"}`,
		`{"tenant_id":"acme","generation":1,"saga_id":"s","store":"mysql","action":"provision","issued_at":"2026-01-01T00:00:00Z","deadline":"2026-01-01T00:01:00Z"}`)...)
}

func FuzzDecodeStoreResult(f *testing.F) {
	fuzzDecoder(f, DecodeStoreResult, append(commonSeeds,
		`{"tenant_id":"acme","generation":1,"saga_id":"s","store":"redis","outcome":"provision_failed","reason":"conflict","completed_at":"2026-01-01T00:00:00Z"}`,
		`{"tenant_id":"acme","generation":1,"saga_id":"s","store":"redis","outcome":"provisioned","credential":"-----BEGIN AGE ENCRYPTED FILE-----\nx\n","credential_id":"c1","verification":{"passed":true,"checks":[]},"completed_at":"2026-01-01T00:00:00Z"}`)...)
}

func FuzzDecodeAuditEvent(f *testing.F) {
	fuzzDecoder(f, DecodeAuditEvent, append(commonSeeds,
		`{"event_id":"audit:acme:g1:TENANT_PROVISIONED","type":"TENANT_PROVISIONED","tenant_id":"acme","generation":1,"actor":"orchestrator","source":"orchestrator","occurred_at":"2026-01-01T00:00:00Z","details":{"a":1}}`)...)
}

func FuzzDecodeTenantRecord(f *testing.F) {
	fuzzDecoder(f, DecodeTenantRecord, append(commonSeeds,
		`{"tenant_id":"acme","state":"active","generation":1,"saga_id":"s","stores":{"minio":{"state":"provisioned"}},"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}`)...)
}
