package main

import (
	"strings"
	"testing"
)

// TestDoctorUsage: bad arguments are usage errors, and an unreachable NATS
// is exit 5, before any comparison. The comparison itself is tested against
// the whole system in e2e (TestDoctor).
func TestDoctorUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"doctor", "--output", "xml"}, exitUsage, "want text or json"},
		{[]string{"doctor", "Bad_ID"}, exitUsage, "invalid tenant id"},
		{[]string{"doctor", "a1", "b2"}, exitUsage, "accepts at most 1 arg"},
		{[]string{"doctor", "--nats-url", "nats://127.0.0.1:1"}, exitUnavailable, "connect to NATS"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, out, errOut := tenantctl(t, c.args...)
			if code != c.code || !strings.Contains(out+errOut, c.want) {
				t.Fatalf("exit %d (want %d); output lacks %q:\n%s%s", code, c.code, c.want, out, errOut)
			}
		})
	}
}
