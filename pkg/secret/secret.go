// Package secret holds tenant credentials in memory: a string type that
// redacts itself wherever it could be printed or serialised, the credential
// generator, and age sealing — the only form in which a credential leaves an
// agent (DESIGN.md §6).
package secret

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
)

// Redacted is what a String shows instead of its value.
const Redacted = "[REDACTED]"

// String is a secret value. It prints, formats, marshals (JSON, text) and
// logs (slog, zap via JSON) as "[REDACTED]"; only Reveal returns the value.
// Keep secrets in this type from the moment they exist.
type String string

// Reveal returns the secret value. Call it only where the value must reach
// a store driver or the sealer, never for logs or errors.
func (s String) Reveal() string { return string(s) }

// IsZero reports whether the secret is empty.
func (s String) IsZero() bool { return s == "" }

// String implements fmt.Stringer.
func (s String) String() string { return Redacted }

// GoString implements fmt.GoStringer (the %#v verb).
func (s String) GoString() string { return `secret.String("` + Redacted + `")` }

// Format implements fmt.Formatter so that every verb (%s %v %q %x %d …)
// redacts.
func (s String) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		_, _ = f.Write([]byte(s.GoString()))
		return
	}
	_, _ = f.Write([]byte(Redacted))
}

// MarshalJSON implements json.Marshaler.
func (s String) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler (YAML, XML, map keys).
func (s String) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// LogValue implements slog.LogValuer.
func (s String) LogValue() slog.Value { return slog.StringValue(Redacted) }

// GeneratedBytes is the entropy of a generated credential.
const GeneratedBytes = 32

// Generate returns a fresh credential: 32 bytes from crypto/rand, URL-safe
// base64 without padding (43 characters), so it needs no escaping in URLs,
// ACL rules or env files.
func Generate() (String, error) {
	b := make([]byte, GeneratedBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate credential: %w", err)
	}
	return String(base64.RawURLEncoding.EncodeToString(b)), nil
}
