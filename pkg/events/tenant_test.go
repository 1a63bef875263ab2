package events

import (
	"errors"
	"strings"
	"testing"
)

func TestParseTenantIDAccepts(t *testing.T) {
	for _, id := range []string{
		"abc", "acme", "a1b", "acme-corp", "a-b-c", "x9", "tenant", "tenantpro", "tenant-prov",
		"a" + strings.Repeat("b", 31), // 32 characters
	} {
		if len(id) < 3 {
			continue
		}
		t.Run(id, func(t *testing.T) {
			got, err := ParseTenantID(id)
			if err != nil {
				t.Fatalf("ParseTenantID(%q) = %v, want ok", id, err)
			}
			if got.String() != id {
				t.Fatalf("got %q", got)
			}
		})
	}
}

func TestParseTenantIDRejects(t *testing.T) {
	cases := map[string]string{
		"empty":                       "",
		"length 2":                    "ab",
		"length 33":                   "a" + strings.Repeat("b", 32),
		"very long":                   strings.Repeat("a", 10000),
		"uppercase":                   "Acme",
		"all uppercase":               "ACME",
		"double hyphen":               "ac--me",
		"leading digit":               "1acme",
		"leading hyphen":              "-acme",
		"trailing hyphen":             "acme-",
		"underscore":                  "ac_me",
		"dot":                         "ac.me",
		"space":                       "ac me",
		"leading space":               " acme",
		"newline":                     "acme\n",
		"nul":                         "acme\x00",
		"sql injection":               "acme'; drop database postgres; --",
		"sql quote":                   `acme"x`,
		"acl injection":               "acme on >pw ~* +@all",
		"acl glob":                    "acme*",
		"redis prefix escape":         "acme:x",
		"path traversal":              "../etc",
		"path slash":                  "acme/x",
		"subject wildcard":            "acme.>",
		"subject star":                "acme.*",
		"cyrillic a look-alike":       "\u0430cme",
		"fullwidth letters":           "ａｃｍｅ",
		"latin small dotless i":       "\u0131nfra",
		"combining mark":              "acme\u0301",
		"zero width space":            "ac\u200bme",
		"reserved prefix":             "tenantprov",
		"reserved prefix with suffix": "tenantprov-canary",
		"reserved prefix joined":      "tenantprovx",
		"only digits after letter ok but too short": "a1",
	}
	for name, id := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := ParseTenantID(id)
			if err == nil {
				t.Fatalf("ParseTenantID(%q) = %q, want error", id, got)
			}
			if !errors.Is(err, ErrInvalidTenantID) {
				t.Fatalf("error %v does not match ErrInvalidTenantID", err)
			}
			var tie *TenantIDError
			if !errors.As(err, &tie) || tie.Reason == "" {
				t.Fatalf("error %v is not a *TenantIDError with a reason", err)
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error message is %d bytes; hostile input must be truncated", len(err.Error()))
			}
			if got != "" {
				t.Fatalf("got non-empty id %q with error", got)
			}
		})
	}
}

func TestResourceNames(t *testing.T) {
	id := MustTenantID("acme-corp")
	got := map[string]string{
		"bucket":     id.MinIOBucket(),
		"minio user": id.MinIOUser(),
		"policy":     id.MinIOPolicy(),
		"legacy":     id.MinIOLegacyPolicy(),
		"database":   id.PostgresDatabase(),
		"role":       id.PostgresRole(),
		"collection": id.QdrantCollection(),
		"redis user": id.RedisUser(),
		"key prefix": id.RedisKeyPrefix(),
		"channels":   id.RedisChannelPrefix(),
		"secrets":    id.SecretsObject(),
	}
	want := map[string]string{
		"bucket":     "tenant-acme-corp",
		"minio user": "tenant-acme-corp",
		"policy":     "tenantprov-tenant-rw",
		"legacy":     "tenant-acme-corp-rw",
		"database":   "tenant_acme-corp",
		"role":       "tenant_acme-corp",
		"collection": "tenant_acme-corp",
		"redis user": "tenant_acme-corp",
		"key prefix": "tenant:acme-corp:",
		"channels":   "tenant:acme-corp:",
		"secrets":    "acme-corp.sops.yaml",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %q, want %q", k, got[k], w)
		}
	}
	// A tenant's names never collide with the system's reserved names;
	// the one policy every tenant shares is the system's own.
	for k, n := range got {
		if strings.HasPrefix(n, ReservedPrefix) != (k == "policy") {
			t.Errorf("%q uses the reserved prefix", n)
		}
	}
	for _, c := range []string{CanaryBucket, CanaryDatabase, CanaryCollection, CanaryRedisKeyPrefix, QdrantSystemCollection} {
		if !strings.HasPrefix(c, ReservedPrefix) {
			t.Errorf("system name %q lacks the reserved prefix", c)
		}
	}
}

func TestMustTenantIDPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("MustTenantID(\"BAD\") did not panic")
		}
	}()
	MustTenantID("BAD")
}

func TestParseStore(t *testing.T) {
	for _, s := range Stores() {
		if got, err := ParseStore(string(s)); err != nil || got != s {
			t.Errorf("ParseStore(%q) = %q, %v", s, got, err)
		}
	}
	for _, bad := range []string{"", "mysql", "MINIO", "minio ", "redis.>"} {
		if _, err := ParseStore(bad); !errors.Is(err, ErrUnknownStore) {
			t.Errorf("ParseStore(%q) error = %v, want ErrUnknownStore", bad, err)
		}
	}
}
