package qdrantstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/qdrant/go-client/qdrant"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestLifecycleThroughTheAgent sends rotate, retire, suspend, resume and
// observe commands through the real agent runtime on a real NATS server
// into the Store on one Qdrant (storetest's RunLifecycleAgent): the runtime
// seals the token Rotate returns (Qdrant ignores the generated password).
func TestLifecycleThroughTheAgent(t *testing.T) {
	q := testkit.StartQdrant(t)
	const keptID = 4242
	storetest.RunLifecycleAgent(t, func(t *testing.T) *storetest.LifecycleAgentHarness {
		e := newEnv(t, q, nil)
		h := e.harness()
		h.Breakages = e.breakages()
		return &storetest.LifecycleAgentHarness{
			Harness: h,
			// A token record of another generation naming the collection:
			// Verify's no_other_token refuses it during a rotation too (the
			// Breakages are absorbed by Rotate to version 2, or concern
			// version 1 only, and Verify accepts any token record of the
			// tenant's generation).
			FailVerify: []storetest.Breakage{{Name: "a token record of generation 9 names the collection", Repairable: true,
				Break: func(ctx context.Context, tenant events.TenantID, _ agent.Credential) error {
					id, err := newTokenID()
					if err != nil {
						return err
					}
					return e.upsertSystem(ctx, id, map[string]any{
						keyKind: kindToken, keyTenant: tenant.String(), keyGeneration: int64(9), keyTokenID: id, keyVersion: int64(1),
						keyCollection: tenant.QdrantCollection(), keyExpiresAt: time.Now().Add(time.Hour).Unix(),
					})
				}}},
			PutData: func(ctx context.Context, tenant events.TenantID, cred agent.Credential) error {
				c, as, err := tenantCall(ctx, cred)
				if err != nil {
					return err
				}
				defer c.Close()
				_, err = c.Upsert(as, &qdrant.UpsertPoints{CollectionName: tenant.QdrantCollection(), Wait: qdrant.PtrOf(true), Points: []*qdrant.PointStruct{{
					Id: qdrant.NewIDNum(keptID), Vectors: qdrant.NewVectorsDense(probeVector(testVectorSize)), Payload: qdrant.NewValueMap(map[string]any{"kept": "written before"}),
				}}})
				return err
			},
			DataIntact: func(ctx context.Context, tenant events.TenantID, cred agent.Credential) error {
				c, as, err := tenantCall(ctx, cred)
				if err != nil {
					return err
				}
				defer c.Close()
				pts, err := c.Get(as, &qdrant.GetPoints{CollectionName: tenant.QdrantCollection(), Ids: []*qdrant.PointId{qdrant.NewIDNum(keptID)}, WithPayload: qdrant.NewWithPayload(true)})
				if err != nil {
					return err
				}
				if len(pts) != 1 || pts[0].GetPayload()["kept"].GetStringValue() != "written before" {
					return fmt.Errorf("point %d: %v", keptID, pts)
				}
				return nil
			},
		}
	})
}
