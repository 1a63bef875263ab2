package qdrantstore

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/qdrant/go-client/qdrant"

	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Isolation modes, as recorded in ProvisionResponse.IsolationMode and the
// "isolation_mode" resource.
const (
	// IsolationJWTRBAC: each tenant holds a JWT that Qdrant itself confines
	// to the tenant's collection (Qdrant's JWT RBAC). The default, and the
	// only mode in which the isolation checks mean anything.
	IsolationJWTRBAC = "jwt_rbac"
	// IsolationApplication: the server cannot confine a credential to one
	// collection, so no per-tenant credential exists and isolation is left
	// to the application in front of Qdrant. Used only when configured
	// explicitly (QDRANT_ISOLATION=application) and the server does not
	// enforce JWT RBAC.
	IsolationApplication = "application"
)

// Config is the qdrant-agent's store configuration, read from the
// environment (caarlos0/env tags). Start from DefaultConfig when building
// one in code.
type Config struct {
	// Host and GRPCPort address the gRPC API of Qdrant as the agent reaches
	// it.
	Host     string `env:"QDRANT_HOST" envDefault:"127.0.0.1"`
	GRPCPort int    `env:"QDRANT_GRPC_PORT" envDefault:"6334"`
	// APIKey is the server's admin API key. It is also the HS256 secret
	// Qdrant verifies tenant JWTs with, so it signs them. Required.
	APIKey secret.String `env:"QDRANT_API_KEY"`
	// UseTLS connects with TLS (system roots, TLS 1.3). Without it the API
	// key travels in plain text: acceptable on loopback only.
	UseTLS bool `env:"QDRANT_USE_TLS"`
	// PublicHost and PublicGRPCPort are the endpoint written into tenant
	// credentials, when tenants reach Qdrant by another address than the
	// agent does; empty or 0 means Host and GRPCPort.
	PublicHost     string `env:"QDRANT_PUBLIC_HOST"`
	PublicGRPCPort int    `env:"QDRANT_PUBLIC_GRPC_PORT"`
	// VectorSize and Distance configure every tenant collection's single
	// dense vector. Distance is cosine, dot, euclid or manhattan.
	VectorSize uint64 `env:"QDRANT_VECTOR_SIZE" envDefault:"768"`
	Distance   string `env:"QDRANT_DISTANCE" envDefault:"cosine"`
	// TokenTTL is the lifetime (exp claim) of a tenant JWT. Tokens are
	// long-lived credentials; revocation works at once through the
	// value_exists claim, so exp is a backstop, but it is always set.
	TokenTTL time.Duration `env:"QDRANT_TOKEN_TTL" envDefault:"8760h"`
	// ExpiryWarning is how long before a tenant JWT's exp Observe starts
	// reporting it (drift kind "credential_expiring"), so that it is
	// rotated in time. Zero means TokenTTL/12 (a month of a year). It
	// must be shorter than TokenTTL, or every fresh token would be
	// reported.
	ExpiryWarning time.Duration `env:"QDRANT_TOKEN_EXPIRY_WARNING"`
	// Isolation is IsolationJWTRBAC (default: refuse to provision on a
	// server that does not enforce JWT RBAC) or IsolationApplication (an
	// explicit opt-in to provision without per-tenant credentials on such a
	// server; a server that does enforce JWT RBAC still gets JWTs).
	Isolation string `env:"QDRANT_ISOLATION" envDefault:"jwt_rbac"`
	// CallTimeout bounds each Store call (Provision, Verify, Deprovision,
	// Ping) in addition to the caller's own deadline.
	CallTimeout time.Duration `env:"QDRANT_CALL_TIMEOUT" envDefault:"30s"`
}

// DefaultConfig returns the defaults the environment tags declare; APIKey
// is left empty and must be set.
func DefaultConfig() Config {
	return Config{
		Host:        "127.0.0.1",
		GRPCPort:    6334,
		VectorSize:  768,
		Distance:    "cosine",
		TokenTTL:    365 * 24 * time.Hour,
		Isolation:   IsolationJWTRBAC,
		CallTimeout: 30 * time.Second,
	}
}

// maxVectorSize is Qdrant's limit on a dense vector's dimension.
const maxVectorSize = 65536

// Validate reports every problem with the configuration at once.
func (c *Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Host) == "" {
		errs = append(errs, errors.New("QDRANT_HOST: required"))
	}
	if c.GRPCPort < 1 || c.GRPCPort > 65535 {
		errs = append(errs, fmt.Errorf("QDRANT_GRPC_PORT: %d is not a port (1–65535)", c.GRPCPort))
	}
	if c.APIKey.IsZero() {
		errs = append(errs, errors.New("QDRANT_API_KEY: required (the server's API key; it also signs tenant JWTs)"))
	}
	if c.PublicGRPCPort < 0 || c.PublicGRPCPort > 65535 {
		errs = append(errs, fmt.Errorf("QDRANT_PUBLIC_GRPC_PORT: %d is not a port (1–65535, or 0 for QDRANT_GRPC_PORT)", c.PublicGRPCPort))
	}
	if c.VectorSize < 1 || c.VectorSize > maxVectorSize {
		errs = append(errs, fmt.Errorf("QDRANT_VECTOR_SIZE: %d, want 1–%d", c.VectorSize, maxVectorSize))
	}
	if _, err := parseDistance(c.Distance); err != nil {
		errs = append(errs, fmt.Errorf("QDRANT_DISTANCE: %w", err))
	}
	if c.TokenTTL < time.Minute {
		errs = append(errs, fmt.Errorf("QDRANT_TOKEN_TTL: %s, want at least 1m (tokens always expire; revocation is by value_exists)", c.TokenTTL))
	}
	if c.ExpiryWarning < 0 || (c.ExpiryWarning > 0 && c.ExpiryWarning >= c.TokenTTL) {
		errs = append(errs, fmt.Errorf("QDRANT_TOKEN_EXPIRY_WARNING: %s, want at least 0 and less than QDRANT_TOKEN_TTL (%s)", c.ExpiryWarning, c.TokenTTL))
	}
	if c.Isolation != IsolationJWTRBAC && c.Isolation != IsolationApplication {
		errs = append(errs, fmt.Errorf("QDRANT_ISOLATION: %q, want %q or %q", c.Isolation, IsolationJWTRBAC, IsolationApplication))
	}
	if c.CallTimeout <= 0 {
		errs = append(errs, fmt.Errorf("QDRANT_CALL_TIMEOUT: %s must be positive", c.CallTimeout))
	}
	return errors.Join(errs...)
}

// expiryWarning is the effective ExpiryWarning.
func (c *Config) expiryWarning() time.Duration {
	if c.ExpiryWarning > 0 {
		return c.ExpiryWarning
	}
	return c.TokenTTL / 12
}

// publicEndpoint is the host and port written into tenant credentials.
func (c *Config) publicEndpoint() (string, int) {
	host, port := c.PublicHost, c.PublicGRPCPort
	if host == "" {
		host = c.Host
	}
	if port == 0 {
		port = c.GRPCPort
	}
	return host, port
}

func parseDistance(s string) (qdrant.Distance, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "cosine":
		return qdrant.Distance_Cosine, nil
	case "dot":
		return qdrant.Distance_Dot, nil
	case "euclid", "euclidean":
		return qdrant.Distance_Euclid, nil
	case "manhattan":
		return qdrant.Distance_Manhattan, nil
	}
	return 0, fmt.Errorf("%q, want cosine, dot, euclid or manhattan", s)
}
