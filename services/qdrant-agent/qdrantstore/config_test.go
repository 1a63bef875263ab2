package qdrantstore

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/config"
)

func TestConfigFromEnvironment(t *testing.T) {
	cfg, err := config.LoadFrom(Config{}, map[string]string{"QDRANT_API_KEY": "k3y-value"})
	if err != nil {
		t.Fatalf("defaults with an API key: %v", err)
	}
	want := DefaultConfig()
	want.APIKey = "k3y-value"
	if cfg != want {
		t.Fatalf("loaded %+v\nwant   %+v", cfg, want)
	}
	if s := fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg); strings.Contains(s, "k3y-value") {
		t.Fatal("the API key shows when the configuration is printed")
	}

	cfg, err = config.LoadFrom(Config{}, map[string]string{
		"QDRANT_API_KEY": "k", "QDRANT_HOST": "qdrant.internal", "QDRANT_GRPC_PORT": "16334", "QDRANT_USE_TLS": "true",
		"QDRANT_PUBLIC_HOST": "qdrant.example.com", "QDRANT_PUBLIC_GRPC_PORT": "443", "QDRANT_VECTOR_SIZE": "1536",
		"QDRANT_DISTANCE": "dot", "QDRANT_TOKEN_TTL": "720h", "QDRANT_ISOLATION": "application",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "qdrant.internal" || cfg.GRPCPort != 16334 || !cfg.UseTLS || cfg.VectorSize != 1536 || cfg.Distance != "dot" ||
		cfg.TokenTTL != 720*time.Hour || cfg.Isolation != IsolationApplication {
		t.Fatalf("loaded %+v", cfg)
	}
	if h, p := cfg.publicEndpoint(); h != "qdrant.example.com" || p != 443 {
		t.Fatalf("public endpoint %s:%d", h, p)
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	_, err := config.LoadFrom(Config{}, map[string]string{
		"QDRANT_HOST": " ", "QDRANT_GRPC_PORT": "0", "QDRANT_PUBLIC_GRPC_PORT": "70000", "QDRANT_VECTOR_SIZE": "0",
		"QDRANT_DISTANCE": "hamming", "QDRANT_TOKEN_TTL": "10s", "QDRANT_ISOLATION": "none", "QDRANT_CALL_TIMEOUT": "0s",
	})
	if err == nil {
		t.Fatal("invalid configuration accepted")
	}
	for _, v := range []string{"QDRANT_HOST", "QDRANT_GRPC_PORT", "QDRANT_API_KEY", "QDRANT_PUBLIC_GRPC_PORT", "QDRANT_VECTOR_SIZE",
		"QDRANT_DISTANCE", "QDRANT_TOKEN_TTL", "QDRANT_ISOLATION", "QDRANT_CALL_TIMEOUT"} {
		if !strings.Contains(err.Error(), v+":") {
			t.Errorf("error does not name %s:\n%v", v, err)
		}
	}
}

func TestPublicEndpointDefaultsToAgentEndpoint(t *testing.T) {
	cfg := DefaultConfig()
	if h, p := cfg.publicEndpoint(); h != cfg.Host || p != cfg.GRPCPort {
		t.Fatalf("public endpoint %s:%d", h, p)
	}
}
