// Package busauth is who may do what on tenantprov's NATS bus (DESIGN.md
// §11): one identity per role, each with the least privilege its job needs,
// enforced by nats-server itself.
//
// # Mechanism: decentralized JWT accounts with creds files
//
// An operator key signs one account (TENANTPROV, where every stream lives)
// and a system account; the account's signing key signs one user JWT per
// identity, and the user's permissions travel inside that JWT. nats-server
// runs with the operator JWT and a MEMORY resolver preloaded with the two
// account JWTs (ServerConfig); it holds no user list at all.
//
// Chosen over server-configured nkey users because:
//   - a new identity (another upstream system's requester credential, a
//     second operator) is issued offline with the account signing key
//     (`tenantctl bus issue`) and works at once — no server config edit, no
//     reload, no restart;
//   - permissions are part of the signed credential, generated from one Go
//     table (Permissions) that the tests exercise against a real server, so
//     the server's view and the code's view cannot drift;
//   - a credential can carry an expiry, and the standard .creds file is what
//     nats.go (nats.UserCredentials), the nats CLI (NATS_CREDS / --creds)
//     and every other NATS client already read.
//
// The cost: revoking one credential before its expiry needs a new account
// JWT (a revocation entry) in the server config and a config reload
// (`nats-server --signal reload`), not a restart.
//
// # Inboxes
//
// Every service identity uses its own inbox prefix (_INBOX_<role>, see
// InboxPrefix) and may subscribe only there, so no identity can read another
// one's replies (registry reads, object chunks). Human identities (operator,
// observer) keep the nats CLI's default _INBOX. so that the CLI works with
// nothing but NATS_CREDS; no service uses that prefix.
//
// # Reply subjects: why requesters and observers have their own accounts
//
// nats-server does not authorize reply subjects (nor a push consumer's
// deliver subject), and JetStream answers — a publish acknowledgement, an
// API response, a direct get (the stored message itself), a pulled message —
// go to the reply subject the client chose. Inside one account that subject
// may be one a stream captures: a requester publishing tenant.requested with
// reply "$KV.tenants.acme" would overwrite acme's registry record with the
// acknowledgement; an observer's direct get of acme's record aimed at
// tenant.deprovision.requested would be a valid deprovision request. So the
// requesters (RequestersAccountName) and the observers
// (ObserversAccountName) live in accounts of their own that import, as
// services, exactly the subjects their role may call; the server rewrites
// their replies into private response subjects (both tested). Observers
// therefore read by direct get and stream/consumer info only (no watch).
//
// The operator and the six services share the TENANTPROV account with the
// streams and keep that residual power over their own answers: the operator
// can aim a direct get at a request subject (it may publish requests
// anyway) or at a $KV subject, and a service can aim what it pulls from its
// own consumer at any subject. Push consumers need a live subscription on
// the target, which nobody may hold on a subject a service consumes
// (watchOutcomes). Closing the rest means the same move for every role —
// JetStream alone in one account, exporting its API to per-role accounts —
// or consumers that drop relayed messages (they carry Nats-Stream or the
// original Tenantprov-* headers).
package busauth
