package main

import (
	"strings"
	"testing"
)

// TestSumSamples: the samples of one metric are summed across labels, and
// a metric whose name merely begins with it is not counted.
func TestSumSamples(t *testing.T) {
	text := `# HELP tenantprov_agent_commands_in_flight x
tenantprov_agent_commands_in_flight{store="minio"} 3
tenantprov_agent_commands_in_flight{store="redis"} 2
tenantprov_agent_commands_in_flight_total 40
tenantprov_orchestrator_observations_deferred 0
`
	if v, ok := sumSamples(strings.NewReader(text), "tenantprov_agent_commands_in_flight"); !ok || v != 5 {
		t.Errorf("in flight = %v, %v; want 5, true", v, ok)
	}
	if v, ok := sumSamples(strings.NewReader(text), "tenantprov_orchestrator_observations_deferred"); !ok || v != 0 {
		t.Errorf("deferred = %v, %v; want 0, true", v, ok)
	}
	if _, ok := sumSamples(strings.NewReader(text), "tenantprov_absent"); ok {
		t.Error("an absent metric was found")
	}
}
