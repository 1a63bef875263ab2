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

// TestParseCallTimes: a histogram's sum and count are read by call, summed
// over its other labels, and a later reading minus an earlier one keeps
// only the calls made in between.
func TestParseCallTimes(t *testing.T) {
	const h = "tenantprov_minio_call_duration_seconds"
	before := parseCallTimes(strings.NewReader(h+`_bucket{call="iam.list_policies",result="ok",le="0.1"} 3
`+h+`_sum{call="iam.list_policies",result="ok"} 0.3
`+h+`_count{call="iam.list_policies",result="ok"} 3
`+h+`_sum{call="user.add",result="ok"} 1
`+h+`_count{call="user.add",result="ok"} 10
`), h)
	after := parseCallTimes(strings.NewReader(h+`_sum{call="iam.list_policies",result="ok"} 1.5
`+h+`_count{call="iam.list_policies",result="ok"} 5
`+h+`_sum{call="iam.list_policies",result="error"} 0.5
`+h+`_count{call="iam.list_policies",result="error"} 1
`+h+`_sum{call="user.add",result="ok"} 1
`+h+`_count{call="user.add",result="ok"} 10
`), h)
	d := after.minus(before)
	if got := d["iam.list_policies"]; got[1] != 3 || got[0] < 1.69 || got[0] > 1.71 {
		t.Errorf("iam.list_policies = %v, want 1.7 s in 3 calls", got)
	}
	if _, ok := d["user.add"]; ok {
		t.Errorf("user.add was not called in between: %v", d)
	}
}
