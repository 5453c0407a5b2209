package obstest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// query is one PromQL expression of the deploy files, with where it is.
type query struct {
	where string // "alert VeilWorkerDown", "panel Ingest rate (A)"
	expr  string
}

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	return root
}

// ruleFile is the shape of a Prometheus rule file.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func loadRules(t *testing.T, path string) ruleFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rf
}

func alertQueries(rf ruleFile) []query {
	var qs []query
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			name := "alert " + r.Alert
			if r.Record != "" {
				name = "record " + r.Record
			}
			qs = append(qs, query{where: name, expr: strings.TrimSpace(r.Expr)})
		}
	}
	return qs
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // collapsed rows hold their panels
}

func loadDashboard(t *testing.T, path string) dashboard {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return d
}

func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// dashboardQueries returns every panel target's expression and, for each
// `label_values(selector, label)` variable, a query for its selector.
func dashboardQueries(t *testing.T, d dashboard) []query {
	t.Helper()
	var qs []query
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			qs = append(qs, query{where: fmt.Sprintf("panel %q (%s)", p.Title, tg.RefID), expr: tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			// Older dashboards store the query as a plain string.
			if err := json.Unmarshal(v.Query, &q.Query); err != nil {
				t.Fatalf("variable %s: unreadable query %s", v.Name, v.Query)
			}
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("variable %s: only label_values(selector, label) queries are checked, got %q", v.Name, q.Query)
		}
		qs = append(qs, query{where: "variable " + v.Name, expr: fmt.Sprintf("count by (%s) (%s)", m[2], m[1])})
	}
	return qs
}

var labelValues = regexp.MustCompile(`^\s*label_values\(\s*(.+)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// grafanaVars are the values Grafana's variables take in the test: every
// instance, and a rate window that spans several 1 s scrapes.
var grafanaVars = map[string]string{
	"__rate_interval": "1m",
	"__interval":      "15s",
	"__range":         "5m",
	"instance":        ".*",
}

var grafanaVar = regexp.MustCompile(`\$\{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-zA-Z]+)?\}|\$([a-zA-Z_][a-zA-Z0-9_]*)`)

// expandGrafana replaces Grafana's variables by the test's values; an
// unknown variable is an error, so that a new one is not left unchecked.
func expandGrafana(expr string) (string, error) {
	var unknown []string
	out := grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		sm := grafanaVar.FindStringSubmatch(m)
		name := sm[1] + sm[2]
		v, ok := grafanaVars[name]
		if !ok {
			unknown = append(unknown, name)
			return m
		}
		return v
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown dashboard variable(s) %v", unknown)
	}
	return out, nil
}

// scan walks expr and calls f at every byte outside quotes, brackets,
// braces and parentheses.
func scan(expr string, f func(i int) bool) {
	depth := 0
	var quote byte
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		if quote != 0 {
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
			continue
		}
		switch c {
		case '"', '\'', '`':
			quote = c
			continue
		case '(', '{', '[':
			depth++
			continue
		case ')', '}', ']':
			depth--
			continue
		}
		if depth == 0 && !f(i) {
			return
		}
	}
}

// splitAnd splits expr at its top-level `and` operators: each side of an
// alert's `and` must return data for the alert to be able to fire.
func splitAnd(expr string) []string {
	var parts []string
	start := 0
	scan(expr, func(i int) bool {
		if strings.HasPrefix(expr[i:], "and") && isBoundary(expr, i-1) && isBoundary(expr, i+3) {
			parts = append(parts, strings.TrimSpace(expr[start:i]))
			start = i + 3
		}
		return true
	})
	return append(parts, strings.TrimSpace(expr[start:]))
}

func isBoundary(s string, i int) bool {
	if i < 0 || i >= len(s) {
		return true
	}
	c := s[i]
	return !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9')
}

var scalarRHS = regexp.MustCompile(`^\s*(?:bool\s+)?[-+*/0-9.eE\s]+$`)

// stripThreshold removes a trailing top-level comparison with a number
// (`> 0.05`, `== 0`, `> 365 * 86400`), which an alert legitimately fails
// while the system is healthy. Anything else is returned unchanged.
func stripThreshold(expr string) string {
	cut := -1
	scan(expr, func(i int) bool {
		switch expr[i] {
		case '>', '<':
			cut = i
		case '=', '!':
			if i+1 < len(expr) && expr[i+1] == '=' {
				cut = i
			}
		}
		return true
	})
	if cut < 0 {
		return expr
	}
	opLen := 1
	if cut+1 < len(expr) && expr[cut+1] == '=' {
		opLen = 2
	}
	if cut > 0 && (expr[cut-1] == '>' || expr[cut-1] == '<' || expr[cut-1] == '=' || expr[cut-1] == '!') {
		// The second byte of a two-byte operator: back up to its start.
		cut--
		opLen = 2
	}
	if !scalarRHS.MatchString(expr[cut+opLen:]) {
		return expr
	}
	return strings.TrimSpace(expr[:cut])
}

var metricName = regexp.MustCompile(`\b(?:veil|go|process)_[a-zA-Z0-9_]+\b|\bup\b`)

// metricNames lists the metrics expr reads.
func metricNames(expr string) []string {
	seen := map[string]bool{}
	for _, m := range metricName.FindAllString(expr, -1) {
		seen[m] = true
	}
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out
}

func TestStripThreshold(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`up{role="worker"} == 0`, `up{role="worker"}`},
		{`sum(rate(x[5m])) > 0`, `sum(rate(x[5m]))`},
		{`a / b > 0.05`, `a / b`},
		{`max(k) > 365 * 86400`, `max(k)`},
		{`sum(x) >= bool 1`, `sum(x)`},
		{`sum(x) != 3`, `sum(x)`},
		{`sum(x) < 1e3`, `sum(x)`},
		{`rate(x{status=~"5..|Service Unavailable"}[5m])`, `rate(x{status=~"5..|Service Unavailable"}[5m])`},
		{`(a > 0) or vector(0)`, `(a > 0) or vector(0)`},
		{`a > b`, `a > b`},
		{`histogram_quantile(0.99, sum by (le) (rate(h[5m]))) > 1`, `histogram_quantile(0.99, sum by (le) (rate(h[5m])))`},
		{`x{a!="b"}`, `x{a!="b"}`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := stripThreshold(tc.in); got != tc.want {
				t.Fatalf("stripThreshold(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestSplitAnd(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`a > 0 and b == 0`, []string{`a > 0`, `b == 0`}},
		{`sum(rate(x{band="and"}[5m])) > 0`, []string{`sum(rate(x{band="and"}[5m])) > 0`}},
		{`(a and b) > 0`, []string{`(a and b) > 0`}},
		{`candy and brand`, []string{`candy`, `brand`}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got := splitAnd(tc.in)
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("splitAnd(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestExpandGrafana(t *testing.T) {
	got, err := expandGrafana(`rate(x{instance=~"$instance"}[$__rate_interval]) / ${instance:regex}`)
	if err != nil {
		t.Fatal(err)
	}
	if want := `rate(x{instance=~".*"}[1m]) / .*`; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := expandGrafana(`x{job="$job"}`); err == nil {
		t.Fatal("an unknown variable was accepted")
	}
}
