package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// metaLeaderTarget is the JetStream meta leader of a NATS cluster (make up
// NATS_CLUSTER=3): each kill finds the node that leads now, from the
// nodes' monitoring endpoints (/varz names a node, /jsz its meta leader),
// and kills that node's process. CHAOS_TARGETS names it "nats-meta-leader";
// the nodes themselves are ordinary process targets ("nats-server",
// "nats-server-1", "nats-server-2" in .dev/pids).
type metaLeaderTarget struct {
	nodes    []*process // in the order of monitors
	monitors []string   // http://127.0.0.1:<port> of each node
	client   *http.Client
}

const metaLeaderName = "nats-meta-leader"

func newMetaLeaderTarget(pids string, nodeNames, monitors []string) (*metaLeaderTarget, error) {
	if len(nodeNames) != len(monitors) || len(nodeNames) == 0 {
		return nil, fmt.Errorf("%s: %d node names for %d monitoring endpoints", metaLeaderName, len(nodeNames), len(monitors))
	}
	m := &metaLeaderTarget{monitors: monitors, client: &http.Client{Timeout: 3 * time.Second}}
	for _, n := range nodeNames {
		p := &process{name: n, dir: pids}
		p.Capture()
		m.nodes = append(m.nodes, p)
	}
	return m, nil
}

func (m *metaLeaderTarget) Name() string { return metaLeaderName }

// Alive: every node runs (a dead node is restarted like any target).
func (m *metaLeaderTarget) Alive() bool {
	for _, n := range m.nodes {
		if !n.Alive() {
			return false
		}
	}
	return true
}

func (m *metaLeaderTarget) getJSON(url string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// leader returns the index of the node that is the meta leader.
func (m *metaLeaderTarget) leader() (int, error) {
	names := make([]string, len(m.monitors))
	var leader string
	for i, mon := range m.monitors {
		var varz struct {
			ServerName string `json:"server_name"`
		}
		if err := m.getJSON(mon+"/varz", &varz); err == nil {
			names[i] = varz.ServerName
		}
		var jsz struct {
			Meta *struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		if leader == "" && m.getJSON(mon+"/jsz", &jsz) == nil && jsz.Meta != nil {
			leader = jsz.Meta.Leader
		}
	}
	for i, n := range names {
		if n != "" && n == leader {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no meta leader known (nodes %v, leader %q)", names, leader)
}

func (m *metaLeaderTarget) Kill() (bool, error) {
	i, err := m.leader()
	if err != nil {
		return false, err
	}
	return m.nodes[i].Kill()
}

func (m *metaLeaderTarget) Restart() error {
	var errs []string
	for _, n := range m.nodes {
		if err := n.Restart(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s: %s", metaLeaderName, strings.Join(errs, "; "))
	}
	return nil
}

// natsMonitors are the monitoring endpoints of make up's NATS nodes:
// CHAOS_NATS_MONITORS (comma-separated URLs), or NATS_MONITOR_PORT
// (default 18222) and the two ports after it.
func natsMonitors(getenv func(string) string) []string {
	if v := getenv("CHAOS_NATS_MONITORS"); v != "" {
		return strings.Split(v, ",")
	}
	port := 18222
	if v := getenv("NATS_MONITOR_PORT"); v != "" {
		_, _ = fmt.Sscanf(v, "%d", &port)
	}
	return []string{fmt.Sprintf("http://127.0.0.1:%d", port), fmt.Sprintf("http://127.0.0.1:%d", port+1), fmt.Sprintf("http://127.0.0.1:%d", port+2)}
}
