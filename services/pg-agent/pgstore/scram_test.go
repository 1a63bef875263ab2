package pgstore

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/tenantprov/tenantprov/pkg/secret"
)

// TestSCRAMKeysRFC7677 checks the key derivation against the example
// exchange of RFC 7677 §3 (user "user", password "pencil"): the server
// signature computed from our ServerKey, and the client proof verified
// against our StoredKey, must both match the RFC's messages.
func TestSCRAMKeysRFC7677(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	storedKey, serverKey, err := scramKeys("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	const (
		clientFirstBare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
		serverFirst     = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
		clientFinalBare = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
		proof           = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
		serverSig       = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
	)
	authMessage := clientFirstBare + "," + serverFirst + "," + clientFinalBare

	if got := base64.StdEncoding.EncodeToString(hmacSHA256(serverKey, authMessage)); got != serverSig {
		t.Errorf("ServerSignature = %s, want %s", got, serverSig)
	}
	// The server's check of the client proof (RFC 5802 §3).
	p, _ := base64.StdEncoding.DecodeString(proof)
	clientSig := hmacSHA256(storedKey, authMessage)
	clientKey := make([]byte, len(p))
	for i := range p {
		clientKey[i] = p[i] ^ clientSig[i]
	}
	if sum := sha256.Sum256(clientKey); !hmac.Equal(sum[:], storedKey) {
		t.Errorf("RFC 7677 client proof does not verify against StoredKey %x", storedKey)
	}
}

var verifierPattern = regexp.MustCompile(`^SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$`)

func TestSCRAMVerifierFormat(t *testing.T) {
	pw, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	v1, err := SCRAMVerifier(pw)
	if err != nil {
		t.Fatal(err)
	}
	v2, _ := SCRAMVerifier(pw)
	if v1 == v2 {
		t.Error("two verifiers of one password are equal: the salt is not fresh")
	}
	if strings.Contains(v1, pw.Reveal()) {
		t.Error("verifier contains the password")
	}
	m := verifierPattern.FindStringSubmatch(v1)
	if m == nil {
		t.Fatalf("verifier %q does not have the form SCRAM-SHA-256$<i>:<salt>$<StoredKey>:<ServerKey>", v1)
	}
	if it, _ := strconv.Atoi(m[1]); it != SCRAMIterations {
		t.Errorf("iterations %d, want %d", it, SCRAMIterations)
	}
	for i, want := range map[int]int{2: scramSaltLen, 3: sha256.Size, 4: sha256.Size} {
		b, err := base64.StdEncoding.DecodeString(m[i])
		if err != nil || len(b) != want {
			t.Errorf("field %d: %d bytes (%v), want %d", i, len(b), err, want)
		}
	}
	// Deterministic given the salt.
	salt, _ := base64.StdEncoding.DecodeString(m[2])
	again, err := scramVerifier(pw.Reveal(), salt, SCRAMIterations)
	if err != nil || again != v1 {
		t.Errorf("recomputed with the same salt: %q, %v; want %q", again, err, v1)
	}
}

func TestSCRAMVerifierRefusesUnsupportedPasswords(t *testing.T) {
	for name, pw := range map[string]string{
		"empty":     "",
		"space":     "pass word",
		"non-ASCII": "pässword",
		"control":   "pass\nword",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := SCRAMVerifier(secret.String(pw))
			if !errors.Is(err, ErrUnsupportedPassword) {
				t.Fatalf("err = %v, want ErrUnsupportedPassword", err)
			}
			if pw != "" && strings.Contains(err.Error(), pw) {
				t.Errorf("error quotes the password: %v", err)
			}
		})
	}
}
