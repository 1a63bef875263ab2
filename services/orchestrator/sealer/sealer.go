// Package sealer builds a tenant's secrets file (DESIGN.md §6) from the
// store agents' credentials and encrypts it with SOPS to the control-plane
// recipient plus the operators' recipients. Only the credential values are
// encrypted (encrypted_regex); names and endpoints stay readable, and the
// file decrypts with the standard `sops -d`.
package sealer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/getsops/sops/v3"
	"github.com/getsops/sops/v3/aes"
	sopsage "github.com/getsops/sops/v3/age"
	"github.com/getsops/sops/v3/cmd/sops/common"
	"github.com/getsops/sops/v3/config"
	"github.com/getsops/sops/v3/keys"
	"github.com/getsops/sops/v3/keyservice"
	sopsyaml "github.com/getsops/sops/v3/stores/yaml"
	"github.com/getsops/sops/v3/version"
	"gopkg.in/yaml.v3"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// EncryptedRegex selects the keys SOPS encrypts: the credentials. Everything
// else (names, endpoints, the tenant ID) stays readable for operators.
const EncryptedRegex = "^(secret_key|password|url|api_key)$"

// MinIO is the minio section of the secrets file.
type MinIO struct {
	Endpoint  string `yaml:"endpoint" json:"endpoint"`
	Secure    bool   `yaml:"secure" json:"secure"`
	Bucket    string `yaml:"bucket" json:"bucket"`
	AccessKey string `yaml:"access_key" json:"access_key"`
	SecretKey string `yaml:"secret_key" json:"secret_key"`
}

// Postgres is the postgres section of the secrets file.
type Postgres struct {
	Host     string `yaml:"host" json:"host"`
	Port     int    `yaml:"port" json:"port"`
	Database string `yaml:"database" json:"database"`
	User     string `yaml:"user" json:"user"`
	Password string `yaml:"password" json:"password"`
	URL      string `yaml:"url" json:"url"`
}

// Qdrant is the qdrant section of the secrets file.
type Qdrant struct {
	Host       string `yaml:"host" json:"host"`
	GRPCPort   int    `yaml:"grpc_port" json:"grpc_port"`
	Collection string `yaml:"collection" json:"collection"`
	APIKey     string `yaml:"api_key" json:"api_key"`
}

// Redis is the redis section of the secrets file.
type Redis struct {
	Addr      string `yaml:"addr" json:"addr"`
	Username  string `yaml:"username" json:"username"`
	Password  string `yaml:"password" json:"password"`
	KeyPrefix string `yaml:"key_prefix" json:"key_prefix"`
}

// File is a tenant's decrypted secrets file, keys exactly as DESIGN.md §6.
// It holds plaintext credentials: keep it in memory only, never log it.
type File struct {
	TenantID   string   `yaml:"tenant_id" json:"tenant_id"`
	Generation uint64   `yaml:"generation" json:"generation"`
	MinIO      MinIO    `yaml:"minio" json:"minio"`
	Postgres   Postgres `yaml:"postgres" json:"postgres"`
	Qdrant     Qdrant   `yaml:"qdrant" json:"qdrant"`
	Redis      Redis    `yaml:"redis" json:"redis"`
	// CredentialVersions records which credential version each store's
	// section holds (1 as provisioned; each rotation adds one).
	CredentialVersions CredentialVersions `yaml:"credential_versions,omitempty" json:"credential_versions,omitempty"`
}

// CredentialVersions is the credential version of each store's section of
// a secrets file (zero: not recorded).
type CredentialVersions struct {
	MinIO    int `yaml:"minio,omitempty" json:"minio,omitempty"`
	Postgres int `yaml:"postgres,omitempty" json:"postgres,omitempty"`
	Qdrant   int `yaml:"qdrant,omitempty" json:"qdrant,omitempty"`
	Redis    int `yaml:"redis,omitempty" json:"redis,omitempty"`
}

// Set records store's credential version.
func (v *CredentialVersions) Set(store events.Store, version int) {
	switch store {
	case events.StoreMinIO:
		v.MinIO = version
	case events.StorePostgres:
		v.Postgres = version
	case events.StoreQdrant:
		v.Qdrant = version
	case events.StoreRedis:
		v.Redis = version
	}
}

// String redacts: a File must never reach a log through fmt.
func (f *File) String() string {
	return fmt.Sprintf("secrets file for %s generation %d [REDACTED]", f.TenantID, f.Generation)
}

// GoString redacts the %#v form too.
func (f *File) GoString() string { return f.String() }

// secretValues lists the credential values EncryptedRegex must cover.
func (f *File) secretValues() []string {
	return []string{f.MinIO.SecretKey, f.Postgres.Password, f.Postgres.URL, f.Qdrant.APIKey, f.Redis.Password}
}

// SetSection decodes one store's credential (the JSON an agent sealed) into
// the file.
func (f *File) SetSection(store events.Store, plaintext []byte) error {
	var target any
	switch store {
	case events.StoreMinIO:
		target = &f.MinIO
	case events.StorePostgres:
		target = &f.Postgres
	case events.StoreQdrant:
		target = &f.Qdrant
	case events.StoreRedis:
		target = &f.Redis
	default:
		return fmt.Errorf("%w %q", events.ErrUnknownStore, store)
	}
	if err := json.Unmarshal(plaintext, target); err != nil {
		// The JSON error could quote a value; say only where it failed.
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typ):
			return fmt.Errorf("%s credential: field %s has the wrong type", store, typ.Field)
		case errors.As(err, &syn):
			return fmt.Errorf("%s credential: malformed JSON at offset %d", store, syn.Offset)
		}
		return fmt.Errorf("%s credential: malformed", store)
	}
	return nil
}

// Sealer encrypts secrets files to a fixed set of age recipients.
type Sealer struct {
	recipients []string
}

// New returns a Sealer for the control-plane recipient plus any operator
// recipients ("age1…"). At least one recipient is required.
func New(recipients ...string) (*Sealer, error) {
	var rs []string
	for _, r := range recipients {
		if r == "" {
			continue
		}
		if _, err := sopsage.MasterKeyFromRecipient(r); err != nil {
			return nil, fmt.Errorf("age recipient %q: %w", r, err)
		}
		rs = append(rs, r)
	}
	if len(rs) == 0 {
		return nil, errors.New("sealer: no age recipient")
	}
	return &Sealer{recipients: rs}, nil
}

// Seal renders f as YAML and encrypts it with SOPS. It returns the file's
// bytes and their SHA-256 (hex).
func (s *Sealer) Seal(f *File) ([]byte, string, error) {
	plain, err := yaml.Marshal(f)
	if err != nil {
		return nil, "", fmt.Errorf("render secrets file: %w", err)
	}
	defer clear(plain)
	store := sopsyaml.NewStore(&config.YAMLStoreConfig{})
	branches, err := store.LoadPlainFile(plain)
	if err != nil {
		return nil, "", fmt.Errorf("load secrets file: %w", err)
	}
	var group sops.KeyGroup
	for _, r := range s.recipients {
		k, err := sopsage.MasterKeyFromRecipient(r)
		if err != nil {
			return nil, "", fmt.Errorf("age recipient: %w", err)
		}
		group = append(group, keys.MasterKey(k))
	}
	tree := sops.Tree{
		Branches: branches,
		Metadata: sops.Metadata{
			KeyGroups:      []sops.KeyGroup{group},
			EncryptedRegex: EncryptedRegex,
			Version:        version.Version,
		},
	}
	dataKey, errs := tree.GenerateDataKeyWithKeyServices([]keyservice.KeyServiceClient{keyservice.NewLocalClient()})
	if len(errs) > 0 {
		return nil, "", fmt.Errorf("sops data key: %w", errors.Join(errs...))
	}
	if err := common.EncryptTree(common.EncryptTreeOpts{DataKey: dataKey, Tree: &tree, Cipher: aes.NewCipher()}); err != nil {
		return nil, "", fmt.Errorf("sops encrypt: %w", err)
	}
	out, err := store.EmitEncryptedFile(tree)
	if err != nil {
		return nil, "", fmt.Errorf("sops emit: %w", err)
	}
	for _, v := range f.secretValues() {
		if v != "" && bytes.Contains(out, []byte(v)) {
			return nil, "", errors.New("sops output contains a plaintext credential; refusing to store it")
		}
	}
	sum := sha256.Sum256(out)
	return out, hex.EncodeToString(sum[:]), nil
}
