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
