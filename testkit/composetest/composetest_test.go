package composetest

import (
	"os"
	"strings"
	"testing"
)

func TestComposeFileShape(t *testing.T) {
	f := Load(t, Path(t))
	for _, store := range []string{"nats", "postgres", "redis", "minio", "qdrant"} {
		svc, ok := f.Services[store]
		if !ok || svc.Image == "" {
			t.Errorf("store %s missing or without an official image", store)
		}
		if len(svc.Healthcheck.Test) == 0 {
			t.Errorf("store %s has no health check", store)
		}
	}
	if f.Services["qdrant"].Environment["QDRANT__SERVICE__JWT_RBAC"] != "true" {
		t.Error("qdrant must run with JWT RBAC")
	}
	if !strings.HasPrefix(f.Services["redis"].Image, "redis:7") {
		t.Errorf("redis image %q, want redis:7", f.Services["redis"].Image)
	}
	for name, s := range f.Secrets {
		if !strings.HasPrefix(s.File, "./secrets/") {
			t.Errorf("secret %s comes from %q, want ./secrets/ (written by init-secrets.sh)", name, s.File)
		}
	}
	script, err := os.ReadFile(strings.TrimSuffix(Path(t), "compose.yaml") + "init-secrets.sh")
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range f.Secrets {
		file := strings.TrimPrefix(s.File, "./secrets/")
		if !strings.Contains(string(script), file) && !strings.HasSuffix(file, ".agekey") {
			t.Errorf("secret %s (%s) is not created by init-secrets.sh", name, file)
		}
	}
}

func TestEnvNames(t *testing.T) {
	type inner struct {
		B string `env:"B,required"`
	}
	type cfg struct {
		A string `env:"A"`
		inner
		Nested inner
		C      string
	}
	got := EnvNames(cfg{})
	if !got["A"] || !got["B"] || len(got) != 2 {
		t.Fatalf("EnvNames = %v", got)
	}
}
