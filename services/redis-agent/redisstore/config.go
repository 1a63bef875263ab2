package redisstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Config is how the agent reaches Redis, read from the environment
// (pkg/config).
type Config struct {
	// Addr is the host:port the agent connects to as admin (and from which
	// it verifies tenant credentials). Required.
	Addr string `env:"REDIS_ADDR"`
	// AdminUser is the ACL user the agent acts as. It needs ACL SETUSER,
	// GETUSER, DELUSER and SAVE, CLIENT KILL, SCAN, UNLINK, and read/write on
	// the tenantprov:* and tenant:* keys. Empty means Redis's "default" user
	// (AUTH with the password only).
	AdminUser string `env:"REDIS_ADMIN_USER"`
	// AdminPassword is AdminUser's password.
	AdminPassword secret.String `env:"REDIS_ADMIN_PASSWORD"`
	// PublicAddr is the host:port tenants' applications connect to, written
	// into their credential. Empty means Addr.
	PublicAddr string `env:"REDIS_PUBLIC_ADDR"`
	// TLS makes the agent connect with TLS (the credential's addr then
	// needs TLS too).
	TLS bool `env:"REDIS_TLS"`
	// TLSCAFile is a PEM bundle of CAs trusted for the server certificate;
	// empty means the system roots. Setting it implies TLS.
	TLSCAFile string `env:"REDIS_TLS_CA_FILE"`
	// TenantScripting is the stance on tenants' Lua scripts: deny (the
	// default; also when empty), readonly or allow. See Scripting.
	TenantScripting Scripting `env:"REDIS_TENANT_SCRIPTING" envDefault:"deny"`
	// ScriptKillAfter is how long the script watchdog lets the server answer
	// BUSY (a script has run past busy-reply-threshold) before it runs
	// SCRIPT KILL. Used only when TenantScripting lets tenants run scripts;
	// zero means DefaultScriptKillAfter.
	ScriptKillAfter time.Duration `env:"REDIS_SCRIPT_KILL_AFTER" envDefault:"1s"`
	// ScriptWatchdogInterval is how often the watchdog looks; zero means
	// DefaultScriptWatchdogInterval.
	ScriptWatchdogInterval time.Duration `env:"REDIS_SCRIPT_WATCHDOG_INTERVAL" envDefault:"250ms"`
	// TrustedUsers are ACL users, besides AdminUser, that may reach every
	// tenant's keys and channels (an operator's superuser, a backup user).
	// Verify's inward check fails for any other user whose key or channel
	// patterns could match a tenant's prefix. Comma-separated.
	TrustedUsers []string `env:"REDIS_TRUSTED_USERS"`
}

// Defaults of the script watchdog.
const (
	DefaultScriptKillAfter        = time.Second
	DefaultScriptWatchdogInterval = 250 * time.Millisecond
)

// Validate reports every configuration problem at once.
func (c *Config) Validate() error {
	var errs []error
	if strings.TrimSpace(c.Addr) == "" {
		errs = append(errs, errors.New("REDIS_ADDR: required"))
	} else if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("REDIS_ADDR: %q is not host:port: %w", c.Addr, err))
	}
	if c.PublicAddr != "" {
		if _, _, err := net.SplitHostPort(c.PublicAddr); err != nil {
			errs = append(errs, fmt.Errorf("REDIS_PUBLIC_ADDR: %q is not host:port: %w", c.PublicAddr, err))
		}
	}
	if c.AdminPassword.IsZero() {
		errs = append(errs, errors.New("REDIS_ADMIN_PASSWORD: required (the agent never runs against a Redis without authentication)"))
	}
	if !c.TenantScripting.valid() {
		errs = append(errs, fmt.Errorf("REDIS_TENANT_SCRIPTING: %q is not deny, readonly or allow", c.TenantScripting))
	}
	if c.ScriptKillAfter < 0 {
		errs = append(errs, fmt.Errorf("REDIS_SCRIPT_KILL_AFTER: %s is negative", c.ScriptKillAfter))
	}
	if c.ScriptWatchdogInterval < 0 {
		errs = append(errs, fmt.Errorf("REDIS_SCRIPT_WATCHDOG_INTERVAL: %s is negative", c.ScriptWatchdogInterval))
	}
	if c.TLSCAFile != "" {
		if _, err := c.tlsConfig(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// TenantAddr is the address written into tenants' credentials.
func (c *Config) TenantAddr() string {
	if c.PublicAddr != "" {
		return c.PublicAddr
	}
	return c.Addr
}

// adminUser is the ACL user name the agent acts as.
func (c *Config) adminUser() string {
	if c.AdminUser == "" {
		return "default"
	}
	return c.AdminUser
}

// tlsConfig returns nil when TLS is off.
func (c *Config) tlsConfig() (*tls.Config, error) {
	if !c.TLS && c.TLSCAFile == "" {
		return nil, nil
	}
	host, _, _ := net.SplitHostPort(c.Addr)
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if c.TLSCAFile != "" {
		pem, err := os.ReadFile(c.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("REDIS_TLS_CA_FILE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("REDIS_TLS_CA_FILE: %s holds no PEM certificate", c.TLSCAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}
