package busauth

import "errors"

// Sentinel errors; match with errors.Is.
var (
	// ErrUnknownRole: a name that is not one of Roles().
	ErrUnknownRole = errors.New("unknown bus role")
	// ErrBadCredentials: a creds file that is missing, unreadable,
	// malformed, expired, or whose seed does not match its JWT.
	ErrBadCredentials = errors.New("bad NATS credentials")
	// ErrNoAuthority: the key directory holds no account signing key.
	ErrNoAuthority = errors.New("no bus authority keys")
)
