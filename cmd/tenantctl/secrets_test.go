package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/cmd/sops/common"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/keys"
	"github.com/getsops/sops/v3/keyservice"
	sopsyaml "github.com/getsops/sops/v3/stores/yaml"
	"github.com/getsops/sops/v3/version"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/testkit"
)

// TestSecretsEnvIsSafeToEval feeds hostile secrets files to --format env
// and evaluates the output in a POSIX shell: nothing may run, and every
// value must come back byte for byte.
func TestSecretsEnvIsSafeToEval(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal("no sh on PATH: install a POSIX shell (dash or bash)")
	}
	dir := t.TempDir()
	pwned := filepath.Join(dir, "pwned")
	hostile := map[string]string{
		"subst":     "$(touch " + pwned + ")",
		"backticks": "`touch " + pwned + "`",
		"newline":   "a\ntouch " + pwned + "\nb",
		"quote":     "it's'; touch " + pwned + "; echo '",
		"dollar":    "${HOME}$PATH\\n\\",
		"empty":     "",
	}
	ks := slices.Sorted(maps.Keys(hostile))
	var doc strings.Builder
	doc.WriteString("tenant_id: acme\ngeneration: 1\npostgres:\n")
	for _, k := range ks {
		doc.WriteString("  " + k + ": " + yamlQuote(hostile[k]) + "\n")
	}
	var out bytes.Buffer
	g := &globals{stdout: &out, stderr: &out}
	if err := writeSecrets(g, []byte(doc.String()), "", "env"); err != nil {
		t.Fatalf("env output: %v", err)
	}
	t.Logf("env output:\n%s", out.String())
	// Evaluate it, then print each variable NUL-terminated.
	script := "eval \"$(cat)\"\n"
	names := []string{"TENANT_ID", "GENERATION"}
	for _, k := range ks {
		names = append(names, "POSTGRES_"+strings.ToUpper(k))
	}
	for _, n := range names {
		script += "printf '%s\\0' \"$" + n + "\"\n"
	}
	cmd := exec.Command(sh, "-c", script)
	cmd.Stdin = bytes.NewReader(out.Bytes())
	got, err := cmd.Output()
	if err != nil {
		t.Fatalf("eval in %s: %v", sh, err)
	}
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("evaluating the env output ran a command from the secrets file")
	}
	vals := strings.Split(strings.TrimSuffix(string(got), "\x00"), "\x00")
	want := []string{"acme", "1"}
	for _, k := range ks {
		want = append(want, hostile[k])
	}
	if len(vals) != len(want) {
		t.Fatalf("%d values back, want %d: %q", len(vals), len(want), vals)
	}
	for i := range want {
		if vals[i] != want[i] {
			t.Errorf("%s = %q after eval, want %q", names[i], vals[i], want[i])
		}
	}

	// Keys that cannot be shell names, or collide, are errors that echo
	// no value.
	for name, bad := range map[string]string{
		"injection in a key": "tenant_id: acme\npostgres:\n  \"x;rm -rf\": secret-value\n",
		"space in a key":     "tenant_id: acme\n\"a b\": secret-value\n",
		"digit first":        "tenant_id: acme\n\"1x\": secret-value\n",
		"dollar in a key":    "tenant_id: acme\n\"$(id)\": secret-value\n",
		"colliding keys":     "tenant_id: acme\na-b: secret-value\na_b: secret-value\n",
		"a list":             "tenant_id: acme\nhosts: [secret-value]\n",
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			err := writeSecrets(&globals{stdout: &out, stderr: &out}, []byte(bad), "", "env")
			if err == nil {
				t.Fatalf("accepted; output:\n%s", out.String())
			}
			if strings.Contains(err.Error(), "secret-value") || strings.Contains(out.String(), "secret-value") {
				t.Errorf("error or output echoes a value: %v\n%s", err, out.String())
			}
			t.Logf("refused: %v", err)
		})
	}
}

// yamlQuote renders s as a YAML double-quoted scalar.
func yamlQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// TestSecretsGetChecksTheRecord stores sealed files in the object store
// and records that point at them: a file whose tenant_id or generation
// is not the record's is refused, even though its SHA-256 matches.
func TestSecretsGetChecksTheRecord(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, err := jetstream.New(n.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := (events.Topology{}).Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "operator.agekey")
	if err := os.WriteFile(keyFile, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kv, _ := js.KeyValue(ctx, events.KVTenants)
	obj, _ := js.ObjectStore(ctx, events.ObjectStoreSecrets)

	cases := []struct {
		name, file string
		code       int
		want       string
	}{
		{"matching", "tenant_id: acme\ngeneration: 2\npostgres:\n  password: pw-ok\n", exitOK, "POSTGRES_PASSWORD='pw-ok'"},
		{"older generation", "tenant_id: acme\ngeneration: 1\npostgres:\n  password: pw-old\n", exitFailed, "generation 1"},
		{"other tenant", "tenant_id: victim\ngeneration: 2\npostgres:\n  password: pw-victim\n", exitFailed, `tenant "victim"`},
		{"no tenant", "postgres:\n  password: pw-none\n", exitFailed, "refusing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sealed := sealForTest(t, []byte(tc.file), id.Recipient().String())
			if _, err := obj.PutBytes(ctx, "acme.sops.yaml", sealed); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(sealed)
			now := time.Now().UTC()
			rec := &events.TenantRecord{TenantID: "acme", State: events.TenantActive, Generation: 2, SagaID: "acme-g2", CreatedAt: now, UpdatedAt: now,
				Secrets: &events.SecretsRef{Bucket: events.ObjectStoreSecrets, Object: "acme.sops.yaml", SHA256: hex.EncodeToString(sum[:])}}
			data, err := events.Encode(rec)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(ctx, "acme", data); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := tenantctl(t, "secrets", "get", "acme", "--format", "env", "--identity", keyFile, "--nats-url", n.URL)
			if code != tc.code || !strings.Contains(out+errOut, tc.want) {
				t.Fatalf("exit %d (want %d), output lacks %q:\n%s%s", code, tc.code, tc.want, out, errOut)
			}
			if tc.code != exitOK && strings.Contains(out+errOut, "pw-") {
				t.Errorf("a refused file's secret was printed:\n%s%s", out, errOut)
			}
		})
	}
}

// sealForTest encrypts plain with SOPS to recipient, as the orchestrator's
// sealer does.
func sealForTest(t *testing.T, plain []byte, recipient string) []byte {
	t.Helper()
	store := sopsyaml.NewStore(&config.YAMLStoreConfig{})
	branches, err := store.LoadPlainFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	k, err := sopsage.MasterKeyFromRecipient(recipient)
	if err != nil {
		t.Fatal(err)
	}
	tree := sops.Tree{Branches: branches, Metadata: sops.Metadata{
		KeyGroups: []sops.KeyGroup{{keys.MasterKey(k)}}, EncryptedRegex: "^(password)$", Version: version.Version,
	}}
	dataKey, errs := tree.GenerateDataKeyWithKeyServices([]keyservice.KeyServiceClient{keyservice.NewLocalClient()})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if err := common.EncryptTree(common.EncryptTreeOpts{DataKey: dataKey, Tree: &tree, Cipher: aes.NewCipher()}); err != nil {
		t.Fatal(err)
	}
	out, err := store.EmitEncryptedFile(tree)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
