package agent

import (
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/tenantprov/tenantprov/pkg/config"
)

func recipient(t *testing.T) string {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id.Recipient().String()
}

// agentMainConfig is how an agent main holds the runtime's configuration.
type agentMainConfig struct {
	Agent Config
}

func (c *agentMainConfig) Validate() error { return c.Agent.Validate() }

func TestConfigFromEnvironment(t *testing.T) {
	r1, r2 := recipient(t), recipient(t)
	cfg, err := config.LoadFrom(agentMainConfig{}, map[string]string{
		"CONTROL_PLANE_RECIPIENT": r1 + ", " + r2,
		"AGENT_MAX_IN_FLIGHT":     "3",
		"AGENT_ACK_WAIT":          "45s",
		"AGENT_COMMAND_TIMEOUT":   "30s",
		"AGENT_MAX_DELIVER":       "5",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.ControlPlaneRecipient = r1 + ", " + r2
	want.MaxInFlight, want.AckWait, want.CommandTimeout, want.MaxDeliver = 3, 45*time.Second, 30*time.Second, 5
	if cfg.Agent != want {
		t.Errorf("loaded %+v\nwant   %+v", cfg.Agent, want)
	}
	rs, err := cfg.Agent.Recipients()
	if err != nil || len(rs) != 2 {
		t.Errorf("Recipients() = %d, %v; want 2 recipients", len(rs), err)
	}
}

func TestConfigDefaultsMatchEnvDefaults(t *testing.T) {
	r := recipient(t)
	cfg, err := config.LoadFrom(agentMainConfig{}, map[string]string{"CONTROL_PLANE_RECIPIENT": r})
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.ControlPlaneRecipient = r
	if cfg.Agent != want {
		t.Errorf("env defaults %+v\nDefaultConfig %+v", cfg.Agent, want)
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	_, err := config.LoadFrom(agentMainConfig{}, map[string]string{
		"AGENT_MAX_IN_FLIGHT":    "0",
		"AGENT_ACK_WAIT":         "10ms",
		"AGENT_COMMAND_TIMEOUT":  "0s",
		"AGENT_MAX_DELIVER":      "0",
		"AGENT_RETRY_BASE_DELAY": "2s",
		"AGENT_RETRY_MAX_DELAY":  "1s",
		"SHUTDOWN_TIMEOUT":       "0s",
	})
	if err == nil {
		t.Fatal("no error")
	}
	for _, v := range []string{"CONTROL_PLANE_RECIPIENT: required", "AGENT_MAX_IN_FLIGHT", "AGENT_ACK_WAIT", "AGENT_COMMAND_TIMEOUT", "AGENT_MAX_DELIVER", "AGENT_RETRY_MAX_DELAY", "SHUTDOWN_TIMEOUT"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error does not mention %s:\n%v", v, err)
		}
	}
	bad := DefaultConfig()
	bad.ControlPlaneRecipient = "age1notarecipient"
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "CONTROL_PLANE_RECIPIENT") {
		t.Errorf("invalid recipient accepted: %v", err)
	}
}
