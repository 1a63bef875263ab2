package miniostore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestLifecycleThroughTheAgent sends rotate, retire, suspend, resume and
// observe commands through the real agent runtime on a real NATS server
// into the Store on one MinIO (storetest's RunLifecycleAgent).
func TestLifecycleThroughTheAgent(t *testing.T) {
	m := testkit.StartMinIO(t)
	const key = "kept/object.txt"
	body := []byte("written before")
	storetest.RunLifecycleAgent(t, func(t *testing.T) *storetest.LifecycleAgentHarness {
		e := envOn(t, m, Config{})
		h := e.harness()
		h.Breakages = e.breakages()
		return &storetest.LifecycleAgentHarness{
			Harness: h,
			PutData: func(ctx context.Context, tenant events.TenantID, cred agent.Credential) error {
				c, err := tenantClient(cred)
				if err != nil {
					return err
				}
				_, err = c.PutObject(ctx, tenant.MinIOBucket(), key, bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{})
				return err
			},
			DataIntact: func(ctx context.Context, tenant events.TenantID, cred agent.Credential) error {
				c, err := tenantClient(cred)
				if err != nil {
					return err
				}
				o, err := c.GetObject(ctx, tenant.MinIOBucket(), key, minio.GetObjectOptions{})
				if err != nil {
					return err
				}
				defer o.Close()
				got, err := io.ReadAll(o)
				if err != nil {
					return err
				}
				if !bytes.Equal(got, body) {
					return fmt.Errorf("%s = %q", key, got)
				}
				return nil
			},
		}
	})
}
