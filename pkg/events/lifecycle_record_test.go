package events

import "testing"

func TestDecodeDeprovisionRequestedRetain(t *testing.T) {
	m, err := DecodeDeprovisionRequested([]byte(`{"tenant_id":"acme","retain":"168h"}`))
	if err != nil || m.Retain != "168h" {
		t.Fatalf("retain 168h: %+v, %v", m, err)
	}
	if m, err := DecodeDeprovisionRequested([]byte(`{"tenant_id":"acme"}`)); err != nil || m.Retain != "" {
		t.Fatalf("no retain: %+v, %v", m, err)
	}
	for _, bad := range []string{`"soon"`, `"-1h"`, `"` + string(make([]byte, 40)) + `"`, `3600`} {
		if _, err := DecodeDeprovisionRequested([]byte(`{"tenant_id":"acme","retain":` + bad + `}`)); err == nil {
			t.Errorf("retain %s accepted", bad)
		}
	}
}
