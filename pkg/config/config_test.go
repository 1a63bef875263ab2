package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

type sample struct {
	URL     string        `env:"URL"`
	Port    int           `env:"PORT" envDefault:"8080"`
	Timeout time.Duration `env:"TIMEOUT" envDefault:"5s"`
	Name    string        `env:"NAME"`
}

func (s *sample) Validate() error {
	var errs []error
	if s.URL == "" {
		errs = append(errs, errors.New("URL: required"))
	}
	if s.Port > 65535 {
		errs = append(errs, fmt.Errorf("PORT: %d out of range", s.Port))
	}
	return errors.Join(errs...)
}

func TestLoadDefaultsAndEnvironment(t *testing.T) {
	got, err := LoadFrom(sample{Name: "from-defaults"}, map[string]string{"URL": "nats://x", "PORT": "9"})
	if err != nil {
		t.Fatal(err)
	}
	if got.URL != "nats://x" || got.Port != 9 || got.Timeout != 5*time.Second || got.Name != "from-defaults" {
		t.Fatalf("got %+v", got)
	}
}

func TestLoadReportsEveryProblemAtOnce(t *testing.T) {
	_, err := LoadFrom(sample{}, map[string]string{"PORT": "99999", "TIMEOUT": "soon"})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	for _, want := range []string{"URL: required", "PORT: 99999 out of range", "TIMEOUT"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestFileConvention(t *testing.T) {
	files := map[string]string{"/run/secrets/pw": "s3cret\n"}
	read := func(p string) ([]byte, error) {
		if v, ok := files[p]; ok {
			return []byte(v), nil
		}
		return nil, errors.New("no such file")
	}
	m := withFiles(map[string]string{"PASSWORD_FILE": "/run/secrets/pw", "URL": "x", "URL_FILE": "/run/secrets/pw", "OTHER_FILE": "/missing"}, read)
	if m["PASSWORD"] != "s3cret" {
		t.Fatalf("PASSWORD = %q", m["PASSWORD"])
	}
	if m["URL"] != "x" {
		t.Fatalf("an explicit variable must win over its _FILE: %q", m["URL"])
	}
	if _, ok := m["OTHER"]; ok {
		t.Fatal("a missing file set a variable")
	}
}
