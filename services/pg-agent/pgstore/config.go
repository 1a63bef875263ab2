package pgstore

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Config is pg-agent's PostgreSQL configuration, read from the environment
// (caarlos0/env tags; see pkg/config.Load).
type Config struct {
	// AdminURL is the admin connection URL (a role with CREATEROLE and
	// CREATEDB, normally a superuser). It holds the admin password, so it is
	// a secret.String and never printed.
	AdminURL secret.String `env:"PG_ADMIN_URL"`

	// PublicHost and PublicPort are what tenants connect to; they go into
	// the tenant's credential. Empty/0 means the admin URL's host and port.
	PublicHost string `env:"PG_PUBLIC_HOST"`
	PublicPort int    `env:"PG_PUBLIC_PORT"`

	// ConnectionLimit is each tenant role's CONNECTION LIMIT.
	ConnectionLimit int `env:"PG_CONNECTION_LIMIT" envDefault:"20"`

	// TenantCIDR is the address field of the rendered pg_hba.conf line: a
	// CIDR, or one of pg_hba's keywords all, samehost, samenet.
	TenantCIDR string `env:"PG_TENANT_CIDR" envDefault:"0.0.0.0/0"`

	// SSLMode is the sslmode of the tenant URL. The default, require, is
	// the only libpq mode that never sends anything in clear text and still
	// works without distributing a CA: it matches the hostssl line the
	// agent renders (prefer/allow would silently fall back to plain TCP,
	// which that line refuses anyway). Set verify-full when tenants have the
	// server's CA, or disable for a local server without TLS.
	SSLMode string `env:"PG_SSLMODE" envDefault:"require"`

	// AdminMaxConns bounds the admin connection pool. Each in-flight
	// Provision or Deprovision holds one pooled connection plus, briefly, one
	// connection into the tenant's database.
	AdminMaxConns int32 `env:"PG_ADMIN_MAX_CONNS" envDefault:"4"`

	// Timeout bounds every store call (Provision, Verify, Deprovision, Ping)
	// on top of the caller's context. A provision command is Provision plus
	// Verify inside the runtime's AGENT_COMMAND_TIMEOUT (90s by default), so
	// keep 2×Timeout below it.
	Timeout time.Duration `env:"PG_TIMEOUT" envDefault:"30s"`

	// ConnectTimeout bounds each connection attempt (admin and tenant).
	ConnectTimeout time.Duration `env:"PG_CONNECT_TIMEOUT" envDefault:"10s"`

	// KeepPublicConnect names databases on which the agent leaves PUBLIC's
	// CONNECT (and TEMPORARY) alone: a database every role, tenants
	// included, is meant to reach. On every other database (tenant
	// databases aside) the agent revokes them at start and before every
	// provision, and Verify fails if the tenant role can connect to any
	// database but its own and these. Empty (the default) closes them all;
	// roles that relied on PUBLIC's CONNECT need an explicit GRANT.
	KeepPublicConnect []string `env:"PG_KEEP_PUBLIC_CONNECT" envSeparator:","`
}

// Defaults returns the configuration the environment tags default to, with
// no admin URL.
func Defaults() Config {
	return Config{
		ConnectionLimit: 20,
		TenantCIDR:      "0.0.0.0/0",
		SSLMode:         "require",
		AdminMaxConns:   4,
		Timeout:         30 * time.Second,
		ConnectTimeout:  10 * time.Second,
	}
}

// sslModes are libpq's sslmode values.
var sslModes = []string{"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

// hbaKeywords are the address keywords pg_hba.conf accepts besides a CIDR.
var hbaKeywords = []string{"all", "samehost", "samenet"}

// maxConnectionLimit is a sanity bound: a tenant role with more connections
// than this is a configuration mistake, not a plan.
const maxConnectionLimit = 10000

// Validate reports every problem at once. Messages name the environment
// variable and never contain the admin URL or its password.
func (c *Config) Validate() error {
	var errs []error
	adminHost := ""
	if strings.TrimSpace(c.AdminURL.Reveal()) == "" {
		errs = append(errs, errors.New("PG_ADMIN_URL: required"))
	} else if cc, err := pgx.ParseConfig(c.AdminURL.Reveal()); err != nil {
		// pgx's parse errors redact the password, but they quote the rest
		// of the URL; say only what is wrong.
		errs = append(errs, errors.New("PG_ADMIN_URL: not a valid PostgreSQL connection string (postgres://user:password@host:port/database?sslmode=...)"))
	} else {
		adminHost = cc.Host
	}
	if c.PublicHost == "" && strings.HasPrefix(adminHost, "/") {
		errs = append(errs, fmt.Errorf("PG_PUBLIC_HOST: required when PG_ADMIN_URL connects through a Unix socket (%s)", adminHost))
	}
	if strings.ContainsAny(c.PublicHost, "/@?# \t\n") {
		errs = append(errs, fmt.Errorf("PG_PUBLIC_HOST: %q is not a host name or address", c.PublicHost))
	}
	if c.PublicPort < 0 || c.PublicPort > 65535 {
		errs = append(errs, fmt.Errorf("PG_PUBLIC_PORT: %d is not a TCP port", c.PublicPort))
	}
	if c.ConnectionLimit < 1 || c.ConnectionLimit > maxConnectionLimit {
		errs = append(errs, fmt.Errorf("PG_CONNECTION_LIMIT: %d, want 1..%d", c.ConnectionLimit, maxConnectionLimit))
	}
	if _, _, err := net.ParseCIDR(c.TenantCIDR); err != nil && !slices.Contains(hbaKeywords, c.TenantCIDR) {
		errs = append(errs, fmt.Errorf("PG_TENANT_CIDR: %q is neither a CIDR (10.0.0.0/8, ::/0) nor one of %s", c.TenantCIDR, strings.Join(hbaKeywords, ", ")))
	}
	if !slices.Contains(sslModes, c.SSLMode) {
		errs = append(errs, fmt.Errorf("PG_SSLMODE: %q, want one of %s", c.SSLMode, strings.Join(sslModes, ", ")))
	}
	if c.AdminMaxConns < 1 {
		errs = append(errs, fmt.Errorf("PG_ADMIN_MAX_CONNS: %d, want at least 1", c.AdminMaxConns))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("PG_TIMEOUT: %s must be positive", c.Timeout))
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, fmt.Errorf("PG_CONNECT_TIMEOUT: %s must be positive", c.ConnectTimeout))
	}
	for _, db := range c.KeepPublicConnect {
		switch db = strings.TrimSpace(db); {
		case db == "":
			errs = append(errs, errors.New("PG_KEEP_PUBLIC_CONNECT: empty database name"))
		case strings.HasPrefix(db, "tenant_"), strings.HasPrefix(db, "tenantprov"):
			errs = append(errs, fmt.Errorf("PG_KEEP_PUBLIC_CONNECT: %q is in tenantprov's namespace (tenant_…, tenantprov…)", db))
		}
	}
	return errors.Join(errs...)
}

// keepPublicConnect is KeepPublicConnect trimmed, never nil (it is bound
// as a text[] parameter).
func (c *Config) keepPublicConnect() []string {
	out := []string{}
	for _, db := range c.KeepPublicConnect {
		if db = strings.TrimSpace(db); db != "" {
			out = append(out, db)
		}
	}
	return out
}
