package deploytest

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	promql "github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/services/minio-agent/miniostore"
	"github.com/tenantprov/tenantprov/services/orchestrator/saga"
	"github.com/tenantprov/tenantprov/testkit"
)

// pendingMetrics are names the rules and the dashboard use that no service
// exports yet. Each rule using one is marked PENDING in rules.yaml, with
// the metric's meaning; the lead wires them in the services, then deletes
// the name here (TestPendingMetricsStillPending fails as a reminder once a
// service exports it).
// None today.
var pendingMetrics = map[string]string{}

// externalMetrics are names exported by something other than tenantprov.
var externalMetrics = map[string]string{
	"up": "Prometheus itself, per scrape target",
	// The NATS project's prometheus-nats-exporter with -jsz=all
	// (collector/jsz.go: jetstream_consumer_* with stream_name, consumer_name).
	"jetstream_consumer_num_pending":     "prometheus-nats-exporter -jsz=all",
	"jetstream_consumer_num_ack_pending": "prometheus-nats-exporter -jsz=all",
	"jetstream_consumer_num_redelivered": "prometheus-nats-exporter -jsz=all",
}

// recordingRegisterer keeps every collector a metrics constructor registers,
// so their descriptions can be read even for vectors with no series yet.
type recordingRegisterer struct{ collectors []prometheus.Collector }

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return nil
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	r.collectors = append(r.collectors, cs...)
}

func (r *recordingRegisterer) Unregister(prometheus.Collector) bool { return false }

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// exportedMetrics returns every metric name the services describe, mapped
// to where it comes from.
func exportedMetrics(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	add := func(source string, cs ...prometheus.Collector) {
		ch := make(chan *prometheus.Desc, 1024)
		for _, c := range cs {
			c.Describe(ch)
		}
		close(ch)
		for d := range ch {
			m := fqName.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("%s: cannot read the name of %s", source, d)
			}
			out[m[1]] = source
		}
	}

	// pkg/service registers these in every service's registry.
	add("pkg/service (Go runtime)", collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	add("pkg/service", service.SkeletonCollectors(&service.Service{})...)

	var r recordingRegisterer
	if _, err := agent.NewMetrics(&r); err != nil {
		t.Fatal(err)
	}
	add("pkg/agent (every store agent)", r.collectors...)

	r = recordingRegisterer{}
	saga.NewMetrics(&r)
	add("services/orchestrator/saga", r.collectors...)

	r = recordingRegisterer{}
	if _, err := miniostore.NewCallMetrics(&r); err != nil {
		t.Fatal(err)
	}
	add("services/minio-agent/miniostore", r.collectors...)

	// The audit sink's metrics live in an internal package this module
	// cannot import: read the names from its source instead.
	for _, name := range metricNamesInSource(t, filepath.Join(root(t), "services", "audit-sink", "internal", "sink")) {
		out[name] = "services/audit-sink/internal/sink (source)"
	}
	return out
}

// metricNamesInSource returns the Name of every prometheus.*Opts composite
// literal in the non-test Go files of dir. Only string literals count: a
// name built at run time would be missed, so the caller's test fails on the
// rules that use it rather than passing silently.
func metricNamesInSource(t *testing.T, dir string) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatalf("parse %s: %v", file, err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			sel, ok := lit.Type.(*ast.SelectorExpr)
			if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "prometheus" {
				return true
			}
			for _, el := range lit.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Name" {
					if v, ok := kv.Value.(*ast.BasicLit); ok && v.Kind == token.STRING {
						s, _ := strconv.Unquote(v.Value)
						names = append(names, s)
					}
				}
			}
			return true
		})
	}
	if len(names) == 0 {
		t.Fatalf("found no metric names in %s: has the audit sink's metrics moved? Point this test at them", dir)
	}
	return names
}

// root is the workspace root (the directory holding go.work).
func root(t *testing.T) string {
	t.Helper()
	r := testkit.WorkspaceRoot()
	if r == "" {
		t.Fatal("go.work not found above the working directory")
	}
	return r
}

// ruleFile is the part of a Prometheus rule file these tests read.
type ruleFile struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval"`
		Rules    []rule `json:"rules"`
	} `json:"groups"`
}

type rule struct {
	Record      string            `json:"record"`
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root(t), "deploy", "prometheus", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(data, &rf); err != nil {
		t.Fatalf("rules.yaml: %v", err)
	}
	return rf
}

// dashboard is the part of a Grafana dashboard these tests read.
type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// grafanaVariables are replaced before parsing: Grafana substitutes them
// before the query reaches Prometheus.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h", "$store", "minio")

// metricNames parses a PromQL expression and returns the metric names its
// selectors name.
func metricNames(t *testing.T, where, expr string) []string {
	t.Helper()
	e, err := promql.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %v\n%s", where, err, expr)
		return nil
	}
	var names []string
	promql.Inspect(e, func(n promql.Node, _ []promql.Node) error {
		vs, ok := n.(*promql.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == "__name__" {
					name = m.Value
				}
			}
		}
		if name == "" {
			t.Errorf("%s: a selector without a metric name: %s", where, vs)
			return nil
		}
		names = append(names, name)
		return nil
	})
	return names
}

// usedMetrics returns every metric name the rules and the dashboard use,
// mapped to the first place that uses it, and the recording rules defined.
func usedMetrics(t *testing.T) (used map[string]string, recorded map[string]bool) {
	t.Helper()
	used, recorded = map[string]string{}, map[string]bool{}
	rf := loadRules(t)
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				recorded[r.Record] = true
			}
		}
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			where := "rules.yaml " + g.Name + "/" + r.Record + r.Alert
			for _, n := range metricNames(t, where, r.Expr) {
				if _, ok := used[n]; !ok {
					used[n] = where
				}
			}
		}
	}
	data, err := os.ReadFile(filepath.Join(root(t), "deploy", "grafana", "tenantprov.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("tenantprov.json: %v", err)
	}
	targets := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			targets++
			where := "tenantprov.json panel " + strconv.Quote(p.Title)
			for _, n := range metricNames(t, where, grafanaVariables.Replace(tg.Expr)) {
				if _, ok := used[n]; !ok {
					used[n] = where
				}
			}
		}
	}
	if targets < 10 {
		t.Errorf("dashboard has only %d query targets; was it emptied?", targets)
	}
	return used, recorded
}

// exportedAs reports whether name is served under a name a service
// describes: itself, or a histogram's or summary's _bucket, _sum or _count
// series.
func exportedAs(name string, exported map[string]string) bool {
	if _, ok := exported[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if _, ok := exported[base]; ok {
				return true
			}
		}
	}
	return false
}

// Every metric a rule or a dashboard panel names is exported by a service,
// defined by a recording rule, exported by a named external exporter, or
// explicitly pending.
func TestRulesAndDashboardUseExportedMetrics(t *testing.T) {
	exported := exportedMetrics(t)
	used, recorded := usedMetrics(t)
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		switch {
		case exportedAs(n, exported), recorded[n], externalMetrics[n] != "", pendingMetrics[n] != "":
		case strings.Contains(n, ":"):
			t.Errorf("%s uses recording rule %s, which rules.yaml does not define", used[n], n)
		default:
			t.Errorf("%s uses metric %s, which no service exports (add it to the service, or to pendingMetrics with a PENDING comment in rules.yaml)", used[n], n)
		}
	}
	for n := range pendingMetrics {
		if _, ok := used[n]; !ok {
			t.Errorf("pending metric %s is used by no rule or panel: remove it from pendingMetrics", n)
		}
	}
	for n := range externalMetrics {
		if _, ok := used[n]; !ok {
			t.Errorf("external metric %s is used by no rule or panel: remove it from externalMetrics", n)
		}
	}
	// The test must see the services' metrics, or it proves nothing.
	for _, want := range []string{agent.MetricCommandsTotal, "tenantprov_orchestrator_sagas_total", "tenantprov_audit_events_written_total", miniostore.MetricCallDuration, "go_goroutines"} {
		if exported[want] == "" {
			t.Errorf("exported metrics lack %s: the collection of service metrics is broken", want)
		}
	}
}

// A pending metric that a service has started exporting must leave the
// pending list (and lose its PENDING comment in rules.yaml).
func TestPendingMetricsStillPending(t *testing.T) {
	exported := exportedMetrics(t)
	for n := range pendingMetrics {
		if src, ok := exported[n]; ok {
			t.Errorf("%s is exported now (by %s): remove it from pendingMetrics and its PENDING comment from rules.yaml", n, src)
		}
	}
	data, err := os.ReadFile(filepath.Join(root(t), "deploy", "prometheus", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for n := range pendingMetrics {
		if !strings.Contains(string(data), "PENDING: "+n) {
			t.Errorf("rules.yaml has no \"PENDING: %s\" comment explaining the pending metric", n)
		}
	}
}

// Every alert says how bad it is and what happened, and every rule is named
// once.
func TestAlertsAreDescribed(t *testing.T) {
	rf := loadRules(t)
	seen := map[string]bool{}
	alerts := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			name := r.Record + r.Alert
			if (r.Record == "") == (r.Alert == "") {
				t.Errorf("group %s: a rule must have exactly one of record and alert (got %q, %q)", g.Name, r.Record, r.Alert)
			}
			if seen[name] {
				t.Errorf("rule %s defined twice", name)
			}
			seen[name] = true
			if r.Alert == "" {
				continue
			}
			alerts++
			if !strings.HasPrefix(r.Alert, "Tenantprov") {
				t.Errorf("alert %s: name alerts Tenantprov<What>", r.Alert)
			}
			switch r.Labels["severity"] {
			case "critical", "warning", "info":
			default:
				t.Errorf("alert %s: severity %q, want critical, warning or info", r.Alert, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: needs a summary and a description annotation", r.Alert)
			}
		}
	}
	if alerts < 10 {
		t.Errorf("only %d alerts", alerts)
	}
}

// The rules pass promtool's own check (syntax, templates, durations).
func TestPromtoolCheckRules(t *testing.T) {
	promtool := testkit.RequireBinary(t, "promtool", "make tools (scripts/tools.sh builds promtool from the Go module proxy)")
	rules := filepath.Join(root(t), "deploy", "prometheus", "rules.yaml")
	out, err := exec.Command(promtool, "check", "rules", rules).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// docs/PRODUCTION.md lists every alert (and no alert that does not exist),
// so an operator paged by one finds it there.
func TestProductionGuideListsEveryAlert(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root(t), "docs", "PRODUCTION.md"))
	if err != nil {
		t.Fatal(err)
	}
	guide := string(data)
	alerts := map[string]bool{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				alerts[r.Alert] = true
				if !strings.Contains(guide, "| `"+r.Alert+"` |") {
					t.Errorf("docs/PRODUCTION.md's alert table lacks %s", r.Alert)
				}
			}
		}
	}
	for _, m := range regexp.MustCompile("\\| `(Tenantprov[A-Za-z]+)` \\|").FindAllStringSubmatch(guide, -1) {
		if !alerts[m[1]] {
			t.Errorf("docs/PRODUCTION.md lists alert %s, which rules.yaml does not define", m[1])
		}
	}
}

// The rules' unit tests pass: each alert tested fires with the labels and
// annotations stated, and stays silent where it should.
func TestPromtoolTestRules(t *testing.T) {
	promtool := testkit.RequireBinary(t, "promtool", "make tools (scripts/tools.sh builds promtool from the Go module proxy)")
	cmd := exec.Command(promtool, "test", "rules", "rules_test.yaml")
	cmd.Dir = filepath.Join(root(t), "deploy", "prometheus")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// The unit tests feed series under names the services really export, or
// they would test rules against metrics that never arrive.
func TestRuleTestsUseExportedMetrics(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root(t), "deploy", "prometheus", "rules_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Tests []struct {
			Name        string `json:"name"`
			InputSeries []struct {
				Series string `json:"series"`
			} `json:"input_series"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	exported := exportedMetrics(t)
	n := 0
	for _, tc := range f.Tests {
		for _, s := range tc.InputSeries {
			n++
			for _, name := range metricNames(t, "rules_test.yaml "+strconv.Quote(tc.Name), s.Series) {
				if !exportedAs(name, exported) && externalMetrics[name] == "" {
					t.Errorf("rules_test.yaml %q feeds %s, which no service or named exporter exports", tc.Name, name)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("rules_test.yaml feeds no series")
	}
}

// The dashboard imports cleanly: unique panel ids, every query on the
// dashboard's datasource variable with its own refId, a grid position each.
func TestDashboardShape(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(root(t), "deploy", "grafana", "tenantprov.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID        string `json:"uid"`
		Templating struct {
			List []struct {
				Name string `json:"name"`
				Type string `json:"type"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int             `json:"id"`
			Type       string          `json:"type"`
			Title      string          `json:"title"`
			GridPos    *map[string]int `json:"gridPos"`
			Datasource *struct {
				UID string `json:"uid"`
			} `json:"datasource"`
			Targets []struct {
				RefID      string `json:"refId"`
				Expr       string `json:"expr"`
				Datasource *struct {
					UID string `json:"uid"`
				} `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" {
		t.Error("dashboard needs a stable uid")
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" {
		t.Error("dashboard needs a datasource variable, so it imports into any Grafana")
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil {
			t.Errorf("panel %q has no gridPos", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q does not use the datasource variable", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] || tg.Expr == "" {
				t.Errorf("panel %q: target %q has a missing or repeated refId or no expr", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
}
