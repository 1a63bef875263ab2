package miniostore

import (
	"bytes"
	"strings"
	"testing"

	"github.com/minio/madmin-go/v3"

	"github.com/tenantprov/tenantprov/pkg/secret"
)

// TestSealAdminPayload: what the fast AddUser sends is what madmin's own
// decryption (the code the server runs) opens, tagged as PBKDF2/AES-GCM.
func TestSealAdminPayload(t *testing.T) {
	data := []byte(`{"secretKey":"x","status":"enabled"}`)
	sealed, err := sealAdminPayload("root-password", data)
	if err != nil {
		t.Fatal(err)
	}
	if !madmin.IsEncrypted(sealed) || sealed[payloadSaltLen] != payloadPBKDF2AESGCM {
		t.Fatalf("header: %x", sealed[:payloadSaltLen+1])
	}
	got, err := madmin.DecryptData("root-password", bytes.NewReader(sealed))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("DecryptData = %q, %v", got, err)
	}
	if _, err := madmin.DecryptData("wrong-password", bytes.NewReader(sealed)); err == nil {
		t.Fatal("opened with the wrong password")
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Endpoint: "127.0.0.1:9000", RootUser: "admin", RootPassword: "pw"}
	cases := []struct {
		name string
		edit func(*Config)
		want []string // substrings of the error; none means valid
	}{
		{"valid", func(*Config) {}, nil},
		{"valid with public endpoint", func(c *Config) { c.PublicEndpoint, c.PublicSecure = "s3.example.com:443", "true" }, nil},
		{"empty", func(c *Config) { *c = Config{} }, []string{"MINIO_ENDPOINT", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}},
		{"scheme", func(c *Config) { c.Endpoint = "http://minio:9000" }, []string{"MINIO_ENDPOINT", "scheme"}},
		{"no port", func(c *Config) { c.Endpoint = "minio" }, []string{"MINIO_ENDPOINT"}},
		{"bad port", func(c *Config) { c.Endpoint = "minio:99999" }, []string{"MINIO_ENDPOINT"}},
		{"public", func(c *Config) { c.PublicEndpoint, c.PublicSecure = ":80", "yes please" }, []string{"MINIO_PUBLIC_ENDPOINT", "MINIO_PUBLIC_SECURE"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v does not mention %s", err, w)
				}
			}
		})
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New accepted an empty configuration")
	}
}

func TestPublicEndpoint(t *testing.T) {
	c := Config{Endpoint: "10.0.0.5:9000", Secure: false}
	if e, s := c.publicEndpoint(); e != "10.0.0.5:9000" || s {
		t.Errorf("defaults: %s %v", e, s)
	}
	c.PublicEndpoint, c.PublicSecure = "s3.example.com:443", "true"
	if e, s := c.publicEndpoint(); e != "s3.example.com:443" || !s {
		t.Errorf("public: %s %v", e, s)
	}
	c.Secure, c.PublicSecure = true, ""
	if _, s := c.publicEndpoint(); !s {
		t.Error("PublicSecure does not default to Secure")
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"": 0, "1048576": 1 << 20, "10GiB": 10 << 30, "500 MB": 500e6, "1KiB": 1024} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err != nil || b != want {
			t.Errorf("%q: %d, %v; want %d", in, b, err, want)
		}
	}
	var b ByteSize
	if err := b.UnmarshalText([]byte("lots")); err == nil {
		t.Error("accepted \"lots\"")
	}
	if s := ByteSize(10 << 30).String(); s != "10 GiB" {
		t.Errorf("String = %q", s)
	}
}

func TestTamper(t *testing.T) {
	for _, k := range []secret.String{"abcdefgh", "abcdefgA"} {
		w := tamper(k)
		if w == k || len(w.Reveal()) != len(k.Reveal()) || w.Reveal()[:7] != k.Reveal()[:7] {
			t.Errorf("tamper(%s) = %s", k.Reveal(), w.Reveal())
		}
	}
}

func TestGrantsBucket(t *testing.T) {
	const arn = "arn:aws:s3:::tenant-acme"
	doc := func(stmt string) policyDocument {
		d, err := parsePolicy([]byte(`{"Version":"2012-10-17","Statement":[` + stmt + `]}`))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for _, tc := range []struct {
		stmt string
		want bool
	}{
		{`{"Effect":"Allow","Action":["s3:*"],"Resource":["arn:aws:s3:::*"]}`, true},
		{`{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::tenant-*"}`, true},
		{`{"Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::tenant-acme/secret/*"]}`, true},
		{`{"Effect":"Allow","Action":["s3:ListBucket"],"Resource":["arn:aws:s3:::tenant-acme"]}`, true},
		{`{"Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::tenant-ac?e/*"]}`, true},
		{`{"Effect":"Allow","Action":["*"],"Resource":["*"]}`, true},
		{`{"Effect":"Allow","NotAction":["s3:DeleteObject"],"Resource":["arn:aws:s3:::tenant-acme/*"]}`, true},
		{`{"Effect":"Allow","Action":["s3:GetObject"],"NotResource":["arn:aws:s3:::other/*"]}`, true},
		{`{"Effect":"Allow","Action":["s3:*"],"Resource":["arn:aws:s3:::tenant-acme2/*"]}`, false},
		{`{"Effect":"Allow","Action":["s3:*"],"Resource":["arn:aws:s3:::tenant-acme-x","arn:aws:s3:::tenant-acmex/*"]}`, false},
		{`{"Effect":"Allow","Action":["s3:*"],"Resource":["arn:aws:s3:::tenant-ac"]}`, false},
		{`{"Effect":"Deny","Action":["s3:*"],"Resource":["arn:aws:s3:::*"]}`, false},
		{`{"Effect":"Allow","Action":["admin:*"]}`, false},
		{`{"Effect":"Allow","Action":["kms:*"],"Resource":["*"]}`, false},
	} {
		if got := grantsBucket(doc(tc.stmt), arn, anyone); got != tc.want {
			t.Errorf("grantsBucket(%s) = %v, want %v", tc.stmt, got, tc.want)
		}
	}
	if other, err := parsePolicy(legacyPolicy("other")); err != nil || grantsBucket(other, arn, anyone) {
		t.Error("another tenant's legacy policy grants tenant-acme")
	}
	// The shared tenant policy reaches tenant-acme for its user only.
	shared, err := parsePolicy(TenantPolicy())
	if err != nil || !shared.variables {
		t.Fatalf("TenantPolicy: variables %v, err %v", shared.variables, err)
	}
	for user, want := range map[string]bool{"tenant-acme": true, "tenant-other": false, "tenant-acme-x": false, "tenant-*": true, anyone: true} {
		if got := grantsBucket(shared, arn, user); got != want {
			t.Errorf("TenantPolicy for user %q grants tenant-acme: %v, want %v", user, got, want)
		}
	}
}

// TestGrantsBucketWithVariables: policy variables in a resource are
// substituted before matching, as MinIO does — ${aws:username} by the
// user's name when it is one known name, everything else by "*" — and the
// result matched with its wildcards.
func TestGrantsBucketWithVariables(t *testing.T) {
	const arn = "arn:aws:s3:::tenant-zzz"
	doc := func(resources string) policyDocument {
		d, err := parsePolicy([]byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:*"],"Resource":` + resources + `}]}`))
		if err != nil {
			t.Fatal(err)
		}
		if !d.variables {
			t.Fatalf("parsePolicy(%s) did not see the variables", resources)
		}
		return d
	}
	const (
		perTenant = `["arn:aws:s3:::tenant-${aws:username}","arn:aws:s3:::tenant-${aws:username}/*"]`
		perUser   = `["arn:aws:s3:::${aws:username}","arn:aws:s3:::${aws:username}/*"]`
	)
	for _, tc := range []struct {
		name      string
		resources string
		user      string // the attached user; "" a group
		want      bool
	}{
		{"per tenant, user zzz", perTenant, "zzz", true},
		{"per tenant, user zz", perTenant, "zz", false},
		{"per tenant, user zzzz", perTenant, "zzzz", false},
		{"per tenant, user alice", perTenant, "alice", false},
		{"per tenant, a group", perTenant, "", true},
		{"per tenant, user z*", perTenant, "z*", true},
		{"per tenant, user ?zz", perTenant, "?zz", true},
		{"per user, user tenant-zzz", perUser, "tenant-zzz", true},
		{"per user, user tenant-*", perUser, "tenant-*", true},
		{"per user, user tenant-?zz", perUser, "tenant-?zz", true},
		{"per user, user *", perUser, "*", true},
		{"per user, user alice", perUser, "alice", false},
		{"per user, user tenant-zz", perUser, "tenant-zz", false},
		{"per user, user tenant-zzz-backup", perUser, "tenant-zzz-backup", false},
		{"per user, a group", perUser, "", true},
		{"per user objects only, user tenant-zzz", `["arn:aws:s3:::${aws:username}/private/*"]`, "tenant-zzz", true},
		{"LDAP DN", perTenant, "uid=zzz,ou=people,dc=example,dc=org", true},
		{"LDAP DN, per user", perUser, "cn=alice,dc=example,dc=org", true},
		{"name with $", perUser, "alice$", true},
		{"another variable", `["arn:aws:s3:::tenant-${aws:userid}/*"]`, "alice", true},
		{"jwt variable", `["arn:aws:s3:::${jwt:sub}"]`, "alice", true},
		{"misspelt variable", `["arn:aws:s3:::tenant-${aws:UserName}"]`, "alice", true},
		{"another variable, other prefix", `["arn:aws:s3:::home-${aws:userid}/*"]`, "alice", false},
		{"variable and literal", `["arn:aws:s3:::${aws:username}-tenant-zzz"]`, "alice", false},
		{"variable and literal, wildcard name", `["arn:aws:s3:::${aws:username}tenant-zzz"]`, "*", true},
		{"unterminated, literal as on MinIO", `["arn:aws:s3:::tenant-${aws:username"]`, "zzz", false},
	} {
		user := requestUsername(tc.user)
		if got := grantsBucket(doc(tc.resources), arn, user); got != tc.want {
			t.Errorf("%s: grantsBucket(%s, user %q) = %v, want %v", tc.name, tc.resources, tc.user, got, tc.want)
		}
		// For anyone a policy grants at least what it grants one user.
		if tc.want && !grantsBucket(doc(tc.resources), arn, anyone) {
			t.Errorf("%s: grants user %q but not anyone", tc.name, tc.user)
		}
	}
}

func TestSubstituteVariables(t *testing.T) {
	for _, tc := range []struct{ pattern, user, want string }{
		{"arn:aws:s3:::tenant-acme/*", "bob", "arn:aws:s3:::tenant-acme/*"},
		{"arn:aws:s3:::${aws:username}/*", "bob", "arn:aws:s3:::bob/*"},
		{"arn:aws:s3:::${aws:username}/*", anyone, "arn:aws:s3:::*/*"},
		{"arn:aws:s3:::${aws:username}-${aws:username}", "bob", "arn:aws:s3:::bob-bob"},
		{"arn:aws:s3:::${aws:userid}/${aws:username}", "bob", "arn:aws:s3:::*/bob"},
		{"arn:aws:s3:::${}x", "bob", "arn:aws:s3:::*x"},
		{"arn:aws:s3:::$${aws:username}", "bob", "arn:aws:s3:::$bob"},
		{"arn:aws:s3:::${aws:username", "bob", "arn:aws:s3:::${aws:username"},
		{"arn:aws:s3:::${aws:username}/${x", "bob", "arn:aws:s3:::bob/${x"},
		{"arn:aws:s3:::${aws:username}", "${jwt:sub}", "arn:aws:s3:::${jwt:sub}"},
	} {
		if got := substituteVariables(tc.pattern, tc.user); got != tc.want {
			t.Errorf("substituteVariables(%q, %q) = %q, want %q", tc.pattern, tc.user, got, tc.want)
		}
	}
	for user, want := range map[string]string{
		"alice": "alice", "tenant-*": "tenant-*", "": anyone,
		"uid=alice,dc=example,dc=org": anyone, "a,b": anyone, "a=b": anyone, "a$": anyone,
	} {
		if got := requestUsername(user); got != want {
			t.Errorf("requestUsername(%q) = %q, want %q", user, got, want)
		}
	}
	if d, err := parsePolicy(legacyPolicy("acme")); err != nil || d.variables {
		t.Errorf("a legacy tenant policy has variables (%v)", err)
	}
}

func TestGlobMatch(t *testing.T) {
	for _, tc := range []struct {
		p, s       string
		full, open bool
	}{
		{"*", "", true, true},
		{"a*c", "abc", true, true},
		{"a*c", "ab", false, true},
		{"abc", "ab", false, true},
		{"ab", "abc", false, false},
		{"a?c", "abc", true, true},
		{"a**", "a", true, true},
		{"x", "a", false, false},
		{"", "", true, true},
		{"", "a", false, false},
	} {
		if got := wildcardMatch(tc.p, tc.s); got != tc.full {
			t.Errorf("wildcardMatch(%q, %q) = %v, want %v", tc.p, tc.s, got, tc.full)
		}
		if got := wildcardMatchesPrefix(tc.p, tc.s); got != tc.open {
			t.Errorf("wildcardMatchesPrefix(%q, %q) = %v, want %v", tc.p, tc.s, got, tc.open)
		}
	}
}
