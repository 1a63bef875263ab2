package events

import "fmt"

// Store names one of the four stores a tenant gets a slice of.
type Store string

// The stores, as they appear in subjects (store.cmd.<store>.<action>).
const (
	StoreMinIO    Store = "minio"
	StorePostgres Store = "postgres"
	StoreQdrant   Store = "qdrant"
	StoreRedis    Store = "redis"
)

// Stores returns every store in a fixed order. The slice is fresh on every
// call.
func Stores() []Store { return []Store{StoreMinIO, StorePostgres, StoreQdrant, StoreRedis} }

// ParseStore returns the Store named s, or an error matching ErrUnknownStore.
func ParseStore(s string) (Store, error) {
	for _, st := range Stores() {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("%w %q (want one of minio, postgres, qdrant, redis)", ErrUnknownStore, Truncate(s, 64))
}

// Valid reports whether s is one of Stores().
func (s Store) Valid() bool { _, err := ParseStore(string(s)); return err == nil }

// Action is what the orchestrator asks a store agent to do.
type Action string

// Store actions.
const (
	ActionProvision   Action = "provision"
	ActionDeprovision Action = "deprovision"
)

// Valid reports whether a is a known action.
func (a Action) Valid() bool {
	return a == ActionProvision || a == ActionDeprovision || a.Lifecycle()
}

// Outcome is what a store agent reports back.
type Outcome string

// Store outcomes, as they appear in store.evt.<store>.<outcome>.
const (
	OutcomeProvisioned       Outcome = "provisioned"
	OutcomeProvisionFailed   Outcome = "provision_failed"
	OutcomeDeprovisioned     Outcome = "deprovisioned"
	OutcomeDeprovisionFailed Outcome = "deprovision_failed"
)

// Valid reports whether o is a known store outcome.
func (o Outcome) Valid() bool {
	switch o {
	case OutcomeProvisioned, OutcomeProvisionFailed, OutcomeDeprovisioned, OutcomeDeprovisionFailed:
		return true
	}
	for _, pair := range lifecycleActions {
		if o == pair[0] || o == pair[1] {
			return true
		}
	}
	return false
}

// Action returns the action this outcome answers.
func (o Outcome) Action() Action {
	if o == OutcomeDeprovisioned || o == OutcomeDeprovisionFailed {
		return ActionDeprovision
	}
	for a, pair := range lifecycleActions {
		if o == pair[0] || o == pair[1] {
			return a
		}
	}
	return ActionProvision
}

// Succeeded reports whether o is a success outcome.
func (o Outcome) Succeeded() bool { return o.Action().SuccessOutcome() == o }

// Outcomes of a tenant saga, published by the orchestrator on tenant.<outcome>.
const (
	TenantOutcomeProvisioned     Outcome = "provisioned"
	TenantOutcomeProvisionFailed Outcome = "provision_failed"
	TenantOutcomeDeprovisioned   Outcome = "deprovisioned"
	TenantOutcomeRejected        Outcome = "rejected"
)

// Subjects published by upstream systems, operators and the orchestrator
// (DESIGN.md §3). Constructors below build the parameterised ones.
const (
	SubjectTenantRequested            = "tenant.requested"
	SubjectTenantDeprovisionRequested = "tenant.deprovision.requested"
	SubjectTenantProvisioned          = "tenant.provisioned"
	SubjectTenantProvisionFailed      = "tenant.provision_failed"
	SubjectTenantDeprovisioned        = "tenant.deprovisioned"
	SubjectTenantRejected             = "tenant.rejected"
	SubjectAllTenants                 = "tenant.>"
	SubjectAllCommands                = "store.cmd.>"
	SubjectAllStoreEvents             = "store.evt.>"
	SubjectAllAudit                   = "audit.>"
	subjectCommandPrefix              = "store.cmd."
	subjectEventPrefix                = "store.evt."
	subjectAuditPrefix                = "audit."
)

// TenantOutcomeSubject is tenant.<outcome> for a saga outcome.
func TenantOutcomeSubject(o Outcome) string { return "tenant." + string(o) }

// CommandSubject is store.cmd.<store>.<action>.
func CommandSubject(s Store, a Action) string {
	return subjectCommandPrefix + string(s) + "." + string(a)
}

// CommandFilter is store.cmd.<store>.>, every command for one store.
func CommandFilter(s Store) string { return subjectCommandPrefix + string(s) + ".>" }

// EventSubject is store.evt.<store>.<outcome>.
func EventSubject(s Store, o Outcome) string { return subjectEventPrefix + string(s) + "." + string(o) }

// AuditSubject is audit.<type>.
func AuditSubject(t AuditType) string { return subjectAuditPrefix + string(t) }
