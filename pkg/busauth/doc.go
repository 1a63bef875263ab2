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
// # What subject permissions cannot do (one account)
//
// nats-server does not authorize reply subjects, nor the deliver subject of
// a push consumer. So an identity that may call any JetStream API can make
// the server publish the API's response on a subject of its choosing, and
// an identity with a pull durable (the services) can have its own
// consumer's messages delivered to one; a stream capturing that subject
// stores it. What arrives there is written by the server or by the
// message's original author (an API response, a command) — never a payload
// the sender chose — so it cannot pass for a request or a store result, and
// the orchestrator's result checks (saga ID and generation) drop it. Push
// deliveries also need a live subscription on the target subject, which no
// identity may have on a subject a service consumes (see watchOutcomes).
// Closing this fully means moving JetStream into its own account that
// exports its API to per-role accounts (replies then become private _R_
// subjects); that is the next step if a role must be treated as hostile
// rather than merely confined.
package busauth
