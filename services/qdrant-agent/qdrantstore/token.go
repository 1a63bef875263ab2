package qdrantstore

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Payload keys of the points in the system collection.
const (
	keyKind       = "kind"       // kindCollection or kindToken
	keyTenant     = "tenant"     // tenant ID
	keyGeneration = "generation" // tenant generation (integer)
	keyTokenID    = "token_id"   // the value a JWT's value_exists claim requires
	keyCollection = "collection" // the tenant's collection (markers and token records)
	keyExpiresAt  = "expires_at" // a token's exp claim, Unix seconds (token records)
	keyCreatedAt  = "created_at" // RFC 3339, UTC
	// keyVersion is the credential version a token record belongs to (1
	// after Provision; absent in records written before rotation existed,
	// read as 1).
	keyVersion = "version"
	// keyVersions, on the marker, lists the credential versions the tenant
	// currently holds: one, or two during a rotation's grace. Absent means
	// [1].
	keyVersions = "credential_versions"
	// keySuspendedTokenID holds a suspended token's token_id while
	// token_id itself is absent, so that the token's value_exists claim
	// matches no point (the token is refused) and Resume can put it back.
	keySuspendedTokenID = "suspended_token_id"
	keySuspendedAt      = "suspended_at" // RFC 3339, UTC

	kindCollection = "collection" // marker of a collection tenantprov created
	kindToken      = "token"      // revocation point of one tenant JWT
)

// tokenClaims builds the claims of a tenant JWT in Qdrant's format
// (src/common/auth/claims.rs): rw on the tenant's collection only, valid
// while a point with token_id = tokenID exists in the system collection, and
// until exp (the record of tokenID says the same: putToken).
func tokenClaims(tenant events.TenantID, tokenID string, now, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"sub": "tenantprov:" + tenant.String(),
		"iat": now.Unix(),
		"exp": exp.Unix(),
		"access": []map[string]string{
			{"collection": tenant.QdrantCollection(), "access": "rw"},
		},
		"value_exists": map[string]any{
			"collection": events.QdrantSystemCollection,
			"matches":    []map[string]string{{"key": keyTokenID, "value": tokenID}},
		},
	}
}

// sign returns claims as an HS256 JWT signed with key.
func sign(claims jwt.MapClaims, key secret.String) (secret.String, error) {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(key.Reveal()))
	if err != nil {
		return "", fmt.Errorf("sign JWT: %w", err)
	}
	return secret.String(tok), nil
}

// unsigned returns claims as a JWT with alg "none" and no signature.
func unsigned(claims jwt.MapClaims) (secret.String, error) {
	tok, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		return "", fmt.Errorf("build unsigned JWT: %w", err)
	}
	return secret.String(tok), nil
}

// newTokenID returns a random UUID (version 4). It is both the token's
// value_exists value and the ID of its revocation point.
func newTokenID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generate token id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b), nil
}

func formatUUID(b [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// randomKey returns a fresh random HS256 key, for probe tokens that must
// not verify.
func randomKey() (secret.String, error) {
	return secret.Generate()
}

// tamperSignature returns tok with one character in the middle of its
// signature changed, so the signature no longer verifies. (The middle, not
// the end: the last base64 character carries padding bits a lenient decoder
// ignores.)
func tamperSignature(tok secret.String) (secret.String, error) {
	parts := strings.Split(tok.Reveal(), ".")
	if len(parts) != 3 || len(parts[2]) < 4 {
		return "", fmt.Errorf("credential api_key is not a signed JWT")
	}
	sig := []byte(parts[2])
	i := len(sig) / 2
	if sig[i] == 'A' {
		sig[i] = 'B'
	} else {
		sig[i] = 'A'
	}
	parts[2] = string(sig)
	return secret.String(strings.Join(parts, ".")), nil
}

// escalateClaims returns tok with its claims rewritten to global manage
// access (and no value_exists) while keeping the original signature: a
// server that checks signatures must refuse it.
func escalateClaims(tok secret.String) (secret.String, error) {
	parts := strings.Split(tok.Reveal(), ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("credential api_key is not a signed JWT")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("credential api_key: claims are not base64url")
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		return "", fmt.Errorf("credential api_key: claims are not JSON")
	}
	claims["access"] = "m"
	delete(claims, "value_exists")
	raw, err = json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("re-encode claims: %w", err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(raw)
	return secret.String(strings.Join(parts, ".")), nil
}
