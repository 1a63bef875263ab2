package sealer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/getsops/sops/v3/cmd/sops/formats"
	"github.com/getsops/sops/v3/decrypt"
	"gopkg.in/yaml.v3"

	"github.com/tenantprov/tenantprov/pkg/events"
)

func sample() *File {
	f := &File{TenantID: "acme", Generation: 3}
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(f.SetSection(events.StoreMinIO, []byte(`{"endpoint":"127.0.0.1:9000","secure":false,"bucket":"tenant-acme","access_key":"tenant-acme","secret_key":"minio-secret-value-123"}`)))
	must(f.SetSection(events.StorePostgres, []byte(`{"host":"127.0.0.1","port":5432,"database":"tenant_acme","user":"tenant_acme","password":"pg-secret-value-456","url":"postgres://tenant_acme:pg-secret-value-456@127.0.0.1:5432/tenant_acme"}`)))
	must(f.SetSection(events.StoreQdrant, []byte(`{"host":"127.0.0.1","grpc_port":6334,"collection":"tenant_acme","api_key":"eyJhbGciOiJIUzI1NiJ9.jwt-value.sig"}`)))
	must(f.SetSection(events.StoreRedis, []byte(`{"addr":"127.0.0.1:6379","username":"tenant_acme","password":"redis-secret-value-789","key_prefix":"tenant:acme:"}`)))
	f.CredentialVersions = CredentialVersions{MinIO: 1, Postgres: 2, Qdrant: 1, Redis: 3}
	return f
}

func TestSealEncryptsCredentialsOnlyAndDecryptsWithOperatorKey(t *testing.T) {
	cp, _ := age.GenerateX25519Identity()
	op, _ := age.GenerateX25519Identity()
	s, err := New(cp.Recipient().String(), op.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	f := sample()
	out, sum, err := s.Seal(f)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(out)
	if sum != hex.EncodeToString(h[:]) {
		t.Fatal("returned sha256 does not match the bytes")
	}
	for _, v := range f.secretValues() {
		if strings.Contains(string(out), v) {
			t.Fatalf("sealed file holds %q in plain text", v)
		}
	}
	for _, readable := range []string{"tenant_id: acme", "bucket: tenant-acme", "database: tenant_acme", "tenant:acme:", "encrypted_regex: ^(secret_key|password|url|api_key)$"} {
		if !strings.Contains(string(out), readable) {
			t.Errorf("sealed file lacks readable %q", readable)
		}
	}
	for name, id := range map[string]*age.X25519Identity{"operator": op, "control plane": cp} {
		t.Setenv("SOPS_AGE_KEY", id.String())
		plain, err := decrypt.DataWithFormat(out, formats.Yaml)
		if err != nil {
			t.Fatalf("%s key cannot decrypt: %v", name, err)
		}
		if !strings.Contains(string(plain), "credential_versions:\n    minio: 1\n    postgres: 2") {
			t.Fatalf("%s: the decrypted file does not record the credential versions", name)
		}
		var got File
		if err := yaml.Unmarshal(plain, &got); err != nil {
			t.Fatal(err)
		}
		if got != *f {
			t.Fatalf("%s: decrypted file differs:\n%+v", name, got)
		}
	}
	other, _ := age.GenerateX25519Identity()
	t.Setenv("SOPS_AGE_KEY", other.String())
	if _, err := decrypt.DataWithFormat(out, formats.Yaml); err == nil {
		t.Fatal("a key that is not a recipient decrypted the file")
	}
}

func TestFileNeverPrintsSecrets(t *testing.T) {
	f := sample()
	for _, s := range []string{fmt.Sprint(f), fmt.Sprintf("%v %+v %#v %s", f, f, f, f)} {
		for _, v := range f.secretValues() {
			if strings.Contains(s, v) {
				t.Fatalf("formatting a File prints %q", v)
			}
		}
	}
}

func TestRejects(t *testing.T) {
	if _, err := New(); err == nil {
		t.Fatal("New without recipients accepted")
	}
	if _, err := New("age1notarecipient"); err == nil {
		t.Fatal("New with a bad recipient accepted")
	}
	f := &File{}
	if err := f.SetSection("mysql", []byte(`{}`)); err == nil {
		t.Fatal("unknown store accepted")
	}
	err := f.SetSection(events.StorePostgres, []byte(`{"password": 42, "secret":"do-not-echo"}`))
	if err == nil || strings.Contains(err.Error(), "do-not-echo") {
		t.Fatalf("bad credential error %v", err)
	}
}
