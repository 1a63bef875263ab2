package busauth

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
)

// Identity is what a creds file says about its holder.
type Identity struct {
	// Name is the identity's name (the user JWT's name), e.g. "pg-agent" or
	// "requester-billing".
	Name string
	// Role is the role it was issued for ("" for a creds file not issued
	// by this package).
	Role Role
	// Expires is when the credential stops working (zero: never).
	Expires time.Time
}

// ReadCreds reads and checks a creds file without contacting any server:
// it must exist, hold a user JWT and the matching user seed, and not be
// expired. Every failure matches ErrBadCredentials and says what is wrong in
// words an operator can act on; no key material is ever part of an error.
func ReadCreds(path string) (Identity, error) {
	bad := func(format string, args ...any) (Identity, error) {
		return Identity{}, fmt.Errorf("%w: %s: %s", ErrBadCredentials, path, fmt.Sprintf(format, args...))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if os.IsNotExist(err) {
			return bad("no such file")
		}
		if os.IsPermission(err) {
			return bad("not readable by this process (permission denied)")
		}
		return bad("cannot read: %v", err)
	}
	token, err := jwt.ParseDecoratedJWT(data)
	if err != nil || token == "" || strings.Count(token, ".") != 2 {
		return bad("not a NATS creds file (no user JWT in it)")
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return bad("the JWT in it is not a valid user JWT")
	}
	id := Identity{Name: uc.Name}
	for _, t := range uc.Tags {
		if r, ok := strings.CutPrefix(t, roleTag); ok {
			id.Role = Role(r)
		}
	}
	kp, err := jwt.ParseDecoratedUserNKey(data)
	if err != nil {
		return bad("identity %q: no user seed in it", id.Name)
	}
	pk, err := kp.PublicKey()
	if err != nil || pk != uc.Subject {
		return bad("identity %q: the seed does not belong to the JWT (a JWT and seed from different creds files?)", id.Name)
	}
	if uc.Expires > 0 {
		id.Expires = time.Unix(uc.Expires, 0).UTC()
		if time.Now().After(id.Expires) {
			return bad("identity %q expired at %s; issue a new one", id.Name, id.Expires.Format(time.RFC3339))
		}
	}
	return id, nil
}
