package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

func TestSanitizeText(t *testing.T) {
	pw := secret.String("Zk3vQ9xT1mB7pL2wR8nC4yH6jF0dS5aE_gU-oI1kV3q") // the shape of secret.Generate
	cases := []struct {
		name   string
		in     string
		leaks  []string // must not survive
		keeps  []string // must survive
		extras []secret.String
	}{
		{"known password verbatim", "auth failed for " + pw.Reveal() + " on tenant_acme",
			[]string{pw.Reveal()}, []string{"auth failed", "tenant_acme"}, []secret.String{pw}},
		{"fragment of known password in a truncated statement", `near "…` + pw.Reveal()[5:25] + `"`,
			[]string{pw.Reveal()[5:25]}, []string{"near"}, []secret.String{pw}},
		{"SQL PASSWORD literal", `ERROR: syntax error at or near "x" in ALTER ROLE "tenant_a" WITH LOGIN PASSWORD 'the-password' CONNECTION LIMIT 5`,
			[]string{"the-password"}, []string{"syntax error", `ALTER ROLE "tenant_a"`, "CONNECTION LIMIT 5"}, nil},
		{"SQL PASSWORD with escaped quote", `CREATE ROLE r PASSWORD 'it''s-secret' LOGIN`,
			[]string{"it''s-secret", "s-secret"}, []string{"CREATE ROLE r"}, nil},
		{"SQL PASSWORD unterminated", `statement: CREATE ROLE r ENCRYPTED PASSWORD 'half-a-secr`,
			[]string{"half-a-secr"}, []string{"CREATE ROLE r"}, nil},
		{"SCRAM verifier", `PASSWORD "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"`,
			[]string{"c2FsdA", "c3RvcmVk"}, nil, nil},
		{"md5 verifier", "rolpassword md5" + strings.Repeat("ab", 16),
			[]string{strings.Repeat("ab", 16)}, []string{"rolpassword"}, nil},
		{"URL with userinfo", "dial postgres://admin:hunter2@db:5432/x?sslmode=disable failed",
			[]string{"hunter2"}, []string{"postgres://admin:", "@db:5432/x", "failed"}, nil},
		{"redis URL with empty user", "redis://:s3cr3t@127.0.0.1:6379/0",
			[]string{"s3cr3t"}, []string{"127.0.0.1:6379"}, nil},
		{"DSN key/value", "failed to connect to `host=db user=admin password=hunter2 dbname=x`",
			[]string{"hunter2"}, []string{"host=db", "user=admin", "dbname=x"}, nil},
		{"JSON secret field", `{"access_key":"tenant-a","secret_key":"wJalrXUtnFEMI","api_key": "k-123"}`,
			[]string{"wJalrXUtnFEMI", "k-123"}, []string{"tenant-a"}, nil},
		{"bearer token", "401 Unauthorized (Authorization: Bearer abc.def.ghi)",
			[]string{"abc.def.ghi"}, []string{"401 Unauthorized"}, nil},
		{"bare bearer", "sent bearer tok_12345678",
			[]string{"tok_12345678"}, []string{"sent"}, nil},
		{"JWT", "token eyJhbGciOiJIUzI1NiJ9.eyJhY2Nlc3MiOiJydyJ9.sig_nature-x is expired",
			[]string{"eyJhbGciOiJIUzI1NiJ9", "eyJhY2Nlc3MiOiJydyJ9", "sig_nature-x"}, []string{"is expired"}, nil},
		{"redis ACL plaintext rule", "ERR Error in ACL SETUSER modifier '>p4ssw0rd!': Syntax error",
			[]string{"p4ssw0rd!"}, []string{"ACL SETUSER", "Syntax error"}, nil},
		{"redis ACL rules", "ACL SETUSER tenant_a reset on #" + strings.Repeat("0f", 32) + " <old-pass ~tenant:a:* +@all -@admin",
			[]string{strings.Repeat("0f", 32), "old-pass"}, []string{"ACL SETUSER tenant_a reset on", "~tenant:a:*", "+@all -@admin"}, nil},
		{"generated-looking word", "WRONGPASS for Zk3vQ9xT1mB7pL2wR8nC4yH6jF0dS5aE_gU-oI1kV3q",
			[]string{"Zk3vQ9xT1mB7pL2wR8nC4yH6jF0dS5aE_gU-oI1kV3q"}, []string{"WRONGPASS"}, nil},
		{"ordinary message untouched", `database "tenant_acme-corp" already exists; bucket tenant-acme-corp; prefix tenant:acme-corp:`,
			nil, []string{`database "tenant_acme-corp" already exists; bucket tenant-acme-corp; prefix tenant:acme-corp:`}, nil},
		{"comparison untouched", "expected x >= 5 and a -> b",
			nil, []string{"x >= 5"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := SanitizeText(tc.in, tc.extras...)
			for _, l := range tc.leaks {
				if strings.Contains(got, l) {
					t.Errorf("%q survived:\n in: %s\nout: %s", l, tc.in, got)
				}
			}
			for _, k := range tc.keeps {
				if !strings.Contains(got, k) {
					t.Errorf("%q was lost:\n in: %s\nout: %s", k, tc.in, got)
				}
			}
			if len(tc.leaks) > 0 && !strings.Contains(got, secret.Redacted) {
				t.Errorf("no %s marker in %s", secret.Redacted, got)
			}
		})
	}
}

func TestSanitizeErrorKeepsTheChain(t *testing.T) {
	base := Conflict("role tenant_acme (PASSWORD 'x-secret')")
	err := SanitizeError(fmt.Errorf("provision: %w", base))
	if strings.Contains(err.Error(), "x-secret") {
		t.Errorf("message not sanitised: %s", err)
	}
	if !errors.Is(err, ErrConflict) {
		t.Error("errors.Is(ErrConflict) lost")
	}
	var pe *PermanentError
	if !errors.As(err, &pe) || pe.Reason != events.ReasonConflict {
		t.Error("errors.As(*PermanentError) lost")
	}
	if p, r := Classify(err); !p || r != events.ReasonConflict {
		t.Errorf("Classify = %v %q", p, r)
	}
	if fmt.Sprintf("%+v", err) != err.Error() || fmt.Sprintf("%#v", err) == "" {
		t.Error("formatting must not reach the original message")
	}
	if strings.Contains(fmt.Sprintf("%+v %v %s", err, err, err), "x-secret") {
		t.Error("a formatting verb reveals the original message")
	}
	if SanitizeError(nil) != nil {
		t.Error("SanitizeError(nil) != nil")
	}
	if !errors.Is(SanitizeError(context.DeadlineExceeded), context.DeadlineExceeded) {
		t.Error("context errors must stay recognisable")
	}
}

// leakyStore puts its password into every text it returns.
type leakyStore struct{}

func (s leakyStore) Kind() events.Store { return events.StorePostgres }
func (s leakyStore) Provision(_ context.Context, req ProvisionRequest) (ProvisionResponse, error) {
	p := req.Password.Reveal()
	return ProvisionResponse{
			Resources:  map[string]string{"url": "postgres://u:" + p + "@h/db", "database": "tenant_acme"},
			Credential: Credential{"password": req.Password, "api_key": secret.String("other-secret-value")},
			Warnings:   []string{"set " + p, "and other-secret-value"},
		},
		errors.New("PASSWORD '" + p + "'")
}
func (s leakyStore) Verify(_ context.Context, req VerifyRequest) (VerifyResponse, error) {
	p := req.Credential.Secret("password").Reveal()
	return VerifyResponse{Checks: []events.Check{{Name: CheckOwnAccess, Detail: "logged in with " + p}}}, errors.New("verify " + p)
}
func (s leakyStore) Deprovision(context.Context, DeprovisionRequest) (DeprovisionResponse, error) {
	return DeprovisionResponse{Skipped: []string{"postgres://a:b-secret@h"}, Warnings: []string{"token=abcd1234"}}, errors.New("password=xyz987")
}
func (s leakyStore) Ping(context.Context) error { return errors.New("dial redis://:pingsecret@h") }

func TestSanitizingStore(t *testing.T) {
	ctx := context.Background()
	pw, _ := secret.Generate()
	st := Sanitize(leakyStore{})
	presp, err := st.Provision(ctx, ProvisionRequest{Tenant: "acme", Generation: 1, Password: pw})
	text := fmt.Sprint(err, presp.Resources, presp.Warnings)
	for _, leak := range []string{pw.Reveal(), "other-secret-value"} {
		if strings.Contains(text, leak) {
			t.Errorf("Provision leaks %q: %s", leak, text)
		}
	}
	if presp.Resources["database"] != "tenant_acme" {
		t.Errorf("resources mangled: %v", presp.Resources)
	}
	if presp.Credential.Secret("password") != pw {
		t.Error("the credential itself must pass through untouched")
	}
	vresp, err := st.Verify(ctx, VerifyRequest{Tenant: "acme", Credential: presp.Credential})
	if text := fmt.Sprint(err, vresp.Checks); strings.Contains(text, pw.Reveal()) {
		t.Errorf("Verify leaks: %s", text)
	}
	dresp, err := st.Deprovision(ctx, DeprovisionRequest{Tenant: "acme"})
	if text := fmt.Sprint(err, dresp.Skipped, dresp.Warnings); strings.Contains(text, "b-secret") || strings.Contains(text, "abcd1234") || strings.Contains(text, "xyz987") {
		t.Errorf("Deprovision leaks: %s", text)
	}
	if err := st.Ping(ctx); strings.Contains(err.Error(), "pingsecret") {
		t.Errorf("Ping leaks: %s", err)
	}
}

func TestSanitizeKeepsNamesInsideSecretURLs(t *testing.T) {
	pw := secret.String("Zq8xV3kLm9Pw2RtY7uIo0AsDf4GhJkL5zXcVbNm1QwE")
	url := secret.String("postgres://tenant_acme-corp:" + pw.Reveal() + "@127.0.0.1:5432/tenant_acme-corp")
	got := SanitizeText("database tenant_acme-corp owned by tenant_acme-corp; dsn "+url.Reveal(), pw, url)
	if strings.Contains(got, pw.Reveal()) {
		t.Fatalf("password leaked: %s", got)
	}
	if !strings.Contains(got, "database tenant_acme-corp owned by tenant_acme-corp") {
		t.Fatalf("resource names were redacted: %s", got)
	}
}
