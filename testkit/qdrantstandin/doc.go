// Package qdrantstandin is a Qdrant STAND-IN: an in-memory gRPC server that
// implements the part of Qdrant's gRPC API that tenantprov's qdrant-agent
// calls, with Qdrant's API-key and JWT-RBAC authentication. It is NOT Qdrant.
//
// It exists because these machines cannot run Qdrant (no Docker engine, no
// installable server). Tests use real Qdrant through testcontainers wherever
// a Docker engine answers, and this stand-in otherwise; `make up` uses it
// when no real Qdrant is reachable. It names itself everywhere: the
// HealthCheck title is "qdrant-standin", every log line starts with
// "qdrant-standin:", and the command in testkit/cmd/qdrant-standin prints a
// banner saying it is not Qdrant. No production configuration may choose it.
//
// It is built on the server interfaces generated in
// github.com/qdrant/go-client/qdrant, so the official Go client
// (qdrant.NewClient(&qdrant.Config{Host, Port, APIKey})) talks to it
// unchanged. Only the gRPC API exists (no REST port 6333).
//
// # What is implemented
//
//   - qdrant.Qdrant/HealthCheck (no authentication, as in Qdrant).
//   - qdrant.Collections: Create (one unnamed dense vector: size + distance;
//     metadata kept), Get (config readable back), List, CollectionExists,
//     Delete (result false when absent), Update (metadata merge only; other
//     settings accepted and ignored), ListCollectionAliases (always empty:
//     no alias operation is implemented, so no alias can exist).
//   - qdrant.Points: Upsert (numeric or UUID ids, dense vector, payload;
//     update_mode and update_filter honoured), Delete (by ids or filter), Get,
//     Scroll (ordered by id, next_page_offset), Count, Query (nearest dense
//     vector, or no query = id order; filter, limit, offset,
//     score_threshold, with_payload, with_vectors) and the legacy Search.
//   - Strict mode (strict.go): strict_mode_config at create, merged field
//     by field by Update, read back by Get; upsert batch size, points
//     count, payload and vector storage, and query limit enforced with
//     PermissionDenied "Forbidden: …".
//   - Distances Cosine (vectors normalised on write, as Qdrant does), Dot,
//     Euclid, Manhattan, computed by brute force in float32.
//   - Filters: must / should / must_not / min_should, nested filters,
//     has_id, is_empty, is_null, has_vector, and field conditions with match
//     keyword / integer / boolean / keywords / integers / except / text
//     (substring) and numeric range. Keys are JSON paths ("a.b", "a[].b").
//
// Anything else returns codes.Unimplemented with a message that names the
// stand-in, never a silent wrong answer. Data lives in memory only.
//
// # Authentication and authorisation
//
// The behaviour follows Qdrant's source (github.com/qdrant/qdrant, master as
// stored in the reference index, matching the 1.17 line):
//
//   - src/common/auth/mod.rs (AuthKeys::try_create, validate_request,
//     extract_key, validate_value_exists);
//   - src/common/auth/jwt_parser.rs (JwtParser: HS256 only, leeway 30 s,
//     no required claims, error classification);
//   - src/common/auth/claims.rs (claims: sub, exp, access defaulting to
//     manage, value_exists, subject; validation);
//   - src/tonic/auth.rs (gRPC middleware: HealthCheck bypass, AuthError →
//     tonic Status);
//   - lib/storage/src/rbac/mod.rs and ops_checks.rs (Access, global "r"/"m",
//     per-collection "r"/"rw", collection meta operations need global
//     manage);
//   - src/common/collections.rs (List filtered to accessible collections;
//     exists/get need read access to that collection);
//   - lib/storage/src/content_manager/conversions.rs (StorageError →
//     tonic code: Forbidden → PermissionDenied, NotFound → NotFound,
//     AlreadyExists → AlreadyExists, BadInput → InvalidArgument).
//
// Authentication is on when Config.APIKey or Config.ReadOnlyAPIKey is set;
// otherwise every request has full manage access. The credential is the
// first `api-key` metadata value, else the `authorization` value after the
// exact prefix "Bearer ". Then, in this order:
//
//	no credential at all                         → Unauthenticated
//	credential == APIKey                         → global manage
//	credential == ReadOnlyAPIKey                 → global read
//	JWTRBAC off (or no APIKey to sign with)      → Unauthenticated ("Invalid API key or JWT")
//	not a JWT: malformed, alg not HS256 (incl.
//	  "none", HS512, RS256), claims that do not
//	  parse (bad access, non-integer exp, …)     → Unauthenticated (Qdrant's parser returns None)
//	HS256 signature not made with APIKey         → PermissionDenied (AuthError::Forbidden)
//	exp more than 30 s in the past               → PermissionDenied (AuthError::Forbidden)
//	claims invalid (duplicate collection in the
//	  access list, deprecated "payload" rule)    → Unauthenticated (AuthError::Unauthorized)
//	value_exists collection does not exist       → PermissionDenied (AuthError::Forbidden)
//	value_exists matches no point                → Unauthenticated (AuthError::Unauthorized)
//	otherwise                                    → the token's access
//
// Note two places where Qdrant's codes differ from what one might guess: an
// expired token and a token signed with another key are PermissionDenied,
// not Unauthenticated, while a revoked token (value_exists no longer
// matching) is Unauthenticated. The value_exists check runs on every
// request. A token without exp never expires; a token without access has
// global manage access.
//
// Authorisation, checked before the collection is looked up (so a token
// learns nothing about collections it cannot see):
//
//	Collections Create / Update / Delete         → global manage ("m" or the API key)
//	Collections Get / CollectionExists            → read access to that collection
//	Collections List                              → any; lists only collections the caller can read
//	Collections ListCollectionAliases             → read access to that collection
//	Points Upsert / Delete                        → write: global manage, or "rw"/"prw" on that collection
//	Points Get / Scroll / Count / Query / Search  → read: global "r"/"m", or "r"/"rw" on that collection
//	missing access                                → PermissionDenied
package qdrantstandin
