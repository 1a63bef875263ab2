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
package busauth
