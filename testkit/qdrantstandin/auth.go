package qdrantstandin

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc/metadata"
)

// jwtLeeway is the clock-skew allowance Qdrant's JwtParser applies to exp.
const jwtLeeway = 30 * time.Second

// access is what one request may do, the stand-in's copy of Qdrant's
// storage::rbac::Access: either global (read or manage) or a list of
// collections, each read-only or read-write.
type access struct {
	global      bool
	manage      bool            // global manage; only meaningful when global
	collections map[string]bool // collection → write allowed; only when !global
}

var fullAccess = access{global: true, manage: true}

func (a access) canRead(collection string) bool {
	if a.global {
		return true
	}
	_, ok := a.collections[collection]
	return ok
}

func (a access) canWrite(collection string) bool {
	if a.global {
		return a.manage
	}
	return a.collections[collection]
}

// checkRead, checkWrite and checkManage return Qdrant's Forbidden messages
// as PermissionDenied.
func (a access) checkRead(collection string) error {
	if !a.canRead(collection) {
		return errPermissionDenied("Access to collection %s is required", collection)
	}
	return nil
}

func (a access) checkWrite(collection string) error {
	if err := a.checkRead(collection); err != nil {
		return err
	}
	if a.canWrite(collection) {
		return nil
	}
	if a.global {
		return errPermissionDenied("Global manage access is required")
	}
	return errPermissionDenied("Write access to collection %s is required", collection)
}

func (a access) checkManage() error {
	if a.global && a.manage {
		return nil
	}
	if a.global {
		return errPermissionDenied("Global manage access is required")
	}
	return errPermissionDenied("Global access is required")
}

type accessKey struct{}

func withAccess(ctx context.Context, a access) context.Context {
	return context.WithValue(ctx, accessKey{}, a)
}

// accessFrom returns the access the interceptor granted; a context without
// one (auth disabled) has full access, as in Qdrant.
func accessFrom(ctx context.Context) access {
	if a, ok := ctx.Value(accessKey{}).(access); ok {
		return a
	}
	return fullAccess
}

// valueMatch is one key/value pair of a value_exists claim.
type valueMatch struct {
	key   string
	value *qdrant.Value // string, integer or bool
}

// tokenClaims are the parsed claims of an accepted JWT.
type tokenClaims struct {
	access      access
	valueExists *valueExistsClaim
}

type valueExistsClaim struct {
	collection string
	matches    []valueMatch
}

// valueExistsFunc reports whether collection exists and, if so, whether
// some point in it matches every pair.
type valueExistsFunc func(collection string, matches []valueMatch) (collectionFound, pointFound bool)

// authenticator decides who a request is, following Qdrant's AuthKeys.
type authenticator struct {
	apiKey      string
	readOnlyKey string
	jwtRBAC     bool
	valueExists valueExistsFunc
	now         func() time.Time
}

func (a *authenticator) enabled() bool { return a.apiKey != "" || a.readOnlyKey != "" }

// errNotJWT is Qdrant's JwtParser returning None: the token is not a JWT
// it can use, and the request falls through to "Invalid API key or JWT".
var errNotJWT = errors.New("not a usable JWT")

// authenticate returns the access of the request carrying md, or a gRPC
// status error (Unauthenticated or PermissionDenied, as Qdrant answers).
func (a *authenticator) authenticate(md metadata.MD) (access, error) {
	if !a.enabled() {
		return fullAccess, nil
	}
	key, ok := credential(md)
	if !ok {
		return access{}, errUnauthenticated("Must provide an API key or an Authorization bearer token")
	}
	if a.apiKey != "" && subtle.ConstantTimeCompare([]byte(key), []byte(a.apiKey)) == 1 {
		return fullAccess, nil
	}
	if a.readOnlyKey != "" && subtle.ConstantTimeCompare([]byte(key), []byte(a.readOnlyKey)) == 1 {
		return access{global: true}, nil
	}
	if !a.jwtRBAC || a.apiKey == "" {
		return access{}, errUnauthenticated("Invalid API key or JWT")
	}
	claims, err := a.parseToken(key)
	if errors.Is(err, errNotJWT) {
		return access{}, errUnauthenticated("Invalid API key or JWT")
	}
	if err != nil {
		return access{}, err
	}
	if ve := claims.valueExists; ve != nil {
		collectionFound, pointFound := a.valueExists(ve.collection, ve.matches)
		if !collectionFound {
			return access{}, errPermissionDenied("Invalid JWT, stateful validation failed")
		}
		if !pointFound {
			return access{}, errUnauthenticated("Invalid JWT, stateful validation failed")
		}
	}
	return claims.access, nil
}

// credential extracts the key the way Qdrant's extract_key does: the
// api-key header, else the authorization header after "Bearer ".
func credential(md metadata.MD) (string, bool) {
	if v := md.Get("api-key"); len(v) > 0 {
		return v[0], true
	}
	if v := md.Get("authorization"); len(v) > 0 {
		if tok, ok := strings.CutPrefix(v[0], "Bearer "); ok {
			return tok, true
		}
	}
	return "", false
}

// parseToken verifies an HS256 JWT signed with the API key and parses its
// claims. Errors are errNotJWT, or gRPC statuses for the cases where Qdrant
// answers Forbidden (bad signature, expired) or Unauthorized (invalid
// claims).
func (a *authenticator) parseToken(raw string) (*tokenClaims, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, errNotJWT
	}
	// Qdrant accepts exactly HS256; any other alg, "none" included, makes the
	// token "not a JWT" rather than a bad signature.
	if alg, err := headerAlg(parts[0]); err != nil || alg != jwt.SigningMethodHS256.Alg() {
		return nil, errNotJWT
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithoutClaimsValidation(), // exp is checked below, after the claims parse, as Qdrant orders it
		jwt.WithJSONNumber(),
	)
	_, err := parser.Parse(raw, func(t *jwt.Token) (any, error) {
		if t.Method != jwt.SigningMethodHS256 {
			return nil, fmt.Errorf("unexpected signing method %s", t.Method.Alg())
		}
		return []byte(a.apiKey), nil
	})
	switch {
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return nil, errPermissionDenied("InvalidSignature")
	case err != nil:
		return nil, errNotJWT
	}

	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errNotJWT
	}
	claims, invalid, err := decodeClaims(payload)
	if err != nil {
		return nil, errNotJWT
	}
	if claims.exp != nil {
		// exp < now - leeway, in unsigned seconds like jsonwebtoken.
		limit := uint64(max(a.now().Add(-jwtLeeway).Unix(), 0))
		if *claims.exp < limit {
			return nil, errPermissionDenied("ExpiredSignature")
		}
	}
	if invalid != "" {
		return nil, errUnauthenticated(invalid)
	}
	return &claims.tokenClaims, nil
}

func headerAlg(segment string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(segment)
	if err != nil {
		return "", err
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(b, &h); err != nil {
		return "", err
	}
	return jsonString(h["alg"])
}

// jsonString decodes a JSON string, rejecting a missing value and null the
// way serde rejects them for a required String.
func jsonString(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || isNull(raw) {
		return "", errors.New("missing string")
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

type decodedClaims struct {
	tokenClaims
	exp *uint64
}

// decodeClaims parses Qdrant's Claims struct strictly (exact, case-sensitive
// keys and types). A parse error means "not a JWT"; invalid is non-empty
// when the claims parse but fail Qdrant's validation.
func decodeClaims(payload []byte) (c decodedClaims, invalid string, err error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(payload, &m); err != nil {
		return c, "", err
	}
	for _, k := range []string{"sub", "subject"} {
		if raw, ok := m[k]; ok && !isNull(raw) {
			if _, err := jsonString(raw); err != nil {
				return c, "", err
			}
		}
	}
	if raw, ok := m["exp"]; ok && !isNull(raw) {
		var exp uint64
		if err := json.Unmarshal(raw, &exp); err != nil {
			return c, "", err
		}
		c.exp = &exp
	}
	if raw, ok := m["access"]; ok {
		c.access, invalid, err = decodeAccess(raw)
		if err != nil {
			return c, "", err
		}
	} else {
		c.access = fullAccess // Qdrant: "Give full access when the access field is not present"
	}
	if raw, ok := m["value_exists"]; ok && !isNull(raw) {
		ve, err := decodeValueExists(raw)
		if err != nil {
			return c, "", err
		}
		c.valueExists = ve
	}
	return c, invalid, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

func decodeAccess(raw json.RawMessage) (a access, invalid string, err error) {
	if mode, err := jsonString(raw); err == nil {
		switch mode {
		case "r":
			return access{global: true}, "", nil
		case "m":
			return fullAccess, "", nil
		}
		return a, "", fmt.Errorf("unknown global access mode %q", mode)
	}
	var list []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil || list == nil {
		return a, "", fmt.Errorf("access is neither a mode nor a list: %w", err)
	}
	a.collections = make(map[string]bool, len(list))
	for _, item := range list {
		name, err := jsonString(item["collection"])
		if err != nil {
			return a, "", fmt.Errorf("access.collection: %w", err)
		}
		mode, err := jsonString(item["access"])
		if err != nil {
			return a, "", fmt.Errorf("access.access: %w", err)
		}
		// Qdrant's CollectionAccessMode (lib/storage/src/rbac/mod.rs): "r",
		// "rw", and "prw" (points read-write: no payload indexes or
		// snapshots, which the stand-in does not implement anyway). Other
		// fields of an entry are ignored, as serde ignores unknown fields.
		var write bool
		switch mode {
		case "r":
		case "rw", "prw":
			write = true
		default:
			return a, "", fmt.Errorf("unknown collection access mode %q", mode)
		}
		if _, dup := a.collections[name]; dup && invalid == "" {
			invalid = "access.collection: Collection name should be unique"
		}
		if raw, ok := item["payload"]; ok && !isNull(raw) && invalid == "" {
			// Payload rules were removed from Qdrant's JWT RBAC (1.16); such
			// tokens fail claim validation.
			invalid = "access.payload: payload constraints are not supported"
		}
		a.collections[name] = write
	}
	return a, invalid, nil
}

func decodeValueExists(raw json.RawMessage) (*valueExistsClaim, error) {
	var v struct {
		Collection *string `json:"collection"`
		Matches    *[]struct {
			Key   *string         `json:"key"`
			Value json.RawMessage `json:"value"`
		} `json:"matches"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if v.Collection == nil || v.Matches == nil {
		return nil, errors.New("value_exists needs collection and matches")
	}
	ve := &valueExistsClaim{collection: *v.Collection}
	for _, m := range *v.Matches {
		if m.Key == nil || *m.Key == "" {
			return nil, errors.New("value_exists.matches[].key missing")
		}
		val, err := matchValue(m.Value)
		if err != nil {
			return nil, err
		}
		ve.matches = append(ve.matches, valueMatch{key: *m.Key, value: val})
	}
	return ve, nil
}

// matchValue parses Qdrant's ValueVariants: a string, an i64 or a bool.
func matchValue(raw json.RawMessage) (*qdrant.Value, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return qdrant.NewValueString(s), nil
	}
	var i int64
	if json.Unmarshal(raw, &i) == nil {
		return qdrant.NewValueInt(i), nil
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return qdrant.NewValueBool(b), nil
	}
	return nil, fmt.Errorf("value_exists value %s is not a string, integer or bool", raw)
}
