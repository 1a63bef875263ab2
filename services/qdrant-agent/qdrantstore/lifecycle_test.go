package qdrantstore

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/qdrant/go-client/qdrant"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// tokenIDIn returns the token_id of cred's value_exists claim.
func tokenIDIn(cred agent.Credential) (string, error) {
	parts := strings.Split(cred.Secret(CredAPIKey).Reveal(), ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("api_key is not a JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var c struct {
		ValueExists struct {
			Matches []struct {
				Value string `json:"value"`
			} `json:"matches"`
		} `json:"value_exists"`
	}
	if err := json.Unmarshal(raw, &c); err != nil || len(c.ValueExists.Matches) != 1 {
		return "", fmt.Errorf("no single value_exists match in the token")
	}
	return c.ValueExists.Matches[0].Value, nil
}

// upsertSystem writes one point into the system collection with the admin
// key, as an operator could.
func (e *env) upsertSystem(ctx context.Context, id string, payload map[string]any) error {
	_, err := e.admin.Upsert(e.adminCtx(ctx), &qdrant.UpsertPoints{
		CollectionName: events.QdrantSystemCollection,
		Wait:           qdrant.PtrOf(true),
		Points:         []*qdrant.PointStruct{{Id: qdrant.NewIDUUID(id), Vectors: qdrant.NewVectors(1), Payload: qdrant.NewValueMap(payload)}},
	})
	return err
}

func (e *env) deleteSystem(ctx context.Context, id *qdrant.PointId) error {
	_, err := e.admin.Delete(e.adminCtx(ctx), &qdrant.DeletePoints{
		CollectionName: events.QdrantSystemCollection,
		Wait:           qdrant.PtrOf(true),
		Points:         qdrant.NewPointsSelector(id),
	})
	return err
}

// breakages are the drifts RunLifecycle's Observe subtest makes behind the
// Store's back, with the admin key.
func (e *env) breakages() []storetest.Breakage {
	return []storetest.Breakage{
		{Name: "inward: a second token record names the collection", Repairable: true,
			Break: func(ctx context.Context, tenant events.TenantID, _ agent.Credential) error {
				id, err := newTokenID()
				if err != nil {
					return err
				}
				return e.upsertSystem(ctx, id, map[string]any{
					keyKind: kindToken, keyTenant: tenant.String(), keyGeneration: int64(1), keyTokenID: id, keyVersion: int64(2),
					keyCollection: tenant.QdrantCollection(), keyExpiresAt: time.Now().Add(time.Hour).Unix(),
				})
			}},
		{Name: "outward: a point copies the credential's token_id (it would outlive its revocation)", Repairable: true,
			Break: func(ctx context.Context, _ events.TenantID, cred agent.Credential) error {
				tid, err := tokenIDIn(cred)
				if err != nil {
					return err
				}
				id, err := newTokenID()
				if err != nil {
					return err
				}
				return e.upsertSystem(ctx, id, map[string]any{"kind": "backup", keyTokenID: tid})
			}},
		{Name: "revocation point deleted (the credential is refused)", Repairable: true,
			Break: func(ctx context.Context, _ events.TenantID, cred agent.Credential) error {
				tid, err := tokenIDIn(cred)
				if err != nil {
					return err
				}
				return e.deleteSystem(ctx, qdrant.NewIDUUID(tid))
			}},
		{Name: "marker of origin deleted", Repairable: true,
			Break: func(ctx context.Context, tenant events.TenantID, _ agent.Credential) error {
				return e.deleteSystem(ctx, markerID(tenant))
			}},
		{Name: "collection deleted (data lost)", Repairable: false,
			Break: func(ctx context.Context, tenant events.TenantID, _ agent.Credential) error {
				_, err := e.admin.GetCollectionsClient().Delete(e.adminCtx(ctx), &qdrant.DeleteCollection{CollectionName: tenant.QdrantCollection()})
				return err
			}},
		{Name: "outward: collection replaced by a foreign one the token now reaches (data lost)", Repairable: false,
			Break: func(ctx context.Context, tenant events.TenantID, _ agent.Credential) error {
				if _, err := e.admin.GetCollectionsClient().Delete(e.adminCtx(ctx), &qdrant.DeleteCollection{CollectionName: tenant.QdrantCollection()}); err != nil {
					return err
				}
				// Another system's collection, with its own metadata (without
				// any, on a server that keeps metadata, our marker would make
				// it look like ours: see inspect).
				return e.admin.CreateCollection(e.adminCtx(ctx), &qdrant.CreateCollection{
					CollectionName: tenant.QdrantCollection(),
					VectorsConfig:  qdrant.NewVectorsConfig(&qdrant.VectorParams{Size: testVectorSize, Distance: qdrant.Distance_Cosine}),
					Metadata:       qdrant.NewValueMap(map[string]any{"owner": "someone-else"}),
				})
			}},
	}
}

// TestLifecycleConformance runs the shared lifecycle suite (rotation,
// suspension, drift) against one Qdrant.
func TestLifecycleConformance(t *testing.T) {
	q := testkit.StartQdrant(t)
	t.Run("qdrant="+q.Kind, func(t *testing.T) {
		storetest.RunLifecycle(t, func(t *testing.T) *storetest.Harness {
			e := newEnv(t, q, nil)
			h := e.harness()
			h.Breakages = e.breakages()
			return h
		})
	})
}
