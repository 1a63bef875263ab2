package secret

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"filippo.io/age"
)

func TestStringRedactsEverywhere(t *testing.T) {
	const value = "hunter2-very-secret"
	s := String(value)
	type wrapper struct {
		Password String
		Nested   map[string]any
	}
	w := wrapper{Password: s, Nested: map[string]any{"p": s}}
	outs := map[string]string{}
	for _, verb := range []string{"%s", "%v", "%+v", "%#v", "%q", "%x", "%X", "%d", "%10s", "%-10v"} {
		outs[verb] = fmt.Sprintf(verb, s)
		outs["struct "+verb] = fmt.Sprintf(verb, w)
		outs["ptr "+verb] = fmt.Sprintf(verb, &w)
	}
	j, _ := json.Marshal(w)
	outs["json"] = string(j)
	txt, _ := s.MarshalText()
	outs["text"] = string(txt)
	var sb strings.Builder
	slog.New(slog.NewJSONHandler(&sb, nil)).Info("x", "pw", s, "w", w)
	outs["slog"] = sb.String()
	outs["error"] = fmt.Errorf("login failed for %v", s).Error()
	for name, out := range outs {
		if strings.Contains(out, value) || strings.Contains(out, fmt.Sprintf("%x", value)) {
			t.Errorf("%s leaks the secret: %s", name, out)
		}
		if !strings.Contains(out, Redacted) {
			t.Errorf("%s does not say %s: %s", name, Redacted, out)
		}
	}
	if s.Reveal() != value {
		t.Fatal("Reveal lost the value")
	}
}

func TestGenerate(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		s, err := Generate()
		if err != nil {
			t.Fatal(err)
		}
		v := s.Reveal()
		if len(v) != 43 || strings.ContainsAny(v, "+/=") {
			t.Fatalf("%d-char credential %q is not unpadded URL-safe base64 of 32 bytes", len(v), v)
		}
		raw, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || len(raw) != GeneratedBytes {
			t.Fatalf("decode: %v, %d bytes", err, len(raw))
		}
		if seen[v] {
			t.Fatal("duplicate credential")
		}
		seen[v] = true
	}
}

func TestSealOpen(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := age.GenerateX25519Identity()
	rs, err := ParseRecipients(id.Recipient().String() + ", " + other.Recipient().String())
	if err != nil || len(rs) != 2 {
		t.Fatalf("ParseRecipients: %v (%d)", err, len(rs))
	}
	armored, err := Seal([]byte("plain secret"), rs[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(armored, "-----BEGIN AGE ENCRYPTED FILE-----") || strings.Contains(armored, "plain secret") {
		t.Fatalf("not an armored ciphertext: %s", armored)
	}
	got, err := Open(armored, id)
	if err != nil || string(got) != "plain secret" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	if _, err := Open(armored, other); err == nil {
		t.Fatal("a non-recipient decrypted the credential")
	}
	if _, err := ParseRecipients("  "); err == nil {
		t.Fatal("empty recipients accepted")
	}
	if _, err := ParseRecipients("age1notakey"); err == nil {
		t.Fatal("bad recipient accepted")
	}
}
