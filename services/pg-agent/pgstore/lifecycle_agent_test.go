package pgstore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// TestLifecycleThroughTheAgent sends rotate, retire, suspend, resume and
// observe commands through the real agent runtime on a real NATS server
// into the Store on one real PostgreSQL (each subtest with its own random
// tenants), including an agent killed in the middle of a rotation.
func TestLifecycleThroughTheAgent(t *testing.T) {
	ts := newTestServer(t, nil)
	connect := func(ctx context.Context, cred agent.Credential) (*pgx.Conn, error) {
		u := cred.Secret("url")
		if u.IsZero() {
			return nil, errors.New("credential has no url")
		}
		conn, err := pgx.Connect(ctx, u.Reveal())
		if err != nil {
			return nil, scrubConnectError(err)
		}
		return conn, nil
	}
	storetest.RunLifecycleAgent(t, func(t *testing.T) *storetest.LifecycleAgentHarness {
		h := ts.harness()
		h.Breakages = ts.breakages()
		return &storetest.LifecycleAgentHarness{
			Harness: h,
			PutData: func(ctx context.Context, _ events.TenantID, cred agent.Credential) error {
				conn, err := connect(ctx, cred)
				if err != nil {
					return err
				}
				defer conn.Close(ctx)
				_, err = conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('written before')")
				return err
			},
			DataIntact: func(ctx context.Context, _ events.TenantID, cred agent.Credential) error {
				conn, err := connect(ctx, cred)
				if err != nil {
					return err
				}
				defer conn.Close(ctx)
				var v string
				if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil {
					return err
				}
				if v != "written before" {
					return fmt.Errorf("kept.v = %q", v)
				}
				return nil
			},
		}
	})
}
