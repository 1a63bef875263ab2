package secret

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
	"filippo.io/age/armor"
)

// ErrNoRecipient reports an empty or unparsable age recipient list.
var ErrNoRecipient = errors.New("no age recipient")

// ParseRecipients parses one or more age recipients ("age1…"), separated
// by commas, spaces or newlines.
func ParseRecipients(s string) ([]age.Recipient, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' })
	if len(fields) == 0 {
		return nil, ErrNoRecipient
	}
	out := make([]age.Recipient, 0, len(fields))
	for _, f := range fields {
		r, err := age.ParseX25519Recipient(f)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrNoRecipient, f, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// Seal encrypts plaintext to the recipients and returns ASCII-armored age
// ("-----BEGIN AGE ENCRYPTED FILE-----"). The caller should zero plaintext
// afterwards if it can.
func Seal(plaintext []byte, recipients ...age.Recipient) (string, error) {
	if len(recipients) == 0 {
		return "", ErrNoRecipient
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, recipients...)
	if err != nil {
		return "", fmt.Errorf("age encrypt: %w", err)
	}
	if _, err := w.Write(plaintext); err != nil {
		return "", fmt.Errorf("age encrypt: %w", err)
	}
	if err := w.Close(); err != nil {
		return "", fmt.Errorf("age encrypt: %w", err)
	}
	if err := aw.Close(); err != nil {
		return "", fmt.Errorf("age armor: %w", err)
	}
	return buf.String(), nil
}

// Open decrypts an armored age ciphertext with the identities.
func Open(armored string, identities ...age.Identity) ([]byte, error) {
	r, err := age.Decrypt(armor.NewReader(strings.NewReader(armored)), identities...)
	if err != nil {
		return nil, fmt.Errorf("age decrypt: %w", err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("age decrypt: %w", err)
	}
	return out, nil
}
