package qdrantstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Names of Qdrant's inward isolation checks (DESIGN.md §5: nobody but the
// tenant and the control plane reaches the slice). They are reported after
// the four required checks.
const (
	// CheckTokenScoped passes when the tenant's credential is an HS256 JWT
	// signed with the server's API key whose claims confine it: exp
	// present and within QDRANT_TOKEN_TTL, access naming only the tenant's
	// collection (rw; no global access, no second collection), and
	// value_exists binding it to one token_id in the system collection.
	CheckTokenScoped = "token_scoped"
	// CheckNoOtherToken passes when the credential's revocation point is
	// the tenant's current token record and no other point in the system
	// collection names the tenant, its collection or its token_id (so no
	// other token the agent issued can reach the collection, and
	// deprovision revokes everything that keeps the credential valid); the
	// marker of origin is intact; and no alias leads to the collection.
	CheckNoOtherToken = "no_other_token"
)

// expSlack is how far past now + QDRANT_TOKEN_TTL a token's exp may be
// (exp is whole seconds; Verify runs moments after signing).
const expSlack = time.Minute

// scopedToken is what checkTokenScoped learnt from the credential.
type scopedToken struct {
	tokenID string // the value_exists token_id; "" when unusable
	exp     int64  // exp claim, Unix seconds; 0 when absent
}

// How "other live tokens" are known. A Qdrant JWT can be made only with the
// server's API key (or its alt_api_key): whoever holds one is the control
// plane and could use the key itself. Every token the agent signs for a
// tenant has a record in the system collection (putToken: token_id,
// tenant, collection, generation, expiry) and is valid only while a point
// carrying its token_id exists there (value_exists). The records are
// therefore the complete list of live tenant tokens the agent issued; a
// token whose record is gone is revoked. The agent's one other token, the
// RBAC probe (probeRBAC), reads the canary only and expires after five
// minutes. A token minted by someone else with the API key is outside what
// any agent can enumerate: keeping the key secret is the boundary.

// checkTokenScoped decodes the credential and checks its claims against
// what Provision issues. Every problem is reported, not just the first.
func (s *Store) checkTokenScoped(tok secret.String, name string) (events.Check, scopedToken) {
	c := events.Check{Name: CheckTokenScoped}
	var st scopedToken
	var bad []string
	raw := tok.Reveal()

	parser := jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), jwt.WithoutClaimsValidation())
	if _, err := parser.Parse(raw, func(*jwt.Token) (any, error) { return []byte(s.cfg.APIKey.Reveal()), nil }); err != nil {
		bad = append(bad, "not an HS256 JWT signed with the server's API key")
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		c.Detail = "the credential is not a JWT"
		return c, st
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]json.RawMessage
	if err == nil {
		err = json.Unmarshal(payload, &claims)
	}
	if err != nil {
		c.Detail = "the credential's claims are not base64url JSON"
		return c, st
	}

	now := s.now()
	switch raw, ok := claims["exp"]; {
	case !ok || isJSONNull(raw):
		bad = append(bad, "no exp: the token never expires")
	case json.Unmarshal(raw, &st.exp) != nil || st.exp <= 0:
		bad = append(bad, "exp is not a positive integer")
		st.exp = 0
	case st.exp <= now.Unix():
		bad = append(bad, fmt.Sprintf("expired at %s", time.Unix(st.exp, 0).UTC().Format(time.RFC3339)))
	case st.exp > now.Add(s.cfg.TokenTTL+expSlack).Unix():
		bad = append(bad, fmt.Sprintf("expires %s, beyond QDRANT_TOKEN_TTL (%s) from now", time.Unix(st.exp, 0).UTC().Format(time.RFC3339), s.cfg.TokenTTL))
	}
	bad = append(bad, accessProblems(claims["access"], name)...)
	id, problems := valueExistsTokenID(claims["value_exists"])
	bad = append(bad, problems...)
	st.tokenID = id

	if len(bad) > 0 {
		c.Detail = strings.Join(bad, "; ")
		return c, st
	}
	c.Passed = true
	c.Detail = fmt.Sprintf("HS256 with the server's API key; exp within QDRANT_TOKEN_TTL (%s); access rw on %s only; value_exists on one token_id in %s", s.cfg.TokenTTL, name, events.QdrantSystemCollection)
	return c, st
}

// accessProblems says what is wrong with an access claim that should be
// exactly [{"collection": name, "access": "rw"}]. Qdrant reads a missing
// access claim as global manage, a string as global access ("r" or "m"),
// and a list as per-collection access.
func accessProblems(raw json.RawMessage, name string) []string {
	if len(raw) == 0 {
		return []string{"no access claim: Qdrant grants global manage"}
	}
	var global string
	if json.Unmarshal(raw, &global) == nil {
		return []string{fmt.Sprintf("global access %q", global)}
	}
	var list []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil || list == nil {
		return []string{"access claim is neither global nor a collection list"}
	}
	var bad []string
	var own int
	for _, item := range list {
		var coll, mode string
		_ = json.Unmarshal(item["collection"], &coll)
		_ = json.Unmarshal(item["access"], &mode)
		if coll != name {
			bad = append(bad, fmt.Sprintf("access also names collection %q", coll))
			continue
		}
		own++
		if mode != "rw" {
			bad = append(bad, fmt.Sprintf("access %q on %s, want \"rw\"", mode, name))
		}
		for k := range item {
			if k != "collection" && k != "access" {
				bad = append(bad, fmt.Sprintf("access entry of %s has an extra field %q", name, k))
			}
		}
	}
	if own != 1 {
		bad = append(bad, fmt.Sprintf("access names %s %d times, want once", name, own))
	}
	slices.Sort(bad)
	return bad
}

// valueExistsTokenID returns the token_id a value_exists claim requires,
// with what is wrong with the claim if it is not exactly one token_id match
// on the system collection.
func valueExistsTokenID(raw json.RawMessage) (string, []string) {
	if len(raw) == 0 || isJSONNull(raw) {
		return "", []string{"no value_exists: the token cannot be revoked"}
	}
	var ve struct {
		Collection string `json:"collection"`
		Matches    []struct {
			Key   string          `json:"key"`
			Value json.RawMessage `json:"value"`
		} `json:"matches"`
	}
	if err := json.Unmarshal(raw, &ve); err != nil {
		return "", []string{"value_exists is malformed"}
	}
	var bad []string
	if ve.Collection != events.QdrantSystemCollection {
		bad = append(bad, fmt.Sprintf("value_exists on collection %q, want %s", ve.Collection, events.QdrantSystemCollection))
	}
	var id string
	if len(ve.Matches) != 1 || ve.Matches[0].Key != keyTokenID || json.Unmarshal(ve.Matches[0].Value, &id) != nil || id == "" {
		bad = append(bad, fmt.Sprintf("value_exists must match exactly one %s string", keyTokenID))
		id = ""
	}
	return id, bad
}

func isJSONNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

// checkNoOtherToken reads, with the admin key, every point of the system
// collection that names the tenant, its collection or the credential's
// token_id (readSystem). Allowed are the marker of origin and the tenant's
// token records of the credential versions the marker records — one, or
// two during a rotation's grace — each for this tenant, collection and
// generation, expiring within QDRANT_TOKEN_TTL; the credential's own record
// must be one of them (its point ID and token_id the credential's, with
// the credential's exp). Anything else is another way into the collection
// that the control plane did not issue to this tenant. Aliases of the
// collection are refused too: Qdrant checks a token's access against the
// name in the request, so a token naming an alias reaches the collection.
func (s *Store) checkNoOtherToken(ctx context.Context, tenant events.TenantID, generation uint64, tok scopedToken) (events.Check, error) {
	c := events.Check{Name: CheckNoOtherToken}
	admin := withKey(ctx, s.cfg.APIKey)
	name := tenant.QdrantCollection()
	v, err := s.readSystem(admin, tenant, 0, tok, nil)
	if err != nil {
		return c, err
	}
	var bad []string
	for _, sp := range v.strays {
		if sp.detail != v.ownProblem {
			bad = append(bad, sp.detail)
		}
	}
	if v.own == nil {
		bad = append(bad, v.ownProblem)
	}
	// The records' generation: Verify's request may name none (0).
	for _, r := range v.records {
		if generation != 0 && r.generation != generation {
			bad = append(bad, fmt.Sprintf("token record %s is of generation %d, want %d", r.tokenID, r.generation, generation))
		}
	}
	switch {
	case !v.markerFound:
		bad = append(bad, "no marker of origin for "+name)
	case v.markerProblem != "":
		bad = append(bad, v.markerProblem)
	}
	aliases, err := s.client.ListCollectionAliases(admin, name)
	switch {
	case err != nil && unreachable(err):
		return c, fmt.Errorf("%s check (list aliases of %s): %w", c.Name, name, err)
	case err != nil && code(err) != codes.NotFound:
		return c, s.adminErr(fmt.Errorf("list aliases of %s: %w", name, err))
	case len(aliases) > 0:
		bad = append(bad, fmt.Sprintf("aliases lead to %s: %s", name, strings.Join(aliases, ", ")))
	}
	if len(bad) > 0 {
		c.Detail = strings.Join(bad, "; ")
		return c, nil
	}
	c.Passed = true
	c.Detail = fmt.Sprintf("in %s only the marker and the tenant's token records of credential versions %v (the credential's among them) name %s; no alias leads to it", events.QdrantSystemCollection, v.versions, name)
	return c, nil
}
