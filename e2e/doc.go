// Package e2e holds the whole-system tests of tenantprov: the orchestrator
// and all four agents in one process, against real NATS, PostgreSQL, Redis
// and MinIO, and Qdrant (real under Docker, otherwise the stand-in). It is a
// module of its own so that no production module depends on every other.
package e2e
