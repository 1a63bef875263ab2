package busauth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// AccountName is the NATS account every tenantprov stream and every
// identity but the requesters live in.
const AccountName = "TENANTPROV"

// RequestersAccountName is the account of the upstream requesters. It
// imports the request subjects from TENANTPROV as services and nothing
// else: a requester's reply subject is then rewritten by the server into a
// private response subject, so a publish acknowledgement can never be sent
// onto a subject a stream captures (a reply of "$KV.tenants.acme" would
// otherwise overwrite acme's registry record with the acknowledgement).
const RequestersAccountName = "REQUESTERS"

// Files under an authority directory (Init).
const (
	// ServerConfigFile is the nats-server configuration fragment (operator,
	// system account, MEMORY resolver preload): `nats-server -c auth.conf`
	// or `include auth.conf`.
	ServerConfigFile = "auth.conf"
	keysDir          = "keys"
	credsDir         = "creds"
)

// Authority holds the keys that define the bus: the operator, the system
// account, the TENANTPROV account and its signing key (which signs every
// user credential). Whoever holds the signing key can issue identities, so
// it lives only where identities are issued (0600 files under keys/).
type Authority struct {
	operator   nkeys.KeyPair
	system     nkeys.KeyPair
	account    nkeys.KeyPair
	signer     nkeys.KeyPair
	requesters nkeys.KeyPair // REQUESTERS account
	reqSigner  nkeys.KeyPair // its signing key
	observers  nkeys.KeyPair // OBSERVERS account
	obsSigner  nkeys.KeyPair // its signing key
}

// ObserversAccountName is the account of the observers: it imports the
// read-only JetStream API calls and the outcome subjects from TENANTPROV,
// so an observer's replies are private too (see RequestersAccountName).
const ObserversAccountName = "OBSERVERS"

// NewAuthority creates fresh keys.
func NewAuthority() (*Authority, error) {
	var a Authority
	var err error
	if a.operator, err = nkeys.CreateOperator(); err != nil {
		return nil, err
	}
	if a.system, err = nkeys.CreateAccount(); err != nil {
		return nil, err
	}
	if a.account, err = nkeys.CreateAccount(); err != nil {
		return nil, err
	}
	if a.signer, err = nkeys.CreateAccount(); err != nil {
		return nil, err
	}
	if a.requesters, err = nkeys.CreateAccount(); err != nil {
		return nil, err
	}
	if a.reqSigner, err = nkeys.CreateAccount(); err != nil {
		return nil, err
	}
	if a.observers, err = nkeys.CreateAccount(); err != nil {
		return nil, err
	}
	if a.obsSigner, err = nkeys.CreateAccount(); err != nil {
		return nil, err
	}
	return &a, nil
}

func (a *Authority) keyFiles() map[string]*nkeys.KeyPair {
	return map[string]*nkeys.KeyPair{
		"operator.nk": &a.operator, "system-account.nk": &a.system,
		"account.nk": &a.account, "account-signing.nk": &a.signer,
		"requesters-account.nk": &a.requesters, "requesters-signing.nk": &a.reqSigner,
		"observers-account.nk": &a.observers, "observers-signing.nk": &a.obsSigner,
	}
}

// LoadAuthority reads the keys Save wrote under dir/keys. It fails with
// ErrNoAuthority when any is missing.
func LoadAuthority(dir string) (*Authority, error) {
	a, missing, err := loadKeys(dir)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w in %s (missing %v)", ErrNoAuthority, dir, missing)
	}
	return a, nil
}

// loadKeys reads the key files that exist and lists the missing ones.
func loadKeys(dir string) (*Authority, []string, error) {
	var a Authority
	var missing []string
	for name, kp := range a.keyFiles() {
		path := filepath.Join(dir, keysDir, name)
		seed, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, name)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		if *kp, err = nkeys.FromSeed(bytes.TrimSpace(seed)); err != nil {
			return nil, nil, fmt.Errorf("%s: not an nkey seed: %w", path, err)
		}
	}
	sort.Strings(missing)
	return &a, missing, nil
}

// Save writes the keys to dir/keys (directory 0700, files 0600).
func (a *Authority) Save(dir string) error {
	kd := filepath.Join(dir, keysDir)
	if err := privateDir(kd); err != nil {
		return err
	}
	for name, kp := range a.keyFiles() {
		seed, err := (*kp).Seed()
		if err != nil {
			return err
		}
		if err := writePrivate(filepath.Join(kd, name), append(seed, '\n')); err != nil {
			return err
		}
	}
	return nil
}

// AccountPublicKey is the TENANTPROV account's public key.
func (a *Authority) AccountPublicKey() string { pk, _ := a.account.PublicKey(); return pk }

// jwts returns the operator JWT and every account JWT by public key.
func (a *Authority) jwts() (operator string, accounts map[string]string, err error) {
	opk, _ := a.operator.PublicKey()
	spk, _ := a.system.PublicKey()
	apk, _ := a.account.PublicKey()
	sgk, _ := a.signer.PublicKey()
	rpk, _ := a.requesters.PublicKey()
	rsk, _ := a.reqSigner.PublicKey()
	bpk, _ := a.observers.PublicKey()
	bsk, _ := a.obsSigner.PublicKey()
	accounts = map[string]string{}

	oc := jwt.NewOperatorClaims(opk)
	oc.Name = "tenantprov"
	oc.SystemAccount = spk
	if operator, err = oc.Encode(a.operator); err != nil {
		return "", nil, fmt.Errorf("operator jwt: %w", err)
	}
	sc := jwt.NewAccountClaims(spk)
	sc.Name = "SYS"
	if accounts[spk], err = sc.Encode(a.operator); err != nil {
		return "", nil, fmt.Errorf("system account jwt: %w", err)
	}

	ac := jwt.NewAccountClaims(apk)
	ac.Name = AccountName
	ac.SigningKeys.Add(sgk)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	services := append(requestSubjects(), observerAPI()...)
	for _, subj := range services {
		ac.Exports.Add(&jwt.Export{Name: subj, Subject: jwt.Subject(subj), Type: jwt.Service})
	}
	for _, subj := range outcomeSubjects() {
		ac.Exports.Add(&jwt.Export{Name: subj, Subject: jwt.Subject(subj), Type: jwt.Stream})
	}
	if accounts[apk], err = ac.Encode(a.operator); err != nil {
		return "", nil, fmt.Errorf("account jwt: %w", err)
	}

	rc := jwt.NewAccountClaims(rpk)
	rc.Name = RequestersAccountName
	rc.SigningKeys.Add(rsk)
	for _, subj := range requestSubjects() {
		rc.Imports.Add(&jwt.Import{Name: subj, Subject: jwt.Subject(subj), Account: apk, Type: jwt.Service})
	}
	if accounts[rpk], err = rc.Encode(a.operator); err != nil {
		return "", nil, fmt.Errorf("requesters account jwt: %w", err)
	}

	bc := jwt.NewAccountClaims(bpk)
	bc.Name = ObserversAccountName
	bc.SigningKeys.Add(bsk)
	for _, subj := range observerAPI() {
		bc.Imports.Add(&jwt.Import{Name: subj, Subject: jwt.Subject(subj), Account: apk, Type: jwt.Service})
	}
	for _, subj := range outcomeSubjects() {
		bc.Imports.Add(&jwt.Import{Name: subj, Subject: jwt.Subject(subj), Account: apk, Type: jwt.Stream})
	}
	if accounts[bpk], err = bc.Encode(a.operator); err != nil {
		return "", nil, fmt.Errorf("observers account jwt: %w", err)
	}
	return operator, accounts, nil
}

// ServerConfig is the nats-server configuration that trusts this
// authority: the operator JWT, the system account, and a MEMORY resolver
// preloaded with both account JWTs. It holds no secret (only public keys
// and signed claims); user credentials are never listed in it.
func (a *Authority) ServerConfig() (string, error) {
	op, accounts, err := a.jwts()
	if err != nil {
		return "", err
	}
	spk, _ := a.system.PublicKey()
	var b strings.Builder
	b.WriteString("# tenantprov bus authority (generated by pkg/busauth; do not edit).\n")
	b.WriteString("# Identities are user JWTs signed by the TENANTPROV account's signing key;\n")
	b.WriteString("# issuing a new one needs no change here.\n")
	fmt.Fprintf(&b, "operator: %q\n", op)
	fmt.Fprintf(&b, "system_account: %s\n", spk)
	// A client's CONNECT carries its user JWT, permissions included; the
	// orchestrator's is over the 4 KiB default.
	b.WriteString("max_control_line: 16384\n")
	b.WriteString("resolver: MEMORY\n")
	b.WriteString("resolver_preload: {\n")
	keys := make([]string, 0, len(accounts))
	for k := range accounts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s: %q\n", k, accounts[k])
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// Issue returns a new creds file (user JWT and seed) for an identity called
// name with role r's permissions (Permissions) and inbox prefix. ttl 0
// means no expiry.
func (a *Authority) Issue(r Role, name string, ttl time.Duration) ([]byte, error) {
	perm, err := Permissions(r)
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = string(r)
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	upk, _ := user.PublicKey()
	uc := jwt.NewUserClaims(upk)
	uc.Name = name
	uc.IssuerAccount = a.AccountPublicKey()
	signer := a.signer
	switch r {
	case RoleRequester:
		uc.IssuerAccount, _ = a.requesters.PublicKey()
		signer = a.reqSigner
	case RoleObserver:
		uc.IssuerAccount, _ = a.observers.PublicKey()
		signer = a.obsSigner
	}
	uc.Permissions = perm
	uc.Tags.Add(roleTag + string(r))
	if ttl > 0 {
		uc.Expires = time.Now().Add(ttl).Unix()
	}
	token, err := uc.Encode(signer)
	if err != nil {
		return nil, fmt.Errorf("user jwt for %s: %w", name, err)
	}
	seed, err := user.Seed()
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(token, seed)
}

// IssueAdmin returns a creds file for an identity with no restriction at
// all in the TENANTPROV account: for break-glass maintenance and for test
// harnesses that watch the whole bus. No service or person uses it day to
// day; it is never written by Init.
func (a *Authority) IssueAdmin(name string, ttl time.Duration) ([]byte, error) {
	user, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	upk, _ := user.PublicKey()
	uc := jwt.NewUserClaims(upk)
	uc.Name = name
	uc.IssuerAccount = a.AccountPublicKey()
	if ttl > 0 {
		uc.Expires = time.Now().Add(ttl).Unix()
	}
	token, err := uc.Encode(a.signer)
	if err != nil {
		return nil, fmt.Errorf("admin jwt for %s: %w", name, err)
	}
	seed, err := user.Seed()
	if err != nil {
		return nil, err
	}
	return jwt.FormatUserConfig(token, seed)
}

const roleTag = "tenantprov-role:"

// Init makes dir a complete bus authority for one deployment: it keeps the
// keys already in dir/keys (or creates them), writes dir/auth.conf, and
// issues dir/creds/<role>.creds for every role (re-issued on every call, so
// a permission change in code reaches the next start; earlier credentials
// stay valid until they expire). Directories are 0700, files 0600.
func Init(dir string) (*Authority, error) {
	if err := privateDir(dir); err != nil {
		return nil, err
	}
	a, missing, err := loadKeys(dir)
	if err != nil {
		return nil, err
	}
	if len(missing) > 0 { // a new authority, or one from before a key was added
		fresh, err := NewAuthority()
		if err != nil {
			return nil, err
		}
		for name, kp := range a.keyFiles() {
			if slices.Contains(missing, name) {
				*kp = *fresh.keyFiles()[name]
			}
		}
		if err := a.Save(dir); err != nil {
			return nil, err
		}
	}
	conf, err := a.ServerConfig()
	if err != nil {
		return nil, err
	}
	if err := writePrivate(filepath.Join(dir, ServerConfigFile), []byte(conf)); err != nil {
		return nil, err
	}
	if err := privateDir(filepath.Join(dir, credsDir)); err != nil {
		return nil, err
	}
	for _, r := range Roles() {
		creds, err := a.Issue(r, "", 0)
		if err != nil {
			return nil, err
		}
		if err := writePrivate(CredsPath(dir, r), creds); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// CredsPath is where Init puts role r's creds file under dir.
func CredsPath(dir string, r Role) string {
	return filepath.Join(dir, credsDir, string(r)+".creds")
}

// privateDir creates dir (and parents) and makes dir itself 0700, also when
// it already existed with a wider mode.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// writePrivate replaces path with data, created 0600 from the start (a
// temporary file in the same directory, renamed over the target).
func writePrivate(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
