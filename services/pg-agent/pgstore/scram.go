package pgstore

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"

	"github.com/tenantprov/tenantprov/pkg/secret"
)

// SCRAMIterations is the iteration count of the verifiers this package
// computes: PostgreSQL's own default (scram_iterations = 4096, RFC 7677's
// minimum).
const SCRAMIterations = 4096

// scramSaltLen is the salt length in bytes, PostgreSQL's SCRAM_DEFAULT_SALT_LEN.
const scramSaltLen = 16

// SCRAMVerifier returns the SCRAM-SHA-256 verifier of password in the form
// PostgreSQL stores in pg_authid.rolpassword (RFC 5802 §3, RFC 7677):
//
//	SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>
//
// with a fresh 16-byte salt from crypto/rand. Sent as the PASSWORD of CREATE
// or ALTER ROLE, the server stores it as is, so the plaintext never reaches
// the server. The password must be printable ASCII without spaces
// (secret.Generate's alphabet is a subset), for which SASLprep — which
// client and server apply before hashing — is the identity; anything else
// is refused with ErrUnsupportedPassword rather than risking a verifier the
// client cannot match.
func SCRAMVerifier(password secret.String) (string, error) {
	salt := make([]byte, scramSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("scram salt: %w", err)
	}
	return scramVerifier(password.Reveal(), salt, SCRAMIterations)
}

func scramVerifier(password string, salt []byte, iterations int) (string, error) {
	if err := checkPassword(password); err != nil {
		return "", err
	}
	storedKey, serverKey, err := scramKeys(password, salt, iterations)
	if err != nil {
		return "", err
	}
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey), b64(serverKey)), nil
}

// scramKeys derives StoredKey and ServerKey (RFC 5802 §3):
//
//	SaltedPassword := Hi(password, salt, i)   (PBKDF2-HMAC-SHA-256)
//	StoredKey      := H(HMAC(SaltedPassword, "Client Key"))
//	ServerKey      := HMAC(SaltedPassword, "Server Key")
func scramKeys(password string, salt []byte, iterations int) (storedKey, serverKey []byte, err error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return nil, nil, fmt.Errorf("scram: %w", err)
	}
	clientKey := hmacSHA256(salted, "Client Key")
	sum := sha256.Sum256(clientKey)
	return sum[:], hmacSHA256(salted, "Server Key"), nil
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// checkPassword accepts non-empty printable ASCII without spaces only. It
// never quotes the password in its error.
func checkPassword(password string) error {
	if password == "" {
		return fmt.Errorf("%w: empty", ErrUnsupportedPassword)
	}
	for i := 0; i < len(password); i++ {
		if c := password[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("%w: byte %d is not printable ASCII or is a space", ErrUnsupportedPassword, i)
		}
	}
	return nil
}
