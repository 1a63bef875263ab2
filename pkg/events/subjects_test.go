package events

import (
	"testing"
	"time"
)

func TestSubjects(t *testing.T) {
	cases := map[string]string{
		CommandSubject(StoreMinIO, ActionProvision):        "store.cmd.minio.provision",
		CommandSubject(StorePostgres, ActionDeprovision):   "store.cmd.postgres.deprovision",
		CommandFilter(StoreRedis):                          "store.cmd.redis.>",
		EventSubject(StoreQdrant, OutcomeProvisionFailed):  "store.evt.qdrant.provision_failed",
		EventSubject(StoreRedis, OutcomeDeprovisioned):     "store.evt.redis.deprovisioned",
		AuditSubject(AuditTenantProvisioned):               "audit.TENANT_PROVISIONED",
		TenantOutcomeSubject(TenantOutcomeProvisioned):     SubjectTenantProvisioned,
		TenantOutcomeSubject(TenantOutcomeProvisionFailed): SubjectTenantProvisionFailed,
		TenantOutcomeSubject(TenantOutcomeDeprovisioned):   SubjectTenantDeprovisioned,
		TenantOutcomeSubject(TenantOutcomeRejected):        SubjectTenantRejected,
		DeadLetterSubject("audit"):                         "deadletter.audit",
	}
	for got, want := range cases {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	if SubjectTenantRequested != "tenant.requested" || SubjectTenantDeprovisionRequested != "tenant.deprovision.requested" {
		t.Error("request subjects changed: they are public contract")
	}
}

func TestOutcomeAction(t *testing.T) {
	if OutcomeProvisionFailed.Action() != ActionProvision || OutcomeDeprovisioned.Action() != ActionDeprovision {
		t.Fatal("outcome to action mapping broken")
	}
	if OutcomeProvisionFailed.Succeeded() || !OutcomeDeprovisioned.Succeeded() {
		t.Fatal("Succeeded broken")
	}
}

func TestMsgIDDeterministic(t *testing.T) {
	c := &StoreCommand{TenantID: "acme", Generation: 3, SagaID: "s", Store: StoreMinIO, Action: ActionProvision, IssuedAt: time.Now(), Deadline: time.Now()}
	if got, want := CommandMsgID(c), "cmd:acme:g3:minio:provision"; got != want {
		t.Fatalf("CommandMsgID = %q, want %q", got, want)
	}
	c2 := *c
	c2.IssuedAt = c.IssuedAt.Add(time.Hour) // timestamps are not part of the identity
	if CommandMsgID(c) != CommandMsgID(&c2) {
		t.Fatal("msg id depends on a timestamp")
	}
	c2.Attempt = 2
	if got, want := CommandMsgID(&c2), "cmd:acme:g3:minio:provision:a2"; got != want {
		t.Fatalf("retry msg id = %q, want %q", got, want)
	}
	r := &StoreResult{TenantID: "acme", Generation: 3, Store: StoreRedis, Outcome: OutcomeDeprovisioned}
	if got, want := ResultMsgID(r), "evt:acme:g3:redis:deprovisioned"; got != want {
		t.Fatalf("ResultMsgID = %q, want %q", got, want)
	}
	if got, want := AuditEventID(AuditTenantProvisioned, "acme", 3, "", ""), "audit:acme:g3:TENANT_PROVISIONED"; got != want {
		t.Fatalf("AuditEventID = %q, want %q", got, want)
	}
	if AuditEventID(AuditStoreProvisioned, "acme", 3, StoreMinIO, "") == AuditEventID(AuditStoreProvisioned, "acme", 3, StoreRedis, "") {
		t.Fatal("audit ids of two stores collide")
	}
}
