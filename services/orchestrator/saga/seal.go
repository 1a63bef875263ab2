package saga

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/services/orchestrator/sealer"
)

// seal builds the tenant's secrets file from the provisioned results (read
// back from STORE_EVENTS at the sequences the record names), encrypts it with
// SOPS, stores it as tenant-secrets/<id>.sops.yaml, and — only if every store
// reported its isolation checks passed (the verification gate, DESIGN.md §4
// step 8) — marks the tenant active. Plaintext credentials exist only in
// this function's memory.
func (s *Saga) seal(ctx context.Context, rec *events.TenantRecord) (*events.TenantRecord, error) {
	for _, store := range events.Stores() {
		if st := rec.Stores[store]; !st.Verified {
			// Unreachable in practice (an unverified result starts a
			// rollback), but the gate is checked here, where it matters.
			return rec, fmt.Errorf("%s: not verified; refusing to activate", store)
		}
	}
	f := &sealer.File{TenantID: rec.TenantID, Generation: rec.Generation}
	for _, store := range events.Stores() {
		st := rec.Stores[store]
		plain, err := s.openCredential(ctx, st, store)
		if err != nil {
			return rec, err
		}
		err = f.SetSection(store, plain)
		clear(plain)
		if err != nil {
			return rec, err
		}
	}
	data, _, err := s.sealer.Seal(f)
	*f = sealer.File{}
	if err != nil {
		return rec, err
	}
	id := events.TenantID(rec.TenantID)
	if _, err := s.secrets.PutBytes(ctx, id.SecretsObject(), data); err != nil {
		return rec, fmt.Errorf("store sealed secrets: %w", err)
	}
	// Record the digest of what the object store holds now, not of what we
	// put: two replicas sealing at once each put a valid encryption of the
	// same file, and the last put is what the record must describe. Every
	// sealer runs this after its put, so the last one wins the record too.
	credIDs := credentialIDs(rec)
	next, _, err := s.reg.Update(ctx, rec.TenantID, func(cur *events.TenantRecord) (*events.TenantRecord, error) {
		if cur == nil || cur.Generation != rec.Generation || credentialIDs(cur) != credIDs {
			return nil, errNoChange // moved on (or a newer credential arrived: it re-seals)
		}
		if cur.State != events.TenantProvisioning && cur.State != events.TenantActive {
			return nil, errNoChange
		}
		info, err := s.secrets.GetInfo(ctx, id.SecretsObject())
		if err != nil {
			return nil, fmt.Errorf("sealed secrets info: %w", err)
		}
		sum, err := digestHex(info.Digest)
		if err != nil {
			return nil, err
		}
		ref := &events.SecretsRef{Bucket: events.ObjectStoreSecrets, Object: id.SecretsObject(), SHA256: sum}
		if cur.State == events.TenantActive && cur.Secrets != nil && *cur.Secrets == *ref {
			return nil, errNoChange
		}
		cur.Secrets = ref
		if cur.State == events.TenantProvisioning {
			cur.State = events.TenantActive
			cur.Deadline = nil
			cur.Reason = ""
		}
		return cur, nil
	})
	if err != nil {
		return rec, err
	}
	if next.State == events.TenantActive && rec.State == events.TenantProvisioning {
		s.metrics.duration.WithLabelValues("provision").Observe(s.now().Sub(*rec.Stores[events.StoreMinIO].StartedAt).Seconds())
		s.log.Info("secrets sealed", zap.String("tenant", rec.TenantID), zap.Uint64("generation", rec.Generation), zap.String("sha256", next.Secrets.SHA256))
		if err := s.audit(ctx, next, events.AuditSecretsSealed, "", "", map[string]any{"object": next.Secrets.Object, "sha256": next.Secrets.SHA256}); err != nil {
			return next, err
		}
	}
	return next, nil
}

// openCredential reads a store's provisioned result back from STORE_EVENTS
// and decrypts its credential with the control-plane identity.
func (s *Saga) openCredential(ctx context.Context, st *events.StoreStatus, store events.Store) ([]byte, error) {
	if st.ResultSeq == 0 {
		return nil, fmt.Errorf("%s: no provisioned result recorded", store)
	}
	raw, err := s.results.GetMsg(ctx, st.ResultSeq)
	if err != nil {
		return nil, fmt.Errorf("%s: read result %d: %w", store, st.ResultSeq, err)
	}
	res, err := events.DecodeStoreResult(raw.Data)
	if err != nil {
		return nil, fmt.Errorf("%s: result %d: %w", store, st.ResultSeq, err)
	}
	if res.CredentialID != st.CredentialID || res.Store != store {
		return nil, fmt.Errorf("%s: result %d is not credential %s", store, st.ResultSeq, st.CredentialID)
	}
	plain, err := secret.Open(res.Credential, s.identity)
	if err != nil {
		return nil, fmt.Errorf("%s: open credential: %w", store, err)
	}
	return plain, nil
}

func credentialIDs(rec *events.TenantRecord) string {
	var b strings.Builder
	for _, store := range events.Stores() {
		if st := rec.Stores[store]; st != nil {
			b.WriteString(st.CredentialID)
		}
		b.WriteByte('/')
	}
	return b.String()
}

// digestHex turns the object store's "SHA-256=<base64url>" digest into hex.
func digestHex(d string) (string, error) {
	b64, ok := strings.CutPrefix(d, "SHA-256=")
	if !ok {
		return "", fmt.Errorf("unexpected object digest %q", d)
	}
	raw, err := base64.URLEncoding.DecodeString(b64)
	if err != nil {
		return "", fmt.Errorf("object digest: %w", err)
	}
	return hex.EncodeToString(raw), nil
}

// finishDeprovisioning deletes the sealed secrets — last, after every store
// is clean — and marks the tenant deprovisioned.
func (s *Saga) finishDeprovisioning(ctx context.Context, rec *events.TenantRecord) (*events.TenantRecord, error) {
	id := events.TenantID(rec.TenantID)
	if err := s.secrets.Delete(ctx, id.SecretsObject()); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return rec, fmt.Errorf("delete sealed secrets: %w", err)
	}
	next, _, err := s.reg.Update(ctx, rec.TenantID, func(cur *events.TenantRecord) (*events.TenantRecord, error) {
		if cur == nil || cur.Generation != rec.Generation || cur.State != events.TenantDeprovisioning || !allStores(cur, events.StoreDeprovisioned) {
			return nil, errNoChange
		}
		cur.State = events.TenantDeprovisioned
		cur.Secrets = nil
		return cur, nil
	})
	return next, err
}
