package miniostore

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// BenchmarkForeignGrantScan measures the CPU no_foreign_grants spends on
// 10,000 canned policies, each naming one bucket (as many per-tenant
// policies as a server of the legacy layout, or an operator's own, holds;
// MinIO returns them indented): the parse, cached by the document's bytes, that a round of
// the shared policy snapshot does, and the matching each Verify does.
func BenchmarkForeignGrantScan(b *testing.B) {
	all := map[string]json.RawMessage{}
	for i := range 10000 {
		t := events.MustTenantID(fmt.Sprintf("tenant%05d", i))
		all[t.MinIOLegacyPolicy()] = legacyPolicy(t)
	}
	arn := "arn:aws:s3:::" + events.MustTenantID("target").MinIOBucket()
	s := &Store{}
	b.ResetTimer()
	for range b.N {
		n := 0
		for name, raw := range all {
			if p := s.parsedPolicy(name, raw); p.err || grantsBucket(p.doc, arn, anyone) {
				n++
			}
		}
		if n != 0 {
			b.Fatal("a tenant policy grants another tenant's bucket")
		}
		s.prunePolicies(all)
	}
}

// TestGlobShortcutIsExact: globMatch (with the literal-prefix shortcut)
// agrees with the plain matcher on every pattern and string over a small
// alphabet, full and open.
func TestGlobShortcutIsExact(t *testing.T) {
	var words func(alphabet string, n int) []string
	words = func(alphabet string, n int) []string {
		if n == 0 {
			return []string{""}
		}
		out := []string{""}
		for _, w := range words(alphabet, n-1) {
			for _, c := range alphabet {
				out = append(out, w+string(c))
			}
		}
		return out
	}
	patterns := words("ab*?", 4)
	strs := words("ab", 4)
	for _, p := range patterns {
		for _, s := range strs {
			for _, open := range []bool{false, true} {
				if got, want := globMatch(p, s, open), globMatchDP(p, s, open); got != want {
					t.Fatalf("globMatch(%q, %q, open=%v) = %v, the matcher says %v", p, s, open, got, want)
				}
			}
		}
	}
}
