// Package events is tenantprov's public contract in code: tenant-ID rules and
// the resource names derived from them, NATS subjects, JetStream stream,
// consumer, key-value and object-store names and configurations, message
// headers, deterministic message IDs, and the JSON payload of every subject.
//
// DESIGN.md §2–3 is the specification. Scripts and upstream systems depend on
// every name in this package: change DESIGN.md first, then this package, and
// never spell a subject or a resource name anywhere else.
package events
