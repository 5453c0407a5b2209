// Package compose holds the tests of Veil's Compose trial
// (deploy/compose/compose.yaml): the file is loaded with the Compose
// specification's own loader, schema validation included, after
// secrets.sh has made up the secrets, and Veil loads the configuration the
// containers get.
package compose

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	yaml "go.yaml.in/yaml/v3"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/seal"
	"github.com/veilhq/veil/privacy"
)

// trialTree copies deploy/compose with the deploy/prometheus and
// deploy/grafana it refers to into a temporary directory and runs
// secrets.sh there; it returns the copy of deploy/compose.
func trialTree(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"compose", "prometheus", "grafana"} {
		if err := os.CopyFS(filepath.Join(root, d), os.DirFS(filepath.Join("..", d))); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(root, "compose")
	_ = os.RemoveAll(filepath.Join(dir, "secrets")) // a developer's own, copied along
	out, err := exec.Command("bash", filepath.Join(dir, "secrets.sh")).CombinedOutput()
	if err != nil {
		t.Fatalf("secrets.sh: %v\n%s", err, out)
	}
	return dir
}

func load(t *testing.T, dir, file string) (*types.Project, error) {
	t.Helper()
	details := types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, file)}},
		Environment: types.Mapping{},
	}
	return loader.LoadWithContext(context.Background(), details, func(o *loader.Options) { o.SetProjectName("veil", true) })
}

func TestComposeTrial(t *testing.T) {
	dir := trialTree(t)
	p, err := load(t, dir, "compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	veilRoles := []string{"migrate", "collector", "worker"}

	t.Run("services", func(t *testing.T) {
		want := []string{"clickhouse", "collector", "grafana", "kafka", "migrate", "prometheus", "worker"}
		if got := slices.Sorted(func(yield func(string) bool) {
			for name := range p.Services {
				if !yield(name) {
					return
				}
			}
		}); !slices.Equal(got, want) {
			t.Fatalf("services %v, want %v", got, want)
		}
		if img := p.Services["kafka"].Image; !strings.HasPrefix(img, "apache/kafka:4.") {
			t.Errorf("kafka image %q: want Apache Kafka's own, KRaft", img)
		}
		if env := p.Services["kafka"].Environment["KAFKA_PROCESS_ROLES"]; env == nil || *env != "broker,controller" {
			t.Errorf("kafka runs without KRaft's combined roles: %v", env)
		}
		img := p.Services["clickhouse"].Image
		repo, tag, _ := strings.Cut(img, ":")
		major, _ := strconv.Atoi(strings.Split(tag, ".")[0])
		if repo != "clickhouse/clickhouse-server" || major < 24 {
			t.Errorf("clickhouse image %q: want clickhouse/clickhouse-server 24 or later", img)
		}
	})

	t.Run("dependencies", func(t *testing.T) {
		want := map[string]map[string]string{
			"migrate":    {"kafka": "service_healthy", "clickhouse": "service_healthy"},
			"collector":  {"migrate": "service_completed_successfully", "kafka": "service_healthy"},
			"worker":     {"migrate": "service_completed_successfully", "kafka": "service_healthy", "clickhouse": "service_healthy"},
			"prometheus": {"collector": "service_started", "worker": "service_started"},
			"grafana":    {"prometheus": "service_healthy"},
		}
		for svc, deps := range want {
			got := map[string]string{}
			for name, d := range p.Services[svc].DependsOn {
				got[name] = d.Condition
			}
			if !mapsEqual(got, deps) {
				t.Errorf("%s depends on %v, want %v", svc, got, deps)
			}
		}
		if r := p.Services["migrate"].Restart; r != "no" {
			t.Errorf("migrate restarts (%q); it is a one-shot", r)
		}
	})

	cfgPath := filepath.Join(dir, "veil.yaml")
	ports := listenPorts(t, cfgPath)
	t.Run("healthchecks", func(t *testing.T) {
		for name, svc := range p.Services {
			hc := svc.HealthCheck
			if name == "migrate" {
				if hc != nil {
					t.Errorf("migrate has a health check; it runs once")
				}
				continue
			}
			if hc == nil || hc.Disable || len(hc.Test) < 2 {
				t.Errorf("%s has no health check", name)
			}
		}
		// Veil's image has no shell: its checks run the binary, on the
		// port its configuration listens on.
		for role, port := range map[string]string{"collector": ports["collector"], "worker": ports["admin"]} {
			want := []string{"CMD", "/veil", "healthcheck", "http://127.0.0.1:" + port + "/readyz"}
			if got := p.Services[role].HealthCheck.Test; !slices.Equal(got, want) {
				t.Errorf("%s health check %v, want %v", role, got, want)
			}
		}
	})

	t.Run("Veil's containers", func(t *testing.T) {
		for _, role := range veilRoles {
			svc := p.Services[role]
			if svc.Image != "veil:local" {
				t.Errorf("%s image %q", role, svc.Image)
			}
			if want := []string{role, "--config", "/etc/veil/veil.yaml"}; !slices.Equal(svc.Command, want) {
				t.Errorf("%s command %v, want %v", role, svc.Command, want)
			}
			if !svc.ReadOnly || !slices.Equal(svc.CapDrop, []string{"ALL"}) || !slices.Contains(svc.SecurityOpt, "no-new-privileges:true") {
				t.Errorf("%s: read_only %v, cap_drop %v, security_opt %v", role, svc.ReadOnly, svc.CapDrop, svc.SecurityOpt)
			}
			if len(svc.Configs) != 1 || svc.Configs[0].Source != "veil" || svc.Configs[0].Target != "/etc/veil/veil.yaml" {
				t.Errorf("%s configs %+v", role, svc.Configs)
			}
		}
	})

	t.Run("the collector spools to its own volume", func(t *testing.T) {
		var cfg struct {
			Collector struct {
				Spool struct {
					Dir string `yaml:"dir"`
				} `yaml:"spool"`
			} `yaml:"collector"`
		}
		readYAML(t, cfgPath, &cfg)
		dir := cfg.Collector.Spool.Dir
		var mounted string
		for _, v := range p.Services["collector"].Volumes {
			if v.Type == types.VolumeTypeVolume && strings.HasPrefix(dir, v.Target+"/") {
				mounted = v.Source
			}
		}
		if dir == "" || mounted == "" {
			t.Fatalf("collector.spool.dir %q is on no volume of the collector's: %+v", dir, p.Services["collector"].Volumes)
		}
		if _, ok := p.Volumes[mounted]; !ok {
			t.Errorf("the spool's volume %q is not declared", mounted)
		}
	})

	t.Run("referenced files exist", func(t *testing.T) {
		var files []string
		for _, c := range p.Configs {
			files = append(files, c.File)
		}
		for _, s := range p.Secrets {
			files = append(files, s.File)
		}
		for _, svc := range p.Services {
			for _, v := range svc.Volumes {
				if v.Type == types.VolumeTypeBind {
					files = append(files, v.Source)
				}
			}
		}
		if len(files) < 10 {
			t.Fatalf("only %d files referenced: %v", len(files), files)
		}
		for _, f := range files {
			if _, err := os.Stat(f); err != nil {
				t.Errorf("%v", err)
			}
		}
	})

	t.Run("alerts and dashboard are deploy/'s", func(t *testing.T) {
		mounts := map[string]string{}
		for _, name := range []string{"prometheus", "grafana"} {
			for _, v := range p.Services[name].Volumes {
				mounts[v.Target] = v.Source
			}
		}
		for target, source := range map[string]string{
			"/etc/prometheus/alerts.yml":            filepath.Join(dir, "..", "prometheus", "alerts.yml"),
			"/var/lib/grafana/dashboards/veil.json": filepath.Join(dir, "..", "grafana", "veil.json"),
			"/etc/prometheus/prometheus.yml":        filepath.Join(dir, "prometheus.yml"),
			"/etc/grafana/provisioning":             filepath.Join(dir, "grafana", "provisioning"),
		} {
			if filepath.Clean(mounts[target]) != filepath.Clean(source) {
				t.Errorf("%s comes from %q, want %q", target, mounts[target], source)
			}
		}
		var prom struct {
			RuleFiles     []string `yaml:"rule_files"`
			ScrapeConfigs []struct {
				StaticConfigs []struct {
					Targets []string          `yaml:"targets"`
					Labels  map[string]string `yaml:"labels"`
				} `yaml:"static_configs"`
			} `yaml:"scrape_configs"`
		}
		readYAML(t, filepath.Join(dir, "prometheus.yml"), &prom)
		if !slices.Equal(prom.RuleFiles, []string{"/etc/prometheus/alerts.yml"}) {
			t.Errorf("rule_files %v", prom.RuleFiles)
		}
		targets := map[string]string{}
		for _, sc := range prom.ScrapeConfigs {
			for _, st := range sc.StaticConfigs {
				for _, tg := range st.Targets {
					targets[st.Labels["role"]] = tg
				}
			}
		}
		if want := map[string]string{"collector": "collector:" + ports["collector"], "worker": "worker:" + ports["admin"]}; !mapsEqual(targets, want) {
			t.Errorf("Prometheus scrapes %v, want %v with their role label", targets, want)
		}
	})

	t.Run("Veil loads its configuration with the secrets secrets.sh made", func(t *testing.T) {
		text, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		// Every secret the configuration reads is given to Veil's containers.
		for _, role := range veilRoles {
			var given []string
			for _, s := range p.Services[role].Secrets {
				given = append(given, s.Source)
			}
			for _, line := range strings.Split(string(text), "\n") {
				if _, after, ok := strings.Cut(line, "/run/secrets/"); ok {
					name := strings.TrimRight(after, "}\" ")
					if !slices.Contains(given, name) {
						t.Errorf("%s is not given secret %s, which veil.yaml reads", role, name)
					}
				}
			}
		}
		local := strings.ReplaceAll(string(text), "/run/secrets/", filepath.Join(dir, "secrets")+"/")
		path := filepath.Join(t.TempDir(), "veil.yaml")
		if err := os.WriteFile(path, []byte(local), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := app.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pseudonym.LoadKeyring(cfg.Deidentify.KeySource()); err != nil {
			t.Errorf("the pseudonym keys secrets.sh made: %v", err)
		}
		if _, err := seal.Load(cfg.Seal.Source(), cfg.Seal.ActivationDelay); err != nil {
			t.Errorf("the seal keys secrets.sh made: %v", err)
		}
		if tok, err := privacy.LoadAdminToken(cfg.Privacy); err != nil || len(tok) != 64 {
			t.Errorf("the admin token secrets.sh made: %d characters, %v", len(tok), err)
		}
		if len(cfg.Collector.Projects[0].Token) != 32 || len(cfg.Sink.Password) != 48 {
			t.Errorf("project token of %d characters, ClickHouse password of %d", len(cfg.Collector.Projects[0].Token), len(cfg.Sink.Password))
		}
		if cfg.Kafka.Partitions < 1 || cfg.Kafka.ReplicationFactor != 1 {
			t.Errorf("kafka.partitions %d, replication_factor %d on one broker", cfg.Kafka.Partitions, cfg.Kafka.ReplicationFactor)
		}
	})

	t.Run("secrets.sh keeps what it made", func(t *testing.T) {
		before, err := os.ReadFile(filepath.Join(dir, "secrets", "pseudonym_keys"))
		if err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("bash", filepath.Join(dir, "secrets.sh")).CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		after, _ := os.ReadFile(filepath.Join(dir, "secrets", "pseudonym_keys"))
		if string(before) != string(after) {
			t.Fatal("a second run replaced the pseudonym keys")
		}
		st, err := os.Stat(filepath.Join(dir, "secrets"))
		if err != nil || st.Mode().Perm() != 0o700 {
			t.Fatalf("secrets/ mode %v, want 0700", st.Mode().Perm())
		}
	})
}

// The loader is strict: a misspelt key is an error, not ignored.
func TestComposeLoaderIsStrict(t *testing.T) {
	dir := trialTree(t)
	b, err := os.ReadFile(filepath.Join(dir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(b), "    stop_grace_period: 30s", "    stop_grace_periode: 30s", 1)
	if bad == string(b) {
		t.Fatal("compose.yaml has no stop_grace_period to misspell")
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := load(t, dir, "bad.yaml"); err == nil || !strings.Contains(err.Error(), "stop_grace_periode") {
		t.Fatalf("a misspelt key loaded: %v", err)
	}
}

func listenPorts(t *testing.T, path string) map[string]string {
	var cfg struct {
		Collector struct {
			Listen string `yaml:"listen"`
		} `yaml:"collector"`
		Admin struct {
			Listen string `yaml:"listen"`
		} `yaml:"admin"`
	}
	readYAML(t, path, &cfg)
	port := func(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }
	return map[string]string{"collector": port(cfg.Collector.Listen), "admin": port(cfg.Admin.Listen)}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
