package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestMetaLeaderFound: the node whose /varz name is the /jsz meta leader
// is the one the meta-leader target picks.
func TestMetaLeaderFound(t *testing.T) {
	const leader = "n2"
	var monitors []string
	for _, name := range []string{"n0", "n1", "n2"} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/varz":
				fmt.Fprintf(w, `{"server_name":%q}`, name)
			case "/jsz":
				fmt.Fprintf(w, `{"meta_cluster":{"name":"c","leader":%q}}`, leader)
			}
		}))
		t.Cleanup(srv.Close)
		monitors = append(monitors, srv.URL)
	}
	m, err := newMetaLeaderTarget(t.TempDir(), []string{"nats-server", "nats-server-1", "nats-server-2"}, monitors)
	if err != nil {
		t.Fatal(err)
	}
	i, err := m.leader()
	if err != nil || i != 2 {
		t.Fatalf("leader() = %d, %v; want 2", i, err)
	}
	if got := natsMonitors(func(k string) string { return map[string]string{"NATS_MONITOR_PORT": "28222"}[k] }); got[2] != "http://127.0.0.1:28224" {
		t.Errorf("natsMonitors = %v", got)
	}
}
