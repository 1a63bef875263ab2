package agent

import (
	"context"
	"regexp"
	"strings"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// Sanitize returns a Store whose errors, and every other text it returns
// that is not a credential (resource names, warnings, check details,
// skipped resources), have secrets and secret-bearing statement text
// redacted (see SanitizeText). It is the agent's boundary: Run wraps every
// store with it, so nothing a driver says reaches a reply, a log line or
// /readyz unredacted. Errors keep their chain (errors.Is/As and Classify
// see the original), only their message text is rewritten.
func Sanitize(next Store) Store { return sanitizingStore{next: next} }

type sanitizingStore struct{ next Store }

var _ Store = sanitizingStore{}

func (s sanitizingStore) Kind() events.Store { return s.next.Kind() }

func (s sanitizingStore) Provision(ctx context.Context, req ProvisionRequest) (ProvisionResponse, error) {
	resp, err := s.next.Provision(ctx, req)
	secrets := append([]secret.String{req.Password}, credentialSecrets(resp.Credential)...)
	if resp.Resources != nil {
		res := make(map[string]string, len(resp.Resources))
		for k, v := range resp.Resources {
			res[k] = SanitizeText(v, secrets...)
		}
		resp.Resources = res
	}
	resp.Warnings = sanitizeAll(resp.Warnings, secrets)
	return resp, SanitizeError(err, secrets...)
}

func (s sanitizingStore) Verify(ctx context.Context, req VerifyRequest) (VerifyResponse, error) {
	resp, err := s.next.Verify(ctx, req)
	secrets := credentialSecrets(req.Credential)
	if resp.Checks != nil {
		checks := make([]events.Check, len(resp.Checks))
		for i, c := range resp.Checks {
			c.Detail = SanitizeText(c.Detail, secrets...)
			checks[i] = c
		}
		resp.Checks = checks
	}
	return resp, SanitizeError(err, secrets...)
}

func (s sanitizingStore) Deprovision(ctx context.Context, req DeprovisionRequest) (DeprovisionResponse, error) {
	resp, err := s.next.Deprovision(ctx, req)
	resp.Skipped = sanitizeAll(resp.Skipped, nil)
	resp.Warnings = sanitizeAll(resp.Warnings, nil)
	return resp, SanitizeError(err)
}

func (s sanitizingStore) Ping(ctx context.Context) error {
	return SanitizeError(s.next.Ping(ctx))
}

func sanitizeAll(in []string, secrets []secret.String) []string {
	if in == nil {
		return nil
	}
	out := make([]string, len(in))
	for i, v := range in {
		out[i] = SanitizeText(v, secrets...)
	}
	return out
}

// credentialSecrets returns every secret.String value of c.
func credentialSecrets(c Credential) []secret.String {
	var out []secret.String
	for _, v := range c {
		if s, ok := v.(secret.String); ok && !s.IsZero() {
			out = append(out, s)
		}
	}
	return out
}

// SanitizedError is an error whose message has been through SanitizeText.
// Error returns only the sanitised text; Unwrap returns the original error,
// so errors.Is, errors.As and Classify still see the cause. Never print an
// error obtained by unwrapping it.
type SanitizedError struct {
	msg   string
	cause error
}

// Error returns the sanitised message.
func (e *SanitizedError) Error() string { return e.msg }

// Unwrap returns the original error, for classification only.
func (e *SanitizedError) Unwrap() error { return e.cause }

// SanitizeError returns nil for nil, and otherwise a *SanitizedError whose
// message is SanitizeText(err.Error(), secrets...) and which unwraps to err.
func SanitizeError(err error, secrets ...secret.String) error {
	if err == nil {
		return nil
	}
	return &SanitizedError{msg: SanitizeText(err.Error(), secrets...), cause: err}
}

// minKnownSecret is the shortest known secret replaced verbatim; shorter
// ones would shred ordinary words (they are still caught by the patterns).
const minKnownSecret = 6

// fragmentLen is the length of a piece of a known secret that is enough to
// redact the word containing it: drivers quote truncated statements.
const fragmentLen = 12

var sanitizers = []struct {
	re   *regexp.Regexp
	repl string
}{
	// SQL: PASSWORD '…', ENCRYPTED PASSWORD '…', IDENTIFIED BY '…' (an
	// unterminated literal, as in a truncated statement, to the end).
	{regexp.MustCompile(`(?i)(\b(?:password|identified\s+by)\s+)(?:E?'(?:[^']|'')*(?:'|$)|"(?:[^"]|"")*(?:"|$))`), `${1}'` + secret.Redacted + `'`},
	// PostgreSQL verifiers: SCRAM-SHA-256$…, md5<32 hex>.
	{regexp.MustCompile(`SCRAM-SHA-256\$[^\s'"]+`), `SCRAM-SHA-256$` + secret.Redacted},
	{regexp.MustCompile(`\bmd5[0-9a-f]{32}\b`), secret.Redacted},
	// URLs with userinfo: scheme://user:pass@ → scheme://user:[REDACTED]@.
	{regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)([^\s/?#@:]*):([^\s/?#@]*)@`), `${1}${2}:` + secret.Redacted + `@`},
	// key=value and "key": "value" for secret-sounding keys (DSNs, JSON,
	// headers).
	{regexp.MustCompile(`(?i)(\b(?:password|passwd|pwd|secret|secret[_-]?key|secret[_-]?access[_-]?key|api[_-]?key|access[_-]?token|refresh[_-]?token|token|requirepass|masterauth)"?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s,;&"'}]+)`), `${1}` + secret.Redacted},
	// HTTP credentials.
	{regexp.MustCompile(`(?i)(\bauthorization\s*[:=]\s*)(?:[A-Za-z]+\s+)?[^\s,;"')\]}]+`), `${1}` + secret.Redacted},
	{regexp.MustCompile(`(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+`), `${1}` + secret.Redacted},
	// JWTs (header.payload.signature, header starting with {" in base64).
	{regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*`), secret.Redacted},
	// Redis ACL rules: >password, <password, #<sha256>, !<sha256>.
	{regexp.MustCompile(`(^|[\s'"(\[,=])([<>])[^\s'"\])=<>][^\s'"\])]*`), `${1}${2}` + secret.Redacted},
	{regexp.MustCompile(`([#!])[0-9a-fA-F]{64}\b`), `${1}` + secret.Redacted},
}

// SanitizeText redacts, as [REDACTED]:
//   - every known secret given (the request's password, the credential's
//     secret values), and any word containing a 12-character piece of one;
//   - SQL password literals (PASSWORD '…', IDENTIFIED BY '…') and
//     PostgreSQL password verifiers (SCRAM-SHA-256$…, md5…);
//   - the password of URLs with userinfo (scheme://user:pass@);
//   - values of secret-sounding keys (password=…, "api_key": "…", token:…);
//   - Authorization headers, Bearer tokens and JWT-looking tokens;
//   - Redis ACL password rules (>pass, <pass, #hash, !hash);
//   - any 43-character URL-safe base64 word of mixed case, the shape of
//     secret.Generate's output.
//
// It may redact more than a secret; it never returns a known secret.
func SanitizeText(s string, secrets ...secret.String) string {
	if s == "" {
		return s
	}
	for _, sec := range secrets {
		if v := sec.Reveal(); len(v) >= minKnownSecret {
			s = strings.ReplaceAll(s, v, secret.Redacted)
		}
	}
	for _, p := range sanitizers {
		s = p.re.ReplaceAllString(s, p.repl)
	}
	return redactWords(s, secrets)
}

// redactWords redacts every maximal run of URL-safe base64 characters that
// contains a fragment of a known secret or has the shape of a generated
// credential.
func redactWords(s string, secrets []secret.String) string {
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); {
		if !isWordByte(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isWordByte(s[j]) {
			j++
		}
		if w := s[i:j]; looksGenerated(w) || containsFragment(w, secrets) {
			b.WriteString(s[last:i])
			b.WriteString(secret.Redacted)
			last = j
		}
		i = j
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// looksGenerated reports whether w has the shape of secret.Generate's
// output: 43 URL-safe base64 characters with upper and lower case letters
// (identifiers derived from tenant IDs are lower case).
func looksGenerated(w string) bool {
	if len(w) != 43 {
		return false
	}
	return strings.ContainsAny(w, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") && strings.ContainsAny(w, "abcdefghijklmnopqrstuvwxyz")
}

func containsFragment(w string, secrets []secret.String) bool {
	if len(w) < fragmentLen {
		return false
	}
	for _, sec := range secrets {
		v := sec.Reveal()
		if len(v) < fragmentLen || strings.Contains(v, "://") {
			// A connection URL is a secret as a whole, but most of it
			// (user, host, database) is not: matching its fragments would
			// redact the tenant's resource names. Its password is a
			// secret of its own and is matched on its own.
			continue
		}
		for i := 0; i+fragmentLen <= len(w); i++ {
			if strings.Contains(v, w[i:i+fragmentLen]) {
				return true
			}
		}
	}
	return false
}
