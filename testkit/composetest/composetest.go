// Package composetest checks deploy/compose/compose.yaml against the
// binaries it runs, without a Docker engine: every variable a service is
// given is one its binary reads, every variable the binary requires is
// given, secrets arrive as files, and the health check asks the service's
// own readiness endpoint on the port it listens on.
package composetest

import (
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// File is the part of a compose file these checks read.
type File struct {
	Services map[string]Service `yaml:"services"`
	Secrets  map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
}

// Service is one compose service.
type Service struct {
	Image       string            `yaml:"image"`
	Environment map[string]string `yaml:"environment"`
	Secrets     []string          `yaml:"secrets"`
	Build       struct {
		Context    string            `yaml:"context"`
		Dockerfile string            `yaml:"dockerfile"`
		Args       map[string]string `yaml:"args"`
	} `yaml:"build"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	Command   []string `yaml:"command"`
	DependsOn map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

// Load parses the compose file at path (anchors and merge keys resolved).
func Load(t testing.TB, path string) *File {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read compose file: %v", err)
	}
	var f File
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return &f
}

// Path returns deploy/compose/compose.yaml of the workspace containing the
// caller's source file.
func Path(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(1)
	dir := filepath.Dir(file)
	for {
		p := filepath.Join(dir, "deploy", "compose", "compose.yaml")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("deploy/compose/compose.yaml not found above %s", file)
		}
		dir = parent
	}
}

// EnvNames lists every environment variable a config struct reads (its
// `env` tags, nested structs included).
func EnvNames(cfg any) map[string]bool {
	names := map[string]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			if tag, _, _ := strings.Cut(f.Tag.Get("env"), ","); tag != "" {
				names[tag] = true
				continue
			}
			walk(f.Type)
		}
	}
	walk(reflect.TypeOf(cfg))
	return names
}

// CheckService runs every check on compose service name, whose binary is
// built from target (e.g. "services/pg-agent") and reads cfg; required
// lists variables the service cannot start without.
func CheckService(t *testing.T, f *File, name, target string, cfg any, required ...string) {
	t.Helper()
	svc, ok := f.Services[name]
	if !ok {
		t.Fatalf("compose has no service %q", name)
	}
	reads := EnvNames(cfg)
	given := map[string]bool{}
	for k, v := range svc.Environment {
		base, isFile := strings.CutSuffix(k, "_FILE")
		if isFile && reads[base] {
			given[base] = true
			if !strings.HasPrefix(v, "/run/secrets/") {
				t.Errorf("%s: %s=%q should point into /run/secrets/", name, k, v)
			} else if s := strings.TrimPrefix(v, "/run/secrets/"); !contains(svc.Secrets, s) || f.Secrets[s].File == "" {
				t.Errorf("%s: %s uses secret %q, which the service is not given or compose does not define", name, k, s)
			}
			continue
		}
		if !reads[k] {
			t.Errorf("%s: compose sets %s, which the binary does not read (it reads: %s)", name, k, sorted(reads))
		}
		given[k] = true
	}
	for _, r := range required {
		if !given[r] {
			t.Errorf("%s: required variable %s is not set (directly or as %s_FILE)", name, r, r)
		}
	}
	if got := svc.Build.Args["TARGET"]; got != target {
		t.Errorf("%s: build target %q, want %q", name, got, target)
	}
	want := []string{"CMD", "/usr/local/bin/app", "healthcheck"}
	if !reflect.DeepEqual(svc.Healthcheck.Test, want) {
		t.Errorf("%s: healthcheck %q, want %q (the binary's readiness probe on HTTP_ADDR)", name, svc.Healthcheck.Test, want)
	}
	if !strings.HasPrefix(svc.Environment["HTTP_ADDR"], "0.0.0.0:") {
		t.Errorf("%s: HTTP_ADDR %q must listen on all container interfaces", name, svc.Environment["HTTP_ADDR"])
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func sorted(m map[string]bool) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
