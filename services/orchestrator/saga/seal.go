package saga

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/services/orchestrator/sealer"
)

// permanentError is a failure that retrying cannot fix (a sealed result that
// does not open): the saga rolls back instead.
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

func permanent(format string, a ...any) error { return &permanentError{msg: fmt.Sprintf(format, a...)} }

// sealFile builds the tenant's secrets file from the provisioned or rotated
// results the seal names (read back from STORE_EVENTS at their sequences) and
// encrypts it with SOPS. Plaintext credentials exist only in this
// function's memory.
func (s *Saga) sealFile(ctx context.Context, rec *events.TenantRecord, gen uint64, spec *events.SealSpec) ([]byte, error) {
	f := &sealer.File{TenantID: rec.TenantID, Generation: gen}
	defer func() { *f = sealer.File{} }()
	stores := events.Stores()
	for _, store := range stores {
		if _, ok := spec.Results[store]; !ok {
			return nil, permanent("seal %s: no result for %s", spec.ID, store)
		}
	}
	// The four results are read back at once (one round trip, not four).
	plains := make([][]byte, len(stores))
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i, store := range stores {
		wg.Go(func() {
			plains[i], errs[i] = s.openCredential(ctx, rec.TenantID, gen, store, spec.Results[store])
		})
	}
	wg.Wait()
	defer func() {
		for _, p := range plains {
			clear(p)
		}
	}()
	for i, store := range stores {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if err := f.SetSection(store, plains[i]); err != nil {
			return nil, permanent("%s: %v", store, err)
		}
		f.CredentialVersions.Set(store, max(spec.Results[store].CredentialVersion, 1))
	}
	data, _, err := s.sealer.Seal(f)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return data, nil
}

// openCredential reads one provisioned or rotated result back from STORE_EVENTS and
// decrypts its credential with the control-plane identity.
func (s *Saga) openCredential(ctx context.Context, tenant string, gen uint64, store events.Store, ref events.SealedResult) ([]byte, error) {
	gctx, cancel := context.WithTimeout(ctx, opTimeout)
	raw, err := s.results.GetMsg(gctx, ref.Seq)
	cancel()
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, permanent("%s: result %d is no longer in %s", store, ref.Seq, events.StreamStoreEvents)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: read result %d: %w", store, ref.Seq, err)
	}
	if raw.Subject != events.EventSubject(store, events.OutcomeProvisioned) && raw.Subject != events.EventSubject(store, events.OutcomeRotated) {
		return nil, permanent("%s: result %d was published on %s", store, ref.Seq, raw.Subject)
	}
	res, err := events.DecodeStoreResult(raw.Data)
	if err != nil {
		return nil, permanent("%s: result %d: %v", store, ref.Seq, err)
	}
	if res.CredentialID != ref.CredentialID || res.Store != store || res.TenantID != tenant || res.Generation != gen {
		return nil, permanent("%s: result %d is not credential %s", store, ref.Seq, ref.CredentialID)
	}
	plain, err := secret.Open(res.Credential, s.identity)
	if err != nil {
		return nil, permanent("%s: open credential: %v", store, err)
	}
	return plain, nil
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
