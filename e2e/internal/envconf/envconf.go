// Package envconf reads the settings of the e2e tools (make chaos, make
// bench-e2e) from the environment, collecting every bad value instead of
// stopping at the first.
package envconf

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// Reader reads variables and remembers what was wrong with them.
type Reader struct{ Errs []error }

// Int is key as a non-negative integer, def when unset.
func (r *Reader) Int(key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		r.Errs = append(r.Errs, fmt.Errorf("%s=%q: want a non-negative integer", key, v))
	}
	return n
}

// Duration is key as a positive duration, def when unset.
func (r *Reader) Duration(key string, def time.Duration) time.Duration {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		r.Errs = append(r.Errs, fmt.Errorf("%s=%q: want a positive duration", key, v))
	}
	return d
}
