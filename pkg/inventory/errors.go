package inventory

import "errors"

// ErrNoAgent reports that no agent of a store answered an inventory
// request (none running, or none allowed to answer).
var ErrNoAgent = errors.New("no agent answers")
