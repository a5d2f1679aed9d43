package deploy

import (
	"bufio"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/ferry-sidecar/ferry/config"
	"github.com/ferry-sidecar/ferry/metrics"
	"github.com/ferry-sidecar/ferry/sidecar"
)

var update = flag.Bool("update", false, "rewrite kubernetes/base/prometheusrule.yaml from prometheus/alerts.yaml")

const (
	dashboardFile      = "grafana/ferry.json"
	alertsFile         = "prometheus/alerts.yaml"
	alertsTestFile     = "prometheus/alerts_test.yaml"
	prometheusRuleFile = "kubernetes/base/prometheusrule.yaml"
	dockerfile         = "../Dockerfile"

	// buildCmd is the Dockerfile's build command; the test builds the same way
	// with VERSION=test and checks the Dockerfile still says this.
	versionVar = "github.com/ferry-sidecar/ferry/sidecar.Version"
	buildCmd   = `CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X ` + versionVar + `=${VERSION}" -o /out/ferry ./cmd/ferry`
)

// The -X flag silently does nothing when its target is missing or not a string
// variable; this stops compiling if sidecar.Version stops being one.
var _ *string = &sidecar.Version

// scrapeLabels are added by Prometheus and the PodMonitor, not by ferry.
var scrapeLabels = []string{"namespace", "pod", "container", "job", "instance", "endpoint", "service", "app"}

// ---------------------------------------------------------------------------
// What ferry exports.

// family is one metric family ferry's registry exposes.
type family struct {
	typ    string // COUNTER, GAUGE, HISTOGRAM, …; "" when declared but not yet gathered
	labels map[string]bool
}

// recorder is a Registerer that remembers every descriptor it sees, so that
// families without any child yet (ferry_publish_requests_total before the
// first publish: its topics are not known at start) count as exported too.
type recorder struct {
	reg   *prometheus.Registry
	descs []string
}

func (r *recorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		r.descs = append(r.descs, d.String())
	}
	return r.reg.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

var descRE = regexp.MustCompile(`^Desc\{fqName: "([^"]+)".*variableLabels: \{([^}]*)\}\}$`)

// exportedFamilies builds the registry the way main does (ferry's metrics plus
// the Go and process collectors) and returns its families by name.
func exportedFamilies(t *testing.T) map[string]family {
	t.Helper()
	r := &recorder{reg: prometheus.NewRegistry()}
	metrics.New(r, sidecar.Version, []string{"orders"})
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	fams := map[string]family{}
	for _, d := range r.descs {
		m := descRE.FindStringSubmatch(d)
		if m == nil {
			t.Fatalf("cannot parse descriptor %s", d)
		}
		f := family{labels: map[string]bool{}}
		for l := range strings.SplitSeq(m[2], ",") {
			if l = strings.TrimSuffix(strings.TrimPrefix(l, "c("), ")"); l != "" {
				f.labels[l] = true
			}
		}
		fams[m[1]] = f
	}
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		f, ok := fams[mf.GetName()]
		if !ok {
			f = family{labels: map[string]bool{}}
		}
		f.typ = mf.GetType().String()
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				f.labels[lp.GetName()] = true
			}
		}
		fams[mf.GetName()] = f
	}
	if _, ok := fams["ferry_publish_requests_total"]; !ok {
		t.Fatal("registry lacks ferry_publish_requests_total: the descriptor recorder is broken")
	}
	return fams
}

// seriesNames maps every series name a query may use (histograms add
// _bucket, _sum and _count) to the labels it may be selected by.
func seriesNames(fams map[string]family) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	with := func(f family, extra ...string) map[string]bool {
		ls := map[string]bool{}
		for l := range f.labels {
			ls[l] = true
		}
		for _, l := range append(extra, scrapeLabels...) {
			ls[l] = true
		}
		return ls
	}
	for name, f := range fams {
		out[name] = with(f)
		switch f.typ {
		case dto.MetricType_HISTOGRAM.String(), dto.MetricType_GAUGE_HISTOGRAM.String():
			delete(out, name) // a classic histogram has no series by its bare name
			out[name+"_bucket"] = with(f, "le")
			out[name+"_sum"] = with(f)
			out[name+"_count"] = with(f)
		case dto.MetricType_SUMMARY.String():
			out[name] = with(f, "quantile")
			out[name+"_sum"] = with(f)
			out[name+"_count"] = with(f)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// Reading PromQL just enough to find metric and label names.

var (
	quotedRE  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	metricRE  = regexp.MustCompile(`(?:^|[^A-Za-z0-9_:$])((?:ferry|go|process)_[A-Za-z0-9_:]*)\s*(\{[^}]*\})?`)
	matcherRE = regexp.MustCompile(`([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)`)
)

type metricRef struct {
	name   string
	labels []string // label names in the selector right after the name
}

// metricRefs returns every ferry_, go_ or process_ series an expression names,
// with the label names of its selector. String literals are blanked first, so
// a label value like job="ferry_x" is not taken for a metric.
func metricRefs(expr string) []metricRef {
	expr = quotedRE.ReplaceAllString(expr, `""`)
	var refs []metricRef
	for _, m := range metricRE.FindAllStringSubmatch(expr, -1) {
		r := metricRef{name: m[1]}
		for _, lm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
			r.labels = append(r.labels, lm[1])
		}
		refs = append(refs, r)
	}
	return refs
}

// checkExpr reports (with t.Errorf) every series name or selector label in
// expr that ferry does not export, and returns the names it found.
func checkExpr(t *testing.T, where, expr string, known map[string]map[string]bool) []string {
	t.Helper()
	refs := metricRefs(expr)
	if len(refs) == 0 {
		t.Errorf("%s: no ferry_/go_/process_ metric found in %q", where, expr)
	}
	var names []string
	for _, r := range refs {
		names = append(names, r.name)
		labels, ok := known[r.name]
		if !ok {
			t.Errorf("%s: metric %s is not exported by ferry (expr %q)", where, r.name, expr)
			continue
		}
		for _, l := range r.labels {
			if !labels[l] {
				t.Errorf("%s: metric %s has no label %q (expr %q)", where, r.name, l, expr)
			}
		}
	}
	return names
}

func TestMetricRefs(t *testing.T) {
	got := metricRefs(`histogram_quantile(0.9, sum by (le) (rate(ferry_x_bucket{pod=~"ferry_no", le!=""}[5m]))) / on() go_y` +
		` + label_values(process_z, pod) - algo_w`)
	want := []metricRef{{"ferry_x_bucket", []string{"pod", "le"}}, {"go_y", nil}, {"process_z", nil}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("metricRefs = %#v, want %#v", got, want)
	}
	known := seriesNames(exportedFamilies(t))
	for _, name := range []string{"ferry_publish_requests_total", "ferry_delivery_duration_seconds_bucket", "go_memstats_heap_inuse_bytes", "process_resident_memory_bytes", "process_cpu_seconds_total"} {
		if known[name] == nil {
			t.Errorf("%s missing from the exported series", name)
		}
	}
	// Names ferry does not export, and a histogram's bare name, which selects
	// no series.
	for _, name := range []string{"ferry_publish_requests", "ferry_deadletters_total_count", "ferry_consumer_lag_bucket",
		"ferry_outbox_bytes_max", "ferry_delivery_duration_seconds"} {
		if known[name] != nil {
			t.Errorf("%s should not count as exported", name)
		}
	}
	if known["ferry_delivery_attempts_total"]["subscription"] != true || known["ferry_delivery_attempts_total"]["topic"] {
		t.Errorf("labels of ferry_delivery_attempts_total: %v", known["ferry_delivery_attempts_total"])
	}
}

// ---------------------------------------------------------------------------
// The Grafana dashboard.

type panel struct {
	ID         int              `json:"id"`
	Type       string           `json:"type"`
	Title      string           `json:"title"`
	Datasource *datasourceRef   `json:"datasource"`
	Targets    []target         `json:"targets"`
	Panels     []panel          `json:"panels"`
	FieldCfg   *json.RawMessage `json:"fieldConfig"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	Datasource *datasourceRef `json:"datasource"`
	Expr       string         `json:"expr"`
	RefID      string         `json:"refId"`
	Exemplar   bool           `json:"exemplar"`
}

type variable struct {
	Type       string          `json:"type"`
	Name       string          `json:"name"`
	Datasource *datasourceRef  `json:"datasource"`
	Query      json.RawMessage `json:"query"`
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

var requiredRows = []string{"Publish", "Outbox", "Relay", "Delivery", "Retries", "Dead letters", "Dedupe",
	"Circuit breakers", "Throttling", "Consumer lag", "Go runtime"}

var (
	varRefRE     = regexp.MustCompile(`\$\{?([A-Za-z_][A-Za-z0-9_]*)`)
	grafanaBuilt = map[string]bool{"__rate_interval": true, "__interval": true, "__range": true, "__interval_ms": true, "__range_s": true}
)

func TestDashboard(t *testing.T) {
	known := seriesNames(exportedFamilies(t))
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID != "ferry" || d.Title != "ferry" {
		t.Errorf("uid/title = %q/%q, want ferry/ferry", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion = %d, want a current one (>= 36)", d.SchemaVersion)
	}

	used := map[string]bool{}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		switch v.Type {
		case "datasource":
			var q string
			if err := json.Unmarshal(v.Query, &q); err != nil || q != "prometheus" || v.Name != "datasource" {
				t.Errorf("datasource variable: name %q query %s, want datasource/prometheus", v.Name, v.Query)
			}
		case "query":
			if v.Datasource == nil || v.Datasource.UID != "${datasource}" {
				t.Errorf("variable %s: datasource %+v, want uid ${datasource}", v.Name, v.Datasource)
			}
			var q struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &q); err != nil {
				var s string
				if err := json.Unmarshal(v.Query, &s); err != nil {
					t.Fatalf("variable %s: query %s", v.Name, v.Query)
				}
				q.Query = s
			}
			for _, n := range checkExpr(t, "variable "+v.Name, q.Query, known) {
				used[n] = true
			}
		}
	}
	for _, want := range []string{"datasource", "namespace", "pod", "topic"} {
		if !vars[want] {
			t.Errorf("template variable %q missing", want)
		}
	}

	rows := map[string]bool{}
	ids := map[int]string{}
	var visit func(p panel, in string)
	visit = func(p panel, in string) {
		where := fmt.Sprintf("panel %q (id %d%s)", p.Title, p.ID, in)
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("%s: id also used by %q", where, prev)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			rows[p.Title] = true
			for _, c := range p.Panels {
				visit(c, ", in row "+p.Title)
			}
			return
		}
		if len(p.Panels) > 0 {
			t.Errorf("%s: only rows nest panels", where)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: datasource %+v, want uid ${datasource}", where, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no targets", where)
		}
		for _, tg := range p.Targets {
			w := where + " target " + tg.RefID
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("%s: datasource %+v, want uid ${datasource}", w, tg.Datasource)
			}
			for _, n := range checkExpr(t, w, tg.Expr, known) {
				used[n] = true
			}
			for _, m := range varRefRE.FindAllStringSubmatch(tg.Expr, -1) {
				if !vars[m[1]] && !grafanaBuilt[m[1]] {
					t.Errorf("%s: $%s is not a template variable", w, m[1])
				}
			}
			if strings.Contains(tg.Expr, "ferry_breaker_state") {
				checkBreakerMappings(t, w, p)
			}
		}
	}
	for _, p := range d.Panels {
		visit(p, "")
	}
	for _, r := range requiredRows {
		if !rows[r] {
			t.Errorf("row %q missing", r)
		}
	}

	// Every ferry family has a place on the dashboard (ferry_build_info
	// through the variables), and so do the runtime series the brief names.
	for name := range exportedFamilies(t) {
		if !strings.HasPrefix(name, "ferry_") {
			continue
		}
		if !used[name] && !used[name+"_bucket"] && !used[name+"_count"] {
			t.Errorf("dashboard does not show %s", name)
		}
	}
	for _, name := range []string{"go_memstats_heap_inuse_bytes", "process_resident_memory_bytes", "process_cpu_seconds_total"} {
		if !used[name] {
			t.Errorf("dashboard does not show %s", name)
		}
	}
}

// checkBreakerMappings wants the breaker panel to name the states of
// ferry_breaker_state: 0 closed, 1 half-open, 2 open.
func checkBreakerMappings(t *testing.T, where string, p panel) {
	t.Helper()
	var fc struct {
		Defaults struct {
			Mappings []struct {
				Type    string `json:"type"`
				Options map[string]struct {
					Text string `json:"text"`
				} `json:"options"`
			} `json:"mappings"`
		} `json:"defaults"`
	}
	if p.FieldCfg != nil {
		if err := json.Unmarshal(*p.FieldCfg, &fc); err != nil {
			t.Errorf("%s: fieldConfig: %v", where, err)
		}
	}
	got := map[string]string{}
	for _, m := range fc.Defaults.Mappings {
		for v, o := range m.Options {
			got[v] = o.Text
		}
	}
	want := map[string]string{"0": "closed", "1": "half-open", "2": "open"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s: value mappings %v, want %v", where, got, want)
	}
}

// ---------------------------------------------------------------------------
// Alert rules.

type alertRule struct {
	name, expr string
	fields     map[string]bool // keys seen in the rule: summary, runbook, severity, …
}

var keyRE = regexp.MustCompile(`^\s*(?:- )?([A-Za-z_]+):(?:\s+(.*))?$`)

// parseAlerts reads a Prometheus rule file with a line scan: enough for the
// layout of alerts.yaml (one "- alert:" per rule, expr inline or as a block
// scalar) without a YAML dependency.
func parseAlerts(t *testing.T, path string) []alertRule {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rules []alertRule
	lines := strings.Split(string(b), "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		m := keyRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		key, val := m[1], strings.TrimSpace(m[2])
		if key == "alert" {
			rules = append(rules, alertRule{name: val, fields: map[string]bool{}})
			continue
		}
		if len(rules) == 0 {
			continue
		}
		r := &rules[len(rules)-1]
		r.fields[key] = true
		if key != "expr" {
			continue
		}
		if val == "|" || val == ">" || val == "|-" || val == ">-" {
			indent := len(line) - len(strings.TrimLeft(line, " "))
			var block []string
			for i+1 < len(lines) {
				next := lines[i+1]
				if strings.TrimSpace(next) != "" && len(next)-len(strings.TrimLeft(next, " ")) <= indent {
					break
				}
				block = append(block, strings.TrimSpace(next))
				i++
			}
			val = strings.TrimSpace(strings.Join(block, " "))
		}
		r.expr = strings.Trim(val, `'"`)
	}
	return rules
}

var requiredAlerts = []string{"FerryOutboxFilling", "FerryOutboxStale", "FerryBreakerOpen",
	"FerryDeadLettersIncreasing", "FerryConsumerLagGrowing", "FerryRedisDown", "FerryOutboxDiskFull", "FerryAppUnhealthy"}

func TestAlerts(t *testing.T) {
	known := seriesNames(exportedFamilies(t))
	rules := parseAlerts(t, alertsFile)
	names := map[string]bool{}
	for _, r := range rules {
		if names[r.name] {
			t.Errorf("alert %s defined twice", r.name)
		}
		names[r.name] = true
		if r.expr == "" {
			t.Errorf("alert %s: no expr", r.name)
			continue
		}
		checkExpr(t, "alert "+r.name, r.expr, known)
		for _, f := range []string{"summary", "description", "runbook", "severity"} {
			if !r.fields[f] {
				t.Errorf("alert %s: no %s", r.name, f)
			}
		}
	}
	for _, a := range requiredAlerts {
		if !names[a] {
			t.Errorf("alert %s missing", a)
		}
	}
	// Thresholds that follow each pod's own settings, not constants.
	for _, r := range rules {
		if r.name == "FerryOutboxFilling" && !strings.Contains(r.expr, "ferry_outbox_bytes / ferry_outbox_max_bytes") {
			t.Errorf("FerryOutboxFilling: expr %q is not a ratio of ferry_outbox_bytes to ferry_outbox_max_bytes", r.expr)
		}
		if r.name == "FerryAppUnhealthy" && r.expr != "ferry_app_healthy == 0" {
			t.Errorf("FerryAppUnhealthy: expr %q, want ferry_app_healthy == 0", r.expr)
		}
	}

	t.Run("unit tests cover every alert both ways", func(t *testing.T) {
		b, err := os.ReadFile(alertsTestFile)
		if err != nil {
			t.Fatal(err)
		}
		fires, quiet := map[string]bool{}, map[string]bool{}
		var current string
		for line := range strings.Lines(string(b)) {
			s := strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(s, "alertname:"):
				current = strings.TrimSpace(strings.TrimPrefix(s, "alertname:"))
			case s == "exp_alerts: []":
				quiet[current] = true
			case s == "exp_alerts:":
				fires[current] = true
			case strings.HasPrefix(s, "- series:"):
				series := strings.Trim(strings.TrimSpace(strings.TrimPrefix(s, "- series:")), `'"`)
				checkExpr(t, alertsTestFile, series, known)
			}
		}
		for name := range names {
			if !fires[name] {
				t.Errorf("%s: no test case where %s fires", alertsTestFile, name)
			}
			if !quiet[name] {
				t.Errorf("%s: no test case where %s stays quiet", alertsTestFile, name)
			}
		}
	})

	t.Run("promtool", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Fatal("promtool not found: install it (apt-get install -y prometheus, or a release from prometheus.io/download)")
		}
		for _, args := range [][]string{{"check", "rules", alertsFile}, {"test", "rules", alertsTestFile}} {
			out, err := exec.Command(promtool, args...).CombinedOutput()
			if err != nil {
				t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	})
}

// prometheusRule is kubernetes/base/prometheusrule.yaml: alerts.yaml wrapped in a
// PrometheusRule, so the two cannot drift.
func prometheusRule(alerts []byte) []byte {
	var b bytes.Buffer
	b.WriteString(`# Generated from deploy/prometheus/alerts.yaml: do not edit; run
#   go test ./deploy -run TestPrometheusRule -update
# The Prometheus Operator loads it when the labels match the ruleSelector of
# your Prometheus resource (kube-prometheus-stack: release: <helm release>).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: ferry
  labels:
    app.kubernetes.io/name: ferry
    role: alert-rules
spec:
`)
	for line := range strings.Lines(string(alerts)) {
		if strings.TrimSpace(line) == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString("  " + line)
	}
	return b.Bytes()
}

func TestPrometheusRule(t *testing.T) {
	alerts, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	want := prometheusRule(alerts)
	if *update {
		if err := os.WriteFile(prometheusRuleFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(prometheusRuleFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not %s wrapped in a PrometheusRule; run: go test ./deploy -run TestPrometheusRule -update", prometheusRuleFile, alertsFile)
	}
}

// ---------------------------------------------------------------------------
// Kubernetes manifests and the Dockerfile.

// yamlDocs splits a multi-document YAML file on "---" lines and drops
// documents that hold only comments.
func yamlDocs(b []byte) []string {
	var docs []string
	var cur strings.Builder
	flush := func() {
		content := false
		for line := range strings.Lines(cur.String()) {
			if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
				content = true
			}
		}
		if content {
			docs = append(docs, cur.String())
		}
		cur.Reset()
	}
	for line := range strings.Lines(string(b)) {
		if strings.TrimRight(line, "\r\n") == "---" {
			flush()
			continue
		}
		cur.WriteString(line)
	}
	flush()
	return docs
}

// TestManifestsWellFormed reads every YAML file under kubernetes/ and the
// alert files as text: no tabs, and every Kubernetes document has apiVersion,
// kind and metadata (kustomization files have no metadata). What the objects
// say is checked by the kustomize tests in kubetest/, which render them.
func TestManifestsWellFormed(t *testing.T) {
	var files []string
	err := filepath.WalkDir("kubernetes", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{prometheusRuleFile, "kubernetes/base/kustomization.yaml", "kubernetes/components/ferry/kustomization.yaml",
		"kubernetes/overlays/example/kustomization.yaml", "kubernetes/keda/kustomization.yaml"} {
		if !slices.Contains(files, want) {
			t.Errorf("%s missing", want)
		}
	}
	kinds := map[string]bool{}
	for _, f := range append(files, alertsFile, alertsTestFile) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.ContainsRune(b, '\t') {
			t.Errorf("%s: tab character (YAML indents with spaces)", f)
		}
		docs := yamlDocs(b)
		if len(docs) == 0 {
			t.Errorf("%s: empty", f)
		}
		if !strings.HasPrefix(f, "kubernetes/") {
			continue
		}
		for i, d := range docs {
			top := map[string]string{}
			for line := range strings.Lines(d) {
				if m := keyRE.FindStringSubmatch(strings.TrimRight(line, "\n")); m != nil && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "-") {
					top[m[1]] = strings.TrimSpace(m[2])
				}
			}
			kustomize := top["kind"] == "Kustomization" || top["kind"] == "Component"
			if top["apiVersion"] == "" || top["kind"] == "" || (!kustomize && !strings.Contains(d, "\nmetadata:\n")) {
				t.Errorf("%s document %d: needs top-level apiVersion, kind and metadata", f, i+1)
			}
			kinds[top["kind"]] = true
		}
	}
	for _, k := range []string{"Kustomization", "Component", "Namespace", "Deployment", "Secret", "PodMonitor", "PrometheusRule",
		"StatefulSet", "Service", "ConfigMap", "ScaledObject", "TriggerAuthentication"} {
		if !kinds[k] {
			t.Errorf("no %s among the manifests", k)
		}
	}
}

// configVars returns the FERRY_* variables sidecar.Config reads.
func configVars(t *testing.T) map[string]bool {
	t.Helper()
	vars := map[string]bool{}
	typ := reflect.TypeFor[config.Config]()
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		if name != "" && name != "-" {
			vars[config.Prefix+name] = true
		}
	}
	if len(vars) < 10 {
		t.Fatalf("found only %d FERRY_ variables in config.Config", len(vars))
	}
	return vars
}

var ferryVarRE = regexp.MustCompile(`\bFERRY_[A-Z0-9_]*[A-Z0-9]`)

// TestEnvVarsExist: every FERRY_ name in deploy/ and the Dockerfile
// (manifests, runbooks, dashboard texts, README) is one ferry reads.
func TestEnvVarsExist(t *testing.T) {
	vars := configVars(t)
	files := []string{dockerfile}
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasSuffix(p, ".go") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range ferryVarRE.FindAllString(string(b), -1) {
			if !vars[v] {
				t.Errorf("%s: %s is not a variable ferry reads (config.Config)", f, v)
			}
		}
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	for _, want := range []string{
		"FROM golang:1.26 AS build", "COPY go.mod go.sum ./\nRUN go mod download", "ARG VERSION",
		"RUN " + buildCmd, "RUN mkdir -p /out/var/lib/ferry/outbox",
		"FROM gcr.io/distroless/static-debian12:nonroot",
		"COPY --from=build /out/ferry /usr/local/bin/ferry",
		"COPY --from=build --chown=65532:65532 /out/var/lib/ferry /var/lib/ferry",
		"ENV FERRY_OUTBOX_DIR=/var/lib/ferry/outbox", "VOLUME /var/lib/ferry", "USER nonroot",
		"EXPOSE 7400 7401", `ENTRYPOINT ["/usr/local/bin/ferry"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	ignore, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"go.mod", "go.sum", "cmd", "sidecar"} {
		for line := range strings.Lines(string(ignore)) {
			if l := strings.TrimSpace(line); l == must || l == must+"/" || l == "*" {
				t.Errorf(".dockerignore excludes %s, which the build needs", must)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// The binary, built the Dockerfile's way.

func TestBinary(t *testing.T) {
	if _, err := os.Stat("../cmd/ferry"); err != nil {
		t.Fatalf("../cmd/ferry: %v (the binary's main package must exist)", err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command not found: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "ferry")
	// buildCmd with VERSION=test and the test's output path.
	args := []string{"build", "-trimpath", "-ldflags", "-s -w -X " + versionVar + "=test", "-o", bin, "./cmd/ferry"}
	build := exec.Command(goBin, args...)
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go %s: %v\n%s", strings.Join(args, " "), err, out)
	}

	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("binary size: %d bytes (%.1f MiB)", fi.Size(), float64(fi.Size())/(1<<20))

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has a PT_INTERP program header: dynamically linked, it will not run on distroless/static")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("binary needs shared libraries %v (err %v)", libs, err)
	}
	if f.Section(".symtab") != nil {
		t.Error("binary has a symbol table: -s was not applied")
	}

	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	// -ldflags is not recorded with -trimpath (go.dev/issue/52372); the smoke
	// test checks its effect through ferry_build_info instead.
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings %v do not match the Dockerfile's build", settings)
	}

	t.Run("serves what the dashboard and alerts need", func(t *testing.T) { smoke(t, bin) })
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// smoke runs the binary with Redis unreachable (ferry must start and accept
// publishes anyway), publishes once, and checks that its /metrics exposes
// every series the dashboard and the alerts query.
func smoke(t *testing.T, bin string) {
	admin, listen, deadRedis := freeAddr(t), freeAddr(t), freeAddr(t)
	var stderr bytes.Buffer
	cmd := exec.Command(bin)
	cmd.Env = []string{
		"HOSTNAME=deploy-test",
		"FERRY_APP_ID=deploytest",
		"FERRY_REDIS_URL=redis://" + deadRedis + "/0",
		"FERRY_LISTEN_ADDR=" + listen,
		"FERRY_ADMIN_ADDR=" + admin,
		"FERRY_OUTBOX_DIR=" + filepath.Join(t.TempDir(), "outbox"),
		"FERRY_SUBSCRIPTIONS=orders=/orders",
		"FERRY_SHUTDOWN_TIMEOUT=2s",
	}
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			t.Logf("ferry exited after SIGTERM: %v", err)
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("ferry did not exit within 15s of SIGTERM (FERRY_SHUTDOWN_TIMEOUT=2s)")
		}
		if t.Failed() {
			t.Logf("ferry output:\n%s", stderr.String())
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	get := func(path string) (int, string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, err = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String(), err
	}
	for {
		code, _, err := get("/readyz")
		if err == nil && code == http.StatusOK {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("ferry exited before it was ready: %v", err)
		case <-ctx.Done():
			t.Fatalf("/readyz not 200 within 30s with Redis down (last: %d, %v)", code, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	if code, _, err := get("/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("/healthz: %d, %v", code, err)
	}

	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+listen+"/v1/publish/orders", strings.NewReader(`{"n":1}`))
	req.Header.Set("Content-Type", "application/json")
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Errorf("publish: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("publish with Redis down: %d, want 202", resp.StatusCode)
		}
	}

	code, body, err := get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics: %d, %v", code, err)
	}
	live := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, _, _ := strings.Cut(line, "{")
		name, _, _ = strings.Cut(name, " ")
		live[name] = true
	}
	if !live["ferry_build_info"] || !strings.Contains(body, `version="test"`) {
		t.Errorf(`/metrics: no ferry_build_info{version="test"}: the -X flag did not set sidecar.Version`)
	}

	var wanted []string
	for _, r := range parseAlerts(t, alertsFile) {
		for _, m := range metricRefs(r.expr) {
			wanted = append(wanted, m.name)
		}
	}
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	collectExprs(t, raw, &exprs)
	for _, e := range exprs {
		for _, m := range metricRefs(e) {
			wanted = append(wanted, m.name)
		}
	}
	sort.Strings(wanted)
	for _, name := range slices.Compact(wanted) {
		if !live[name] {
			t.Errorf("the running binary's /metrics has no %s, which the dashboard or an alert queries", name)
		}
	}
}

// collectExprs gathers every "expr" and variable "query" string in the
// dashboard JSON, however deeply nested.
func collectExprs(t *testing.T, raw []byte, out *[]string) {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	var walk func(any, string)
	walk = func(v any, key string) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				walk(c, k)
			}
		case []any:
			for _, c := range x {
				walk(c, key)
			}
		case string:
			if key == "expr" || (key == "query" && strings.Contains(x, "(")) {
				*out = append(*out, x)
			}
		}
	}
	walk(v, "")
	if len(*out) == 0 {
		t.Fatal(errors.New("no expressions found in the dashboard"))
	}
}

// The two delivery latency panels show exemplars (the trace ids ferry
// attaches to ferry_delivery_duration_seconds and ferry_end_to_end_seconds
// with tracing on), so a slow bucket links to its trace; no other query
// asks for them.
func TestDashboardExemplars(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"ferry_delivery_duration_seconds_bucket": false, "ferry_end_to_end_seconds_bucket": false}
	var visit func(p panel)
	visit = func(p panel) {
		for _, tg := range p.Targets {
			if !tg.Exemplar {
				continue
			}
			found := false
			for m := range want {
				if strings.Contains(tg.Expr, m) {
					want[m], found = true, true
				}
			}
			if !found {
				t.Errorf("panel %q asks for exemplars of %s, which carry none", p.Title, tg.Expr)
			}
		}
		for _, c := range p.Panels {
			visit(c)
		}
	}
	for _, p := range d.Panels {
		visit(p)
	}
	for m, ok := range want {
		if !ok {
			t.Errorf("no panel shows the exemplars of %s", m)
		}
	}
}
