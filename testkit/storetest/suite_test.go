package storetest_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestSuitePassesACorrectStore runs the suite against the in-memory store:
// a store that keeps every promise passes every subtest.
func TestSuitePassesACorrectStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *storetest.Harness { return newMemStore("").harness() })
}

// defectEnv selects the defect TestSuiteWithDefect runs; it is set only in
// the child processes TestSuiteCatchesDefects starts.
const defectEnv = "STORETEST_DEFECT"

// TestSuiteWithDefect is the child half of TestSuiteCatchesDefects.
func TestSuiteWithDefect(t *testing.T) {
	defect := os.Getenv(defectEnv)
	if defect == "" {
		// Not a child: nothing to do. (Not t.Skip: CI treats any skipped
		// test as a missing dependency.)
		return
	}
	if defect == "missing-probe" {
		storetest.Run(t, func(t *testing.T) *storetest.Harness {
			h := newMemStore("").harness()
			h.CrossAccess = nil
			return h
		})
		return
	}
	storetest.Run(t, func(t *testing.T) *storetest.Harness { return newMemStore(defect).harness() })
}

// TestSuiteCatchesDefects shows the suite has teeth: for each broken
// promise, the suite run in a child process fails in the subtest that
// checks it, with a message saying what is wrong.
func TestSuiteCatchesDefects(t *testing.T) {
	if os.Getenv(defectEnv) != "" {
		t.Skip("child process")
	}
	cases := []struct {
		defect      string
		failSubtest string
		message     string
	}{
		{"adopt", "ForeignResourceNeverAdopted", "Provision over a foreign resource succeeded"},
		{"delete-foreign", "ForeignResourceNeverAdopted", "Deprovision changed the foreign resource"},
		{"no-revoke", "Deprovision", "want nothing of the tenant left"},
		{"keep-data", "DeprovisionAgain", "want nothing of the tenant left"},
		{"trust", "Verify", `check "wrong_password_refused" failed`},
		{"open", "TenantsIsolated", "reaches"},
		{"no-canary-check", "Verify", `required check "canary_denied" not reported`},
		{"plain-password", "Provision", `credential key "password" holds the password in a plain string`},
		{"unstable-resources", "ProvisionAgain", "Provision again changed the resources"},
		{"missing-probe", "TenantsIsolated", "the harness must provide Harness.CrossAccess"},
	}
	for _, tc := range cases {
		t.Run(tc.defect, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestSuiteWithDefect$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), defectEnv+"="+tc.defect)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a store with defect %q:\n%s", tc.defect, out)
			}
			if !strings.Contains(string(out), "--- FAIL: TestSuiteWithDefect/"+tc.failSubtest+" ") {
				t.Errorf("subtest %s did not fail:\n%s", tc.failSubtest, out)
			}
			if !strings.Contains(string(out), tc.message) {
				t.Errorf("output does not say %q:\n%s", tc.message, out)
			}
		})
	}
}
