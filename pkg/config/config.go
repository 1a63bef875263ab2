// Package config loads a service's typed configuration from the environment
// and validates it, reporting every problem at once.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"github.com/caarlos0/env/v11"
)

// Validator is implemented by configurations that check themselves. Validate
// returns every problem it finds, joined with errors.Join.
type Validator interface {
	Validate() error
}

// ErrInvalid matches every error Load returns for bad configuration.
var ErrInvalid = errors.New("invalid configuration")

// Load fills a copy of defaults from the process environment (struct tags
// `env:"NAME"`, `envDefault:"..."`, `required:"true"`; a field without a
// variable keeps its value from defaults), then calls Validate when *T has
// one. Parse errors and validation errors are reported together.
func Load[T any](defaults T) (T, error) {
	return LoadFrom(defaults, environ())
}

// LoadFrom is Load from an explicit environment, for tests.
func LoadFrom[T any](defaults T, environment map[string]string) (T, error) {
	cfg := defaults
	var errs []error
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: environment}); err != nil {
		var agg env.AggregateError
		if errors.As(err, &agg) {
			tags := envTags(reflect.TypeOf(cfg))
			for _, e := range agg.Errors {
				var pe env.ParseError
				if errors.As(e, &pe) && tags[pe.Name] != "" {
					e = fmt.Errorf("%s: %w", tags[pe.Name], pe.Err)
				}
				errs = append(errs, e)
			}
		} else {
			errs = append(errs, err)
		}
	}
	if v, ok := any(&cfg).(Validator); ok {
		if err := v.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return cfg, fmt.Errorf("%w:\n%w", ErrInvalid, errors.Join(errs...))
	}
	return cfg, nil
}

// envTags maps struct field names (embedded structs included) to their
// environment variable, so that a parse error names the variable a person
// sets rather than a Go field.
func envTags(t reflect.Type) map[string]string {
	tags := map[string]string{}
	if t.Kind() != reflect.Struct {
		return tags
	}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Tag.Get("env") == "" {
			for k, v := range envTags(f.Type) {
				tags[k] = v
			}
			continue
		}
		if tag, _, _ := strings.Cut(f.Tag.Get("env"), ","); tag != "" {
			tags[f.Name] = tag
		}
	}
	return tags
}

// environ returns the process environment, with the <NAME>_FILE convention
// (as the postgres image and compose secrets use it) applied: when NAME is
// unset and NAME_FILE names a file, NAME is that file's content without the
// trailing newline. Secrets then never have to sit in an environment
// variable.
func environ() map[string]string {
	m := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return withFiles(m, os.ReadFile)
}

func withFiles(m map[string]string, read func(string) ([]byte, error)) map[string]string {
	for k, path := range m {
		name, ok := strings.CutSuffix(k, "_FILE")
		if !ok || name == "" || path == "" || m[name] != "" {
			continue
		}
		if data, err := read(path); err == nil {
			m[name] = strings.TrimRight(string(data), "\r\n")
		}
	}
	return m
}
