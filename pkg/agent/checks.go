package agent

import "github.com/tenantprov/tenantprov/pkg/events"

// Names of the isolation checks every Store's Verify must report
// (DESIGN.md §4 step 8, §5). A store may report more checks under its own
// names; these four are the verification gate.
const (
	// CheckOwnAccess passes when the tenant's credential can read and
	// write in the tenant's own slice.
	CheckOwnAccess = "own_access"
	// CheckCanaryDenied passes when the tenant's credential is refused on
	// the store's canary resource.
	CheckCanaryDenied = "canary_denied"
	// CheckWrongPasswordRefused passes when a wrong secret for the tenant's
	// user is refused (this catches `trust` authentication and the like).
	CheckWrongPasswordRefused = "wrong_password_refused"
	// CheckAdminDenied passes when administrative operations (creating or
	// dropping resources, server configuration) are refused to the tenant's
	// credential.
	CheckAdminDenied = "admin_denied"
)

// RequiredChecks returns the names of the checks every Verify must report,
// in a fixed order. The slice is fresh on every call.
func RequiredChecks() []string {
	return []string{CheckOwnAccess, CheckCanaryDenied, CheckWrongPasswordRefused, CheckAdminDenied}
}

// MissingChecks returns the required checks absent from checks, in the
// order of RequiredChecks (nil when none is missing).
func MissingChecks(checks []events.Check) []string {
	seen := make(map[string]bool, len(checks))
	for _, c := range checks {
		seen[c.Name] = true
	}
	var missing []string
	for _, name := range RequiredChecks() {
		if !seen[name] {
			missing = append(missing, name)
		}
	}
	return missing
}
