package e2e

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// planDocPath is where the original task asks for the storage-layer plan.
const planDocPath = "../docs/architecture/STORAGE_LAYER_PLAN.md"

// TestStoragePlanEntryPoint checks that the seed's document exists at its
// path with the seed's eight sections, its references to the isolation and
// audit specifications, and links that all land on a heading of the runbook
// (which TestStorageLayerDoc keeps in step with the code).
func TestStoragePlanEntryPoint(t *testing.T) {
	plan, err := os.ReadFile(planDocPath)
	if err != nil {
		t.Fatalf("the seed's document is missing: %v", err)
	}
	runbook, err := os.ReadFile(storageDocPath)
	if err != nil {
		t.Fatal(err)
	}
	text := string(plan)
	for _, h := range []string{
		"## 1. Overview", "## 2. MinIO Provisioning", "## 3. PostgreSQL Provisioning",
		"## 4. Qdrant Provisioning", "## 5. Redis Provisioning", "## 6. Credential Generation and SOPS",
		"## 7. Combined Provisioning Sequence", "## 8. Cross-References Table",
	} {
		if !strings.Contains(text, "\n"+h+"\n") {
			t.Errorf("%s lacks the seed's section %q", planDocPath, h)
		}
	}
	for _, ref := range []string{
		"TENANT_ISOLATION_STORAGE_ENCRYPTION Section 2", "TENANT_ISOLATION_STORAGE_ENCRYPTION Section 3",
		"TENANT_ISOLATION_STORAGE_ENCRYPTION Section 4", "TENANT_ISOLATION_STORAGE_ENCRYPTION Section 5",
		"TENANT_ISOLATION_STORAGE_ENCRYPTION Section 6", "TENANT_ISOLATION_STORAGE_ENCRYPTION Section 10",
		"AUDIT_ARCHITECTURE Section 1",
	} {
		if !strings.Contains(text, ref) {
			t.Errorf("%s does not cite %q", planDocPath, ref)
		}
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(runbook), "\n") {
		if strings.HasPrefix(line, "#") {
			anchors[headingAnchor(strings.TrimLeft(line, "#"))] = true
		}
	}
	links := regexp.MustCompile(`\(STORAGE_LAYER\.md#([^)]+)\)`).FindAllStringSubmatch(text, -1)
	if len(links) < 10 {
		t.Fatalf("%s links the runbook %d times; every section should", planDocPath, len(links))
	}
	for _, m := range links {
		if !anchors[m[1]] {
			t.Errorf("%s links STORAGE_LAYER.md#%s, which is no heading of the runbook", planDocPath, m[1])
		}
	}
}

// headingAnchor is the anchor GitHub gives a Markdown heading: lower case,
// spaces to hyphens, punctuation other than '-' and '_' dropped.
func headingAnchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
