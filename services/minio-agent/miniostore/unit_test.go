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
		if got := grantsBucket(doc(tc.stmt), arn); got != tc.want {
			t.Errorf("grantsBucket(%s) = %v, want %v", tc.stmt, got, tc.want)
		}
	}
	if other, err := parsePolicy(TenantPolicy("other")); err != nil || grantsBucket(other, arn) {
		t.Error("another tenant's policy grants tenant-acme")
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
