// Package deploytest checks what deploy/ ships against the code it deploys,
// offline: every metric the Prometheus rules and the Grafana dashboard name
// is one a service exports (or an explicitly pending one), the rules pass
// promtool, and the Helm chart renders with the real helm into objects that
// decode strictly into the Kubernetes API types and give every service the
// configuration its binary reads.
//
// It is a module of its own so that its heavy test-only dependencies
// (k8s.io/api, the PromQL parser) never reach a production module.
package deploytest
