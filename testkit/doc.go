// Package testkit starts real servers for tests: an embedded nats-server with
// JetStream (standalone or a cluster), PostgreSQL from its own initdb,
// redis-server and minio. Nothing here is a mock. (Qdrant, which cannot be
// installed on these machines, is handled separately; see
// testkit/qdrantstandin.)
//
// Every helper takes a testing.TB, marks itself with t.Helper, binds
// 127.0.0.1 only on a random free port, logs what it started and how long
// that took, and stops its server (and removes its files) with t.Cleanup.
// Each server has Stop/Start (NATS: Shutdown/Restart) that keep its port,
// data and credentials, for failure tests.
//
// External binaries are found by RequireBinary: an environment override
// (TENANTPROV_<NAME>_BIN), then <workspace root>/bin (filled by
// `make tools`), then known install locations, then $PATH. A missing binary
// skips the test with the command that installs it, or fails it when CI=true.
//
// Child processes run in their own process group, which cleanup kills, and
// with a parent-death signal (SIGKILL), so a test binary that panics, times
// out or is killed does not leave servers behind. The signal is tied to the
// OS thread that started the child; the kit starts each child from a
// goroutine locked to its own thread for the child's whole life, so the
// signal fires only when the test process itself goes away.
//
// The package is for tests only and must not be imported by production
// modules.
package testkit
