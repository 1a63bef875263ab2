package miniostore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/minio/madmin-go/v3"
	"github.com/secure-io/sio-go"
	"golang.org/x/crypto/pbkdf2"
)

// Why this file exists: madmin encrypts the body of AddUser (and both the
// request and the response of AttachPolicy) with a key derived from the
// admin secret by Argon2id with 64 MiB of memory, and the server derives
// the same key again to decrypt. On this project's 2-core machines one
// derivation costs 60–250 ms, and madmin and the server each serialise
// their derivations behind a process-wide mutex, so AddUser (2 derivations)
// took 170–490 ms and AttachPolicy (4) 300–1530 ms — the slowest steps of
// the whole system. With the calls below they take 5–15 ms each.
//
// The admin API's encrypted-payload format carries its key-derivation
// function in the payload (an AEAD-ID byte after the salt), and every MinIO
// server decrypts all three variants madmin.EncryptData can produce —
// including PBKDF2-SHA256 (8192 rounds) with AES-256-GCM, which is what
// madmin itself sends when built with the `fips` tag. addUser seals the
// request in that variant and sends it with madmin's own signed-request
// path (AdminClient.ExecuteMethod): same endpoint, same JSON, same
// encryption, about 2 ms of key derivation instead of 2 × Argon2id.
//
// Security: the payload's key comes from the admin secret either way. Every
// admin request is already signed with SigV4, whose signing key is a few
// HMACs of the same secret, so an eavesdropper on a plain-HTTP link can
// already test guesses of the admin secret at HMAC speed; Argon2id on the
// payload does not raise that cost. Both variants rely on the admin secret
// being strong (the dev stack generates a random one) and on TLS
// (MINIO_SECURE) outside a trusted network.
//
// Policy attachment uses the admin API's set-user-or-group-policy call
// (madmin SetPolicy), which is not encrypted at all and sets the user's
// policy mapping to exactly the given policy.

// Values of madmin's encrypted-payload format (madmin-go encrypt.go).
const (
	payloadSaltLen      = 32
	payloadPBKDF2AESGCM = 0x02 // AEAD ID: PBKDF2-SHA256 key, AES-256-GCM stream
	payloadPBKDF2Rounds = 8192
)

// sealAdminPayload encrypts data for the admin API exactly as
// madmin.EncryptData does in FIPS mode: salt(32) | 0x02 | nonce(8) | sio
// AES-256-GCM stream, key = PBKDF2-SHA256(password, salt, 8192, 32).
func sealAdminPayload(password string, data []byte) ([]byte, error) {
	salt := make([]byte, payloadSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	key := pbkdf2.Key([]byte(password), salt, payloadPBKDF2Rounds, 32, sha256.New)
	stream, err := sio.AES_256_GCM.Stream(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, stream.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(len(salt) + 1 + len(nonce) + len(data) + int(stream.Overhead(int64(len(data)))))
	buf.Write(salt)
	buf.WriteByte(payloadPBKDF2AESGCM)
	buf.Write(nonce)
	w := stream.EncryptWriter(&buf, nonce, nil)
	if _, err := w.Write(data); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// addUserFast creates the user, or resets its secret and enables it, with
// the same admin call as madmin.AddUser but a PBKDF2-sealed body (see the
// comment at the top of this file). A server that refuses the payload
// (XMinioAdminConfigBadJSON) gets madmin.AddUser instead.
func (s *Store) addUserFast(ctx context.Context, user, secretKey string) error {
	return addUserSealed(ctx, s.admin, s.cfg.RootPassword.Reveal(), user, secretKey)
}

// addUserSealed sends add-user with client c, whose secret key is
// sealingKey, with a PBKDF2-sealed body, falling back to c.AddUser if the
// server refuses the payload.
func addUserSealed(ctx context.Context, c *madmin.AdminClient, sealingKey, user, secretKey string) error {
	body, err := json.Marshal(madmin.AddOrUpdateUserReq{SecretKey: secretKey, Status: madmin.AccountEnabled})
	if err != nil {
		return err
	}
	sealed, err := sealAdminPayload(sealingKey, body)
	clear(body)
	if err != nil {
		return fmt.Errorf("seal add-user request: %w", err)
	}
	resp, err := c.ExecuteMethod(ctx, http.MethodPut, madmin.RequestData{
		RelPath:     "/" + madmin.AdminAPIVersion + "/add-user",
		QueryValues: url.Values{"accessKey": []string{user}},
		Content:     sealed,
	})
	if err != nil {
		return err
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		_ = resp.Body.Close()
	}()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	apiErr := adminErrorFrom(resp)
	if apiErr.Code == codeAdminConfigBadJSON {
		return c.AddUser(ctx, user, secretKey)
	}
	return apiErr
}

// adminErrorFrom reads the JSON error body of a failed admin call.
func adminErrorFrom(resp *http.Response) madmin.ErrorResponse {
	e := madmin.ErrorResponse{Code: http.StatusText(resp.StatusCode), Message: resp.Status}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	var parsed madmin.ErrorResponse
	if json.Unmarshal(b, &parsed) == nil && parsed.Code != "" {
		e = parsed
	}
	return e
}

// setPolicyFast maps user to exactly policy with the unencrypted
// set-user-or-group-policy call; if the server refuses it for any reason it
// falls back to AttachPolicy (Argon2id both ways).
func (s *Store) setPolicyFast(ctx context.Context, user, policy string) error {
	//lint:ignore SA1019 SetPolicy is deprecated in madmin in favour of AttachPolicy, which costs four Argon2id derivations (~0.3–1 s); it is still served by MinIO and falls back to AttachPolicy below.
	err := s.admin.SetPolicy(ctx, policy, user, false)
	if err == nil {
		return nil
	}
	if c := adminCode(err); c == codeAdminNoSuchUser || c == codeAdminNoSuchPolicy {
		return err
	}
	return s.attachPolicy(ctx, user, policy)
}

// attachPolicy attaches policy to user with madmin's AttachPolicy; a policy
// that is already attached is success.
func (s *Store) attachPolicy(ctx context.Context, user, policy string) error {
	_, err := s.admin.AttachPolicy(ctx, madmin.PolicyAssociationReq{Policies: []string{policy}, User: user})
	if err != nil && adminCode(err) != codeAdminPolicyApplied {
		return err
	}
	return nil
}
