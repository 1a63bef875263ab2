package miniostore

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"

	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Config is how the agent reaches MinIO and what it gives tenants. Load it
// with config.Load (env tags); Validate reports every problem at once.
type Config struct {
	// Endpoint is the MinIO S3/admin API the agent uses, host:port without
	// a scheme. Required.
	Endpoint string `env:"MINIO_ENDPOINT"`
	// RootUser and RootPassword are the admin credential (the root user or
	// one with the IAM and bucket rights Provision needs). Required.
	RootUser     string        `env:"MINIO_ROOT_USER"`
	RootPassword secret.String `env:"MINIO_ROOT_PASSWORD"`
	// Secure selects HTTPS for Endpoint.
	Secure bool `env:"MINIO_SECURE"`
	// PublicEndpoint is the host:port tenants' applications use; it goes
	// into the tenant's credential. Default: Endpoint.
	PublicEndpoint string `env:"MINIO_PUBLIC_ENDPOINT"`
	// PublicSecure is whether tenants reach PublicEndpoint over HTTPS:
	// "true" or "false". Default: Secure.
	PublicSecure string `env:"MINIO_PUBLIC_SECURE"`
	// BucketQuota is an optional hard quota set on every tenant bucket, in
	// bytes or with a unit ("10GiB", "500MB"). Zero means none.
	BucketQuota ByteSize `env:"MINIO_BUCKET_QUOTA"`
}

// ByteSize is a size in bytes that parses "1073741824", "10GiB" or "500 MB"
// (go-humanize units: SI and IEC).
type ByteSize uint64

// UnmarshalText implements encoding.TextUnmarshaler (caarlos0/env uses it).
func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	if s == "" {
		*b = 0
		return nil
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return fmt.Errorf("%q is not a size (bytes, or a number with a unit such as 10GiB): %w", s, err)
	}
	*b = ByteSize(n)
	return nil
}

// String renders the size with an IEC unit ("10 GiB").
func (b ByteSize) String() string { return humanize.IBytes(uint64(b)) }

// Validate reports every problem with the configuration, each naming the
// environment variable to fix.
func (c *Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Endpoint) == "" {
		errs = append(errs, errors.New("MINIO_ENDPOINT: required (host:port of the MinIO API)"))
	} else if err := checkHostPort(c.Endpoint); err != nil {
		errs = append(errs, fmt.Errorf("MINIO_ENDPOINT: %w", err))
	}
	if strings.TrimSpace(c.RootUser) == "" {
		errs = append(errs, errors.New("MINIO_ROOT_USER: required"))
	}
	if c.RootPassword.IsZero() {
		errs = append(errs, errors.New("MINIO_ROOT_PASSWORD: required"))
	}
	if c.PublicEndpoint != "" {
		if err := checkHostPort(c.PublicEndpoint); err != nil {
			errs = append(errs, fmt.Errorf("MINIO_PUBLIC_ENDPOINT: %w", err))
		}
	}
	if c.PublicSecure != "" {
		if _, err := strconv.ParseBool(c.PublicSecure); err != nil {
			errs = append(errs, fmt.Errorf("MINIO_PUBLIC_SECURE: %q, want true or false", c.PublicSecure))
		}
	}
	return errors.Join(errs...)
}

// publicEndpoint is what goes into the tenant's credential.
func (c *Config) publicEndpoint() (endpoint string, secure bool) {
	endpoint, secure = c.PublicEndpoint, c.Secure
	if endpoint == "" {
		endpoint = c.Endpoint
	}
	if b, err := strconv.ParseBool(c.PublicSecure); err == nil {
		secure = b
	}
	return endpoint, secure
}

func checkHostPort(s string) error {
	if strings.Contains(s, "://") || strings.Contains(s, "/") {
		return fmt.Errorf("%q must be host:port without a scheme or path", s)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%q: port %q is not 1–65535", s, port)
	}
	return nil
}
