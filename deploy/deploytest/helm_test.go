package deploytest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/tenantprov/tenantprov/testkit"
)

// services are the six binaries the chart deploys.
var services = []string{"orchestrator", "minio-agent", "pg-agent", "qdrant-agent", "redis-agent", "audit-sink"}

// extraRequired adds to each service's required variables (from its
// compose_test.go) what Kubernetes needs beyond compose: its own NATS
// identity. audit-sink has no compose test; its Config.Validate requires
// AUDIT_PG_URL.
var extraRequired = map[string][]string{
	"audit-sink": {"NATS_URL", "AUDIT_PG_URL"},
}

// runtimeVars are read by the Go runtime or standard library rather than
// by a Config struct.
var runtimeVars = map[string]bool{
	"SSL_CERT_FILE": true, // crypto/x509: the CA bundle that signed the stores' certificates
	// pkg/telemetry and the OpenTelemetry SDK (every service calls
	// telemetry.Setup): where and how traces are exported.
	"OTEL_EXPORTER_OTLP_ENDPOINT": true,
	"OTEL_EXPORTER_OTLP_PROTOCOL": true,
	"OTEL_SERVICE_NAME":           true,
	"OTEL_TRACES_SAMPLER":         true,
}

// rendered is what `helm template` produced, decoded into the API types.
type rendered struct {
	deployments map[string]*appsv1.Deployment // by app.kubernetes.io/component
	services    map[string]*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
	jobs        []*batchv1.Job
	accounts    []*corev1.ServiceAccount
}

func chartDir(t *testing.T) string {
	return filepath.Join(root(t), "deploy", "helm", "tenantprov")
}

func helmBinary(t *testing.T) string {
	t.Helper()
	return testkit.RequireBinary(t, "helm", "make tools (scripts/tools.sh builds helm from the Go module proxy)")
}

// renderChart runs `helm template` with the production values and decodes
// every document strictly: an unknown or misspelt field fails.
func renderChart(t *testing.T, extraArgs ...string) *rendered {
	t.Helper()
	args := append([]string{"template", "tp", chartDir(t), "--namespace", "tenantprov",
		"-f", filepath.Join(chartDir(t), "ci", "production-values.yaml")}, extraArgs...)
	cmd := exec.Command(helmBinary(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	r := &rendered{deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{}}
	reader := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	docs := 0
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("split helm output: %v", err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		docs++
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("document %d: %v\n%s", docs, err, doc)
		}
		strict := func(into any) {
			if err := yaml.UnmarshalStrict(doc, into); err != nil {
				t.Fatalf("%s %s does not decode strictly: %v\n%s", meta.APIVersion, meta.Kind, err, doc)
			}
		}
		switch meta.APIVersion + " " + meta.Kind {
		case "apps/v1 Deployment":
			var d appsv1.Deployment
			strict(&d)
			r.deployments[d.Labels["app.kubernetes.io/component"]] = &d
		case "v1 Service":
			var s corev1.Service
			strict(&s)
			r.services[s.Labels["app.kubernetes.io/component"]] = &s
		case "policy/v1 PodDisruptionBudget":
			var p policyv1.PodDisruptionBudget
			strict(&p)
			r.pdbs = append(r.pdbs, &p)
		case "batch/v1 Job":
			var j batchv1.Job
			strict(&j)
			r.jobs = append(r.jobs, &j)
		case "v1 ServiceAccount":
			var a corev1.ServiceAccount
			strict(&a)
			r.accounts = append(r.accounts, &a)
		default:
			t.Errorf("unexpected object %s %s: teach renderChart to decode it", meta.APIVersion, meta.Kind)
		}
	}
	t.Logf("helm template: %d documents: %d Deployments, %d Services, %d PodDisruptionBudgets, %d Jobs, %d ServiceAccounts",
		docs, len(r.deployments), len(r.services), len(r.pdbs), len(r.jobs), len(r.accounts))
	return r
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.Bytes()
}

// mountedFiles maps every file path a container sees from a Secret or
// ConfigMap volume to "secret <name>/<key>" or "configmap <name>/<key>".
func mountedFiles(t *testing.T, pod corev1.PodSpec, c corev1.Container) map[string]string {
	t.Helper()
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	files := map[string]string{}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Errorf("%s mounts volume %q, which the pod does not define", c.Name, m.Name)
			continue
		}
		add := func(kind, name string, items []corev1.KeyToPath) {
			if len(items) == 0 {
				t.Errorf("%s: volume %q projects %s %s without items: name the keys, so a missing key fails the pod", c.Name, v.Name, kind, name)
			}
			for _, it := range items {
				files[filepath.Join(m.MountPath, it.Path)] = kind + " " + name + "/" + it.Key
			}
		}
		switch {
		case v.Secret != nil:
			add("secret", v.Secret.SecretName, v.Secret.Items)
		case v.ConfigMap != nil:
			add("configmap", v.ConfigMap.Name, v.ConfigMap.Items)
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				switch {
				case s.Secret != nil:
					add("secret", s.Secret.Name, s.Secret.Items)
				case s.ConfigMap != nil:
					add("configmap", s.ConfigMap.Name, s.ConfigMap.Items)
				}
			}
		}
	}
	return files
}

// checkEnv checks one container's environment against what the binary
// reads, in the spirit of testkit/composetest: every variable is read,
// every required one is given (directly or as NAME_FILE), every secret
// arrives as a file from a mounted Secret, every path points at a mounted
// file. It returns the effective variables (NAME_FILE folded into NAME).
func checkEnv(t *testing.T, what string, pod corev1.PodSpec, c corev1.Container, reads map[string]envVar, required []string) map[string]string {
	t.Helper()
	files := mountedFiles(t, pod, c)
	given := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Errorf("%s: %s comes from valueFrom; secrets are mounted files (NAME_FILE), everything else a plain value", what, e.Name)
			continue
		}
		if _, dup := given[e.Name]; dup {
			t.Errorf("%s: %s set twice", what, e.Name)
		}
		if strings.HasPrefix(e.Value, "/etc/tenantprov/") && files[e.Value] == "" {
			t.Errorf("%s: %s=%s names a file no mounted volume provides (mounted: %v)", what, e.Name, e.Value, keys(files))
		}
		base, isFile := strings.CutSuffix(e.Name, "_FILE")
		switch {
		case isFile && hasKey(reads, base):
			if !strings.HasPrefix(files[e.Value], "secret ") {
				t.Errorf("%s: %s=%s must be a file from a mounted Secret", what, e.Name, e.Value)
			}
			given[base] = files[e.Value]
		case hasKey(reads, e.Name):
			if reads[e.Name].Secret {
				t.Errorf("%s: %s is a secret: give it as %s_FILE from a Secret, never as a plain value", what, e.Name, e.Name)
			}
			given[e.Name] = e.Value
		case runtimeVars[e.Name]:
			given[e.Name] = e.Value
		default:
			t.Errorf("%s: sets %s, which the binary does not read (it reads: %s)", what, e.Name, strings.Join(keys(reads), ", "))
		}
	}
	for _, r := range required {
		if _, ok := given[r]; !ok {
			t.Errorf("%s: required variable %s is not set (directly or as %s_FILE)", what, r, r)
		}
	}
	return given
}

func hasKey[V any](m map[string]V, k string) bool { _, ok := m[k]; return ok }

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// The chart renders with the real helm into objects that decode strictly
// into the Kubernetes API types, and every service gets what it needs.
func TestHelmChartRendersValidDeployments(t *testing.T) {
	variants := []struct {
		name string
		args []string
	}{
		{"production values", nil},
		{"no private CA, migration off, shorter drain", []string{"--set", "caBundle.configMap=", "--set", "auditSink.migration.enabled=false", "--set", "shutdownTimeoutSeconds=10"}},
		{"tracing to an OTLP collector", []string{"--set", "tracing.otlpEndpoint=http://otel-collector.observability:4318", "--set", "tracing.sampler=parentbased_traceidratio"}},
	}
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			r := renderChart(t, v.args...)
			checkDeployments(t, r)
			if strings.HasPrefix(v.name, "no private CA") && len(r.jobs) != 0 {
				t.Errorf("auditSink.migration.enabled=false still renders %d Jobs", len(r.jobs))
			}
			tracing := strings.HasPrefix(v.name, "tracing")
			for name, d := range r.deployments {
				env := map[string]string{}
				for _, e := range d.Spec.Template.Spec.Containers[0].Env {
					env[e.Name] = e.Value
				}
				switch {
				case tracing && (env["OTEL_EXPORTER_OTLP_ENDPOINT"] != "http://otel-collector.observability:4318" || env["OTEL_SERVICE_NAME"] != name || env["OTEL_TRACES_SAMPLER"] != "parentbased_traceidratio"):
					t.Errorf("%s: tracing values not passed on: endpoint %q, service name %q, sampler %q", name, env["OTEL_EXPORTER_OTLP_ENDPOINT"], env["OTEL_SERVICE_NAME"], env["OTEL_TRACES_SAMPLER"])
				case !tracing && env["OTEL_EXPORTER_OTLP_ENDPOINT"] != "":
					t.Errorf("%s: exports traces although tracing.otlpEndpoint is empty", name)
				}
			}
		})
	}
}

// checkDeployments checks every service's Deployment and the objects that
// go with it.
func checkDeployments(t *testing.T, r *rendered) {
	t.Helper()
	natsSecrets := map[string]string{}
	for _, name := range services {
		t.Run(name, func(t *testing.T) {
			d, ok := r.deployments[name]
			if !ok {
				t.Fatalf("no Deployment for %s (have %v)", name, keys(r.deployments))
			}
			pod := d.Spec.Template.Spec
			if len(pod.Containers) != 1 {
				t.Fatalf("%d containers, want 1", len(pod.Containers))
			}
			c := pod.Containers[0]
			required := append(requiredByComposeTest(t, name), extraRequired[name]...)
			required = append(required, "NATS_URL", "NATS_CREDS", "JETSTREAM_REPLICAS", "HTTP_ADDR", "SHUTDOWN_TIMEOUT")
			given := checkEnv(t, name, pod, c, serviceReads(t, name), required)

			// Its own NATS identity, from its own Secret.
			creds := given["NATS_CREDS"]
			files := mountedFiles(t, pod, c)
			src := files[creds]
			if !strings.HasPrefix(src, "secret ") {
				t.Errorf("NATS_CREDS=%s is not a file from a Secret", creds)
			} else if other, dup := natsSecrets[src]; dup {
				t.Errorf("NATS credentials %s shared with %s: each service role has its own identity", src, other)
			} else {
				natsSecrets[src] = name
			}
			if given["JETSTREAM_REPLICAS"] != "3" {
				t.Errorf("JETSTREAM_REPLICAS=%q, want 3 (production cluster, DESIGN.md §12)", given["JETSTREAM_REPLICAS"])
			}
			if strings.Count(given["NATS_URL"], ",") < 2 {
				t.Errorf("NATS_URL=%q should list the three cluster nodes", given["NATS_URL"])
			}

			// Probes on the port the service listens on.
			host, port, err := net.SplitHostPort(given["HTTP_ADDR"])
			if err != nil || host != "0.0.0.0" {
				t.Errorf("HTTP_ADDR=%q must listen on all pod interfaces", given["HTTP_ADDR"])
			}
			var httpPort int32
			for _, p := range c.Ports {
				if p.Name == "http" {
					httpPort = p.ContainerPort
				}
			}
			if strconv.Itoa(int(httpPort)) != port {
				t.Errorf("container port http=%d, HTTP_ADDR port %s", httpPort, port)
			}
			for probe, want := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
				if probe == nil || probe.HTTPGet == nil {
					t.Errorf("missing %s probe", want)
					continue
				}
				if probe.HTTPGet.Path != want || probe.HTTPGet.Port.String() != "http" {
					t.Errorf("probe %s on %s, want %s on port http", probe.HTTPGet.Path, probe.HTTPGet.Port.String(), want)
				}
			}

			// Graceful termination longer than the drain.
			shutdown := 30 * time.Second
			if v := given["SHUTDOWN_TIMEOUT"]; v != "" {
				if shutdown, err = time.ParseDuration(v); err != nil {
					t.Errorf("SHUTDOWN_TIMEOUT=%q: %v", v, err)
				}
			}
			if g := pod.TerminationGracePeriodSeconds; g == nil {
				t.Errorf("terminationGracePeriodSeconds unset; it must exceed SHUTDOWN_TIMEOUT %s", shutdown)
			} else if time.Duration(*g)*time.Second <= shutdown {
				t.Errorf("terminationGracePeriodSeconds %d must exceed SHUTDOWN_TIMEOUT %s", *g, shutdown)
			}

			// Resources, hardening.
			if c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
				t.Errorf("resources incomplete: %+v", c.Resources)
			}
			if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
				t.Error("pod must run as non-root")
			}
			if c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
				t.Error("container root filesystem must be read-only")
			}
			if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
				t.Error("the services use no Kubernetes API: do not mount a token")
			}

			// A PodDisruptionBudget and a Service select exactly these pods.
			podLabels := labels.Set(d.Spec.Template.Labels)
			pdbs := 0
			for _, p := range r.pdbs {
				if p.Spec.Selector != nil && labels.SelectorFromSet(p.Spec.Selector.MatchLabels).Matches(podLabels) {
					pdbs++
					if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
						t.Error("PodDisruptionBudget sets neither maxUnavailable nor minAvailable")
					}
				}
			}
			if pdbs != 1 {
				t.Errorf("%d PodDisruptionBudgets select the pods, want 1", pdbs)
			}
			if s, ok := r.services[name]; !ok || !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
				t.Errorf("no Service selects the pods (metrics and probes)")
			}
			if d.Spec.Selector == nil || !labels.SelectorFromSet(d.Spec.Selector.MatchLabels).Matches(podLabels) {
				t.Error("Deployment selector does not match its pod template")
			}
		})
	}
	// Values reach the objects: production-values.yaml asks for 3 pg-agents
	// and a longer saga timeout.
	if d := r.deployments["pg-agent"]; d != nil && (d.Spec.Replicas == nil || *d.Spec.Replicas != 3) {
		t.Errorf("pg-agent replicas %v, want 3 from the values", d.Spec.Replicas)
	}
	if d := r.deployments["orchestrator"]; d != nil && !envHas(d.Spec.Template.Spec.Containers[0], "SAGA_TIMEOUT", "90s") {
		t.Error("orchestrator lacks SAGA_TIMEOUT=90s from services.orchestrator.env")
	}
}

func envHas(c corev1.Container, name, value string) bool {
	for _, e := range c.Env {
		if e.Name == name && e.Value == value {
			return true
		}
	}
	return false
}

// The long-running audit sink has the writer's URL only; the owner's URL
// goes to the one-shot migration Job alone, which runs before the sink's
// pods on install and upgrade.
func TestHelmAuditOwnerURLOnlyInMigrationJob(t *testing.T) {
	r := renderChart(t)
	const owner = "secret tenantprov-audit-owner/url"
	for name, d := range r.deployments {
		c := d.Spec.Template.Spec.Containers[0]
		for _, e := range c.Env {
			if strings.HasPrefix(e.Name, "AUDIT_PG_ADMIN_URL") {
				t.Errorf("%s Deployment has %s: the owner's URL belongs to the migration Job only", name, e.Name)
			}
		}
		for path, src := range mountedFiles(t, d.Spec.Template.Spec, c) {
			if src == owner {
				t.Errorf("%s Deployment mounts the audit owner's URL at %s", name, path)
			}
		}
	}
	if len(r.jobs) != 1 {
		t.Fatalf("%d Jobs, want the audit migration", len(r.jobs))
	}
	j := r.jobs[0]
	if hook := j.Annotations["helm.sh/hook"]; !strings.Contains(hook, "pre-install") || !strings.Contains(hook, "pre-upgrade") {
		t.Errorf("migration Job hook %q, want pre-install and pre-upgrade (before the sink's pods)", hook)
	}
	pod := j.Spec.Template.Spec
	c := pod.Containers[0]
	if pod.RestartPolicy != corev1.RestartPolicyNever && pod.RestartPolicy != corev1.RestartPolicyOnFailure {
		t.Errorf("restartPolicy %q", pod.RestartPolicy)
	}
	if j.Spec.ActiveDeadlineSeconds == nil {
		t.Error("the migration Job needs a deadline so a stuck migration fails the upgrade")
	}
	if want := r.deployments["audit-sink"].Spec.Template.Spec.Containers[0].Image; c.Image != want {
		t.Errorf("migration image %s, want the sink's %s", c.Image, want)
	}
	if strings.Join(c.Args, " ") != "migrate" {
		t.Errorf("migration args %q, want [migrate]", c.Args)
	}
	given := checkEnv(t, "audit-migrate", pod, c, serviceReadsTypes(t, "audit-sink", "Config", "MigrateConfig"), []string{"AUDIT_PG_URL", "AUDIT_PG_ADMIN_URL"})
	if given["AUDIT_PG_ADMIN_URL"] != owner {
		t.Errorf("migration AUDIT_PG_ADMIN_URL from %q, want %s", given["AUDIT_PG_ADMIN_URL"], owner)
	}
	if hasKey(given, "NATS_CREDS") {
		t.Error("the migration needs no NATS identity")
	}
}

// Without the required values, rendering fails and names what is missing
// instead of producing a deployment that crash-loops.
func TestHelmRequiresValues(t *testing.T) {
	out, err := exec.Command(helmBinary(t), "template", "tp", chartDir(t)).CombinedOutput()
	if err == nil {
		t.Fatalf("helm template without values succeeded:\n%.2000s", out)
	}
	if !strings.Contains(string(out), "is required") {
		t.Errorf("helm template without values failed without naming the missing value:\n%s", out)
	}
}

// helm lint passes on the chart with the production values.
func TestHelmLint(t *testing.T) {
	out, err := exec.Command(helmBinary(t), "lint", "--strict", chartDir(t), "-f", filepath.Join(chartDir(t), "ci", "production-values.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
}
