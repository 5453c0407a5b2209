// Package helm holds the tests of Veil's Helm chart (deploy/helm/veil): the
// chart is rendered with Helm's own library, every manifest is decoded
// strictly into the Kubernetes and Prometheus Operator API types, and the
// configuration it renders is loaded by Veil itself.
package helm

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/yaml"

	"github.com/veilhq/veil/deidentify/pseudonym"
	"github.com/veilhq/veil/internal/app"
	"github.com/veilhq/veil/internal/seal"
)

const chartDir = "veil"

// manifests are the decoded objects of one rendering, by "Kind/name".
type manifests map[string]runtime.Object

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// render renders the chart as `helm install veil -n analytics` would with
// these values over the chart's own, schema validation included.
func render(ch *chart.Chart, vals map[string]any) (map[string]string, error) {
	top, err := util.ToRenderValuesWithSchemaValidation(ch, vals,
		common.ReleaseOptions{Name: "veil", Namespace: "analytics", Revision: 1, IsInstall: true}, nil, false)
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, top)
}

// decoder decodes YAML strictly (unknown and duplicate fields are errors)
// into the API types of every kind the chart renders.
func decoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		policyv1.AddToScheme, autoscalingv2.AddToScheme, monitoringv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

func decodeAll(t *testing.T, files map[string]string) manifests {
	t.Helper()
	dec := decoder(t)
	out := manifests{}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range files {
			if !yield(k) {
				return
			}
		}
	})
	for _, file := range names {
		if !strings.HasSuffix(file, ".yaml") {
			continue // NOTES.txt
		}
		for _, doc := range splitDocuments(files[file]) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			obj, gvk, err := dec.Decode([]byte(doc), nil, nil)
			if err != nil {
				t.Fatalf("%s: %v\n%s", file, err, doc)
			}
			meta, ok := obj.(interface{ GetName() string })
			if !ok {
				t.Fatalf("%s: %s has no name", file, gvk)
			}
			key := gvk.Kind + "/" + meta.GetName()
			if _, dup := out[key]; dup {
				t.Fatalf("%s rendered twice", key)
			}
			out[key] = obj
		}
	}
	return out
}

// splitDocuments splits a multi-document YAML file at its `---` lines.
func splitDocuments(s string) []string {
	var docs []string
	var cur strings.Builder
	for line := range strings.SplitSeq(s, "\n") {
		if strings.TrimRight(line, " ") == "---" {
			docs = append(docs, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteString(line + "\n")
	}
	return append(docs, cur.String())
}

func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func readValues(t *testing.T, path string) map[string]any {
	t.Helper()
	v, err := common.ReadValuesFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func keys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// trialSecrets are secrets.files for the default values' config, each a
// canary that must never appear outside a Secret.
func trialSecrets() map[string]any {
	return map[string]any{
		"project-token":       "canary-project-token-5c1e",
		"project-secret":      "canary-project-secret-9a0b",
		"clickhouse-password": "canary-clickhouse-password-77d3",
		"admin.token":         "canary-admin-token-2f48",
		// A 32-byte key in deidentify/pseudonym's format.
		"pseudonym.keys": "1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xab}, 32)) + "\n",
		// And the seal key, in the same format.
		"seal.keys": "1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xcd}, 32)) + "\n",
	}
}

func TestChartRenders(t *testing.T) {
	ch := loadChart(t)
	cases := []struct {
		name       string
		values     map[string]any
		wantKinds  []string
		workers    int32
		secretKeys []string // keys of the Secret the chart creates, if any
	}{
		{
			name:   "default values",
			values: map[string]any{},
			wantKinds: []string{"ConfigMap/veil", "ConfigMap/veil-migrate", "Deployment/veil-collector", "Deployment/veil-worker",
				"HorizontalPodAutoscaler/veil-collector", "Job/veil-migrate", "PodDisruptionBudget/veil-collector",
				"PodDisruptionBudget/veil-worker", "Service/veil-collector", "Service/veil-worker"},
			workers: 3,
		},
		{
			name:   "secrets from values",
			values: map[string]any{"secrets": map[string]any{"files": trialSecrets()}},
			wantKinds: []string{"ConfigMap/veil", "ConfigMap/veil-migrate", "Deployment/veil-collector", "Deployment/veil-worker",
				"HorizontalPodAutoscaler/veil-collector", "Job/veil-migrate", "PodDisruptionBudget/veil-collector",
				"PodDisruptionBudget/veil-worker", "Secret/veil", "Secret/veil-migrate", "Service/veil-collector", "Service/veil-worker"},
			workers:    3,
			secretKeys: keys(trialSecrets()),
		},
		{
			name: "spool",
			values: map[string]any{"collector": map[string]any{"replicas": 3, "autoscaling": map[string]any{"enabled": false},
				"spool": map[string]any{"enabled": true, "storageClassName": "fast"}}},
			wantKinds: []string{"ConfigMap/veil", "ConfigMap/veil-migrate", "Deployment/veil-worker", "Job/veil-migrate",
				"PodDisruptionBudget/veil-collector", "PodDisruptionBudget/veil-worker", "Service/veil-collector", "Service/veil-worker",
				"StatefulSet/veil-collector"},
			workers: 3,
		},
		{
			name:   "production example",
			values: readValues(t, filepath.Join("examples", "production.yaml")),
			wantKinds: []string{"ConfigMap/veil", "ConfigMap/veil-dashboard", "ConfigMap/veil-migrate", "Deployment/veil-collector",
				"Deployment/veil-worker", "HorizontalPodAutoscaler/veil-collector", "Job/veil-migrate", "PodDisruptionBudget/veil-collector",
				"PodDisruptionBudget/veil-worker", "PrometheusRule/veil", "Service/veil-collector", "Service/veil-worker", "ServiceMonitor/veil"},
			workers: 12,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files, err := render(ch, tc.values)
			if err != nil {
				t.Fatal(err)
			}
			objs := decodeAll(t, files)
			if got := keys(objs); !slices.Equal(got, tc.wantKinds) {
				t.Fatalf("rendered %v\nwant     %v", got, tc.wantKinds)
			}
			checkPods(t, objs)
			checkMigrateHook(t, objs)
			checkNoSecretOutsideSecrets(t, objs)
			if w := objs["Deployment/veil-worker"].(*appsv1.Deployment); *w.Spec.Replicas != tc.workers {
				t.Errorf("worker replicas %d, want %d", *w.Spec.Replicas, tc.workers)
			}
			if c, ok := objs["Deployment/veil-collector"].(*appsv1.Deployment); ok && c.Spec.Replicas != nil {
				t.Errorf("collector replicas set to %d beside its autoscaler", *c.Spec.Replicas)
			}
			if len(tc.secretKeys) > 0 {
				for _, name := range []string{"Secret/veil", "Secret/veil-migrate"} {
					s := objs[name].(*corev1.Secret)
					if got := keys(s.Data); !slices.Equal(got, tc.secretKeys) {
						t.Errorf("%s has keys %v, want %v", name, got, tc.secretKeys)
					}
					if string(s.Data["clickhouse-password"]) != "canary-clickhouse-password-77d3" {
						t.Errorf("%s clickhouse-password = %q", name, s.Data["clickhouse-password"])
					}
				}
			}
			cfg := checkVeilLoadsConfig(t, objs, tc.values)
			if _, ok := objs["StatefulSet/veil-collector"]; ok {
				checkSpool(t, objs, cfg)
			} else if cfg.Collector.Spool.Enabled() {
				t.Errorf("collectors without volumes spool to %s", cfg.Collector.Spool.Dir)
			}
		})
	}
}

// checkSpool: with collector.spool on, each collector is a StatefulSet pod
// with a claim of its own that outlives it, mounted where Veil's
// configuration puts the spool.
func checkSpool(t *testing.T, objs manifests, cfg app.Config) {
	t.Helper()
	ss := objs["StatefulSet/veil-collector"].(*appsv1.StatefulSet)
	if ss.Spec.Replicas == nil || *ss.Spec.Replicas != 3 || ss.Spec.ServiceName != "veil-collector" || ss.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("StatefulSet spec: replicas %v, serviceName %q, podManagementPolicy %q", ss.Spec.Replicas, ss.Spec.ServiceName, ss.Spec.PodManagementPolicy)
	}
	if p := ss.Spec.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType ||
		p.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("claims are not kept when the collectors are scaled down or deleted: %+v", p)
	}
	if len(ss.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("%d volume claim templates", len(ss.Spec.VolumeClaimTemplates))
	}
	claim := ss.Spec.VolumeClaimTemplates[0]
	size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	if claim.Name != "spool" || size.String() != "2Gi" || claim.Spec.StorageClassName == nil || *claim.Spec.StorageClassName != "fast" ||
		!slices.Equal(claim.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("claim %s: %s of class %v, modes %v", claim.Name, size.String(), claim.Spec.StorageClassName, claim.Spec.AccessModes)
	}
	mounted := ""
	for _, m := range ss.Spec.Template.Spec.Containers[0].VolumeMounts {
		if m.Name == "spool" {
			mounted = m.MountPath
		}
	}
	if mounted == "" || cfg.Collector.Spool.Dir != mounted+"/spool" {
		t.Errorf("the claim is mounted at %q and Veil spools to %q", mounted, cfg.Collector.Spool.Dir)
	}
}

// collectorPod is the collectors' pod template, a Deployment's or, with
// the spool, a StatefulSet's.
func collectorPod(objs manifests) corev1.PodSpec {
	if ss, ok := objs["StatefulSet/veil-collector"].(*appsv1.StatefulSet); ok {
		return ss.Spec.Template.Spec
	}
	return objs["Deployment/veil-collector"].(*appsv1.Deployment).Spec.Template.Spec
}

// checkPods: every pod runs unprivileged on a read-only root filesystem,
// and the long-running ones are probed on /healthz and /readyz.
func checkPods(t *testing.T, objs manifests) {
	t.Helper()
	pods := map[string]corev1.PodSpec{
		"collector": collectorPod(objs),
		"worker":    objs["Deployment/veil-worker"].(*appsv1.Deployment).Spec.Template.Spec,
		"migrate":   objs["Job/veil-migrate"].(*batchv1.Job).Spec.Template.Spec,
	}
	for role, pod := range pods {
		t.Run(role, func(t *testing.T) {
			psc := pod.SecurityContext
			if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil ||
				psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || psc.RunAsUser == nil || *psc.RunAsUser != 65532 {
				t.Errorf("pod securityContext %+v", psc)
			}
			if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
				t.Error("pods mount a service account token; Veil does not talk to the Kubernetes API")
			}
			if len(pod.Containers) != 1 {
				t.Fatalf("%d containers", len(pod.Containers))
			}
			c := pod.Containers[0]
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
				sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 ||
				sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("container securityContext %+v", sc)
			}
			if want := []string{role, "--config", "/etc/veil/veil.yaml"}; !slices.Equal(c.Args, want) {
				t.Errorf("args %v, want %v", c.Args, want)
			}
			if c.Image != "veil:0.1.0" && !strings.HasPrefix(c.Image, "registry.example.com/veil:") {
				t.Errorf("image %q", c.Image)
			}
			mounts := map[string]string{}
			for _, m := range c.VolumeMounts {
				mounts[m.Name] = m.MountPath
			}
			if mounts["config"] != "/etc/veil/veil.yaml" || mounts["secrets"] != "/etc/veil/secrets" || mounts["tmp"] != "/tmp" {
				t.Errorf("volume mounts %v", mounts)
			}
			if role == "migrate" {
				return
			}
			port := map[string]string{"collector": "http", "worker": "admin"}[role]
			number := map[string]int32{"collector": 8080, "worker": 9464}[role]
			if len(c.Ports) != 1 || c.Ports[0].Name != port || c.Ports[0].ContainerPort != number {
				t.Errorf("ports %+v, want %s on %d", c.Ports, port, number)
			}
			for probe, want := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
				if want == nil || want.HTTPGet == nil || want.HTTPGet.Path != probe || want.HTTPGet.Port.String() != port {
					t.Errorf("probe on %s missing or wrong: %+v", probe, want)
				}
			}
			if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds < 30 {
				t.Errorf("terminationGracePeriodSeconds %v shorter than the drain", pod.TerminationGracePeriodSeconds)
			}
		})
	}
	if s := objs["Deployment/veil-worker"].(*appsv1.Deployment).Spec.Strategy.RollingUpdate; s == nil || s.MaxSurge == nil || s.MaxSurge.IntValue() != 0 {
		t.Errorf("worker rollout may surge above replicas (and partitions): %+v", s)
	}
	for _, svc := range []string{"Service/veil-collector", "Service/veil-worker"} {
		if objs[svc].(*corev1.Service).Spec.Ports[0].TargetPort.String() == "" {
			t.Errorf("%s has no target port", svc)
		}
	}
}

// checkMigrateHook: the migration runs before install and upgrade, with a
// configuration of its own created before it.
func checkMigrateHook(t *testing.T, objs manifests) {
	t.Helper()
	job := objs["Job/veil-migrate"].(*batchv1.Job)
	cm := objs["ConfigMap/veil-migrate"].(*corev1.ConfigMap)
	for name, ann := range map[string]map[string]string{"job": job.Annotations, "configmap": cm.Annotations} {
		if ann["helm.sh/hook"] != "pre-install,pre-upgrade" || ann["helm.sh/hook-delete-policy"] != "before-hook-creation,hook-succeeded" {
			t.Errorf("%s hook annotations %v", name, ann)
		}
	}
	if job.Annotations["helm.sh/hook-weight"] != "0" || cm.Annotations["helm.sh/hook-weight"] != "-10" {
		t.Errorf("the migrate ConfigMap (weight %s) is not created before the Job (weight %s)",
			cm.Annotations["helm.sh/hook-weight"], job.Annotations["helm.sh/hook-weight"])
	}
	if job.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy %s", job.Spec.Template.Spec.RestartPolicy)
	}
	if main := objs["ConfigMap/veil"].(*corev1.ConfigMap); main.Data["veil.yaml"] != cm.Data["veil.yaml"] {
		t.Error("the migration's configuration differs from the pods'")
	}
	for _, v := range job.Spec.Template.Spec.Volumes {
		if v.Name == "config" && v.ConfigMap.Name != "veil-migrate" {
			t.Errorf("the migrate Job mounts ConfigMap %s, which a pre-install hook cannot rely on", v.ConfigMap.Name)
		}
	}
}

// checkNoSecretOutsideSecrets: no canary of trialSecrets, and no value of
// a key named like a secret, is in anything but a Secret.
func checkNoSecretOutsideSecrets(t *testing.T, objs manifests) {
	t.Helper()
	for name, obj := range objs {
		if _, ok := obj.(*corev1.Secret); ok {
			continue
		}
		b, err := yaml.Marshal(obj)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("canary-")) {
			t.Errorf("%s holds a secret's value", name)
		}
	}
}

// checkVeilLoadsConfig loads the rendered veil.yaml with Veil's own
// loader, the secrets it refers to in place, as a pod would.
func checkVeilLoadsConfig(t *testing.T, objs manifests, values map[string]any) app.Config {
	t.Helper()
	dir := t.TempDir()
	for name, content := range trialSecrets() {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content.(string)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfgText := objs["ConfigMap/veil"].(*corev1.ConfigMap).Data["veil.yaml"]
	// The production example's own secret names.
	for _, name := range []string{"shop-token", "shop-secret", "importer-secret", "analyst-password"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("value-of-"+name), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfgText = strings.ReplaceAll(cfgText, "/etc/veil/secrets/", dir+"/")
	path := filepath.Join(dir, "veil.yaml")
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := app.Load(path)
	if err != nil {
		t.Fatalf("Veil refuses the rendered configuration: %v", err)
	}
	if _, err := pseudonym.LoadKeyring(cfg.Deidentify.KeySource()); err != nil {
		t.Fatalf("Veil refuses the pseudonym keys: %v", err)
	}
	if _, err := seal.Load(cfg.Seal.Source(), cfg.Seal.ActivationDelay); err != nil {
		t.Fatalf("Veil refuses the seal keys: %v", err)
	}
	if cfg.Collector.Listen != "0.0.0.0:8080" || cfg.Admin.Listen != "0.0.0.0:9464" || cfg.Sink.Password == "" ||
		strings.HasPrefix(cfg.Sink.Password, "${") || len(cfg.Collector.Projects) == 0 || cfg.Collector.Projects[0].Token == "" {
		t.Fatalf("rendered configuration read as %+v", cfg)
	}
	return cfg
}

// The alert rules and the dashboard have one home, deploy/prometheus and
// deploy/grafana; the chart's files/ link to them, and a packaged chart
// (helm package) carries their content.
func TestChartCarriesAlertsAndDashboard(t *testing.T) {
	alerts, err := os.ReadFile(filepath.Join("..", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dashboard, err := os.ReadFile(filepath.Join("..", "grafana", "veil.json"))
	if err != nil {
		t.Fatal(err)
	}
	ch := loadChart(t)
	tgz, err := chartutil.Save(ch, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	packaged, err := loader.Load(tgz)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*chart.Chart{"chart directory": ch, "packaged chart": packaged} {
		t.Run(name, func(t *testing.T) {
			got := map[string][]byte{}
			for _, f := range c.Files {
				got[f.Name] = f.Data
			}
			if !bytes.Equal(got["files/alerts.yml"], alerts) {
				t.Error("files/alerts.yml differs from deploy/prometheus/alerts.yml")
			}
			if !bytes.Equal(got["files/veil.json"], dashboard) {
				t.Error("files/veil.json differs from deploy/grafana/veil.json")
			}
		})
	}

	files, err := render(ch, readValues(t, filepath.Join("examples", "production.yaml")))
	if err != nil {
		t.Fatal(err)
	}
	objs := decodeAll(t, files)
	t.Run("PrometheusRule holds alerts.yml's groups", func(t *testing.T) {
		var want monitoringv1.PrometheusRuleSpec
		if err := yaml.UnmarshalStrict(alerts, &want); err != nil {
			t.Fatalf("deploy/prometheus/alerts.yml is not a PrometheusRule's spec: %v", err)
		}
		got := objs["PrometheusRule/veil"].(*monitoringv1.PrometheusRule)
		if len(want.Groups) == 0 || !reflect.DeepEqual(got.Spec, want) {
			t.Fatalf("PrometheusRule spec differs from alerts.yml:\n%+v\n%+v", got.Spec, want)
		}
		if got.Labels["release"] != "kube-prometheus-stack" {
			t.Errorf("labels %v", got.Labels)
		}
	})
	t.Run("dashboard ConfigMap holds veil.json", func(t *testing.T) {
		cm := objs["ConfigMap/veil-dashboard"].(*corev1.ConfigMap)
		if strings.TrimRight(cm.Data["veil.json"], "\n") != strings.TrimRight(string(dashboard), "\n") || cm.Labels["grafana_dashboard"] != "1" {
			t.Fatalf("dashboard ConfigMap labels %v, %d bytes of JSON for %d", cm.Labels, len(cm.Data["veil.json"]), len(dashboard))
		}
	})
	t.Run("ServiceMonitor scrapes both roles with their role label", func(t *testing.T) {
		sm := objs["ServiceMonitor/veil"].(*monitoringv1.ServiceMonitor)
		var ports []string
		for _, ep := range sm.Spec.Endpoints {
			ports = append(ports, ep.Port)
			if ep.Path != "/metrics" || len(ep.RelabelConfigs) == 0 || ep.RelabelConfigs[0].TargetLabel != "role" ||
				ep.RelabelConfigs[0].SourceLabels[0] != "__meta_kubernetes_pod_label_app_kubernetes_io_component" {
				t.Errorf("endpoint %+v", ep)
			}
		}
		if !slices.Equal(ports, []string{"http", "admin"}) {
			t.Errorf("scraped ports %v", ports)
		}
		// The ports it names are the Services' port names.
		for svc, port := range map[string]string{"Service/veil-collector": "http", "Service/veil-worker": "admin"} {
			if objs[svc].(*corev1.Service).Spec.Ports[0].Name != port {
				t.Errorf("%s has no port named %s", svc, port)
			}
		}
	})
}

// Helm's own linter, as `helm lint --strict` runs it, finds nothing.
func TestChartLints(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"default values":     {},
		"production example": readValues(t, filepath.Join("examples", "production.yaml")),
	} {
		t.Run(name, func(t *testing.T) {
			res := lint.RunAll(chartDir, vals, "analytics")
			for _, m := range res.Messages {
				if m.Severity > support.InfoSev {
					t.Errorf("%s", m)
				}
			}
		})
	}
}

// Values that would deploy a broken or leaky Veil are refused before
// anything reaches the cluster: by values.schema.json where JSON Schema can
// say it, by the templates otherwise.
func TestChartRejectsBadValues(t *testing.T) {
	ch := loadChart(t)
	project := func(token string) map[string]any {
		return map[string]any{"collector": map[string]any{"listen": "0.0.0.0:8080", "projects": []any{
			map[string]any{"name": "shop", "id": "1", "token": token}}}}
	}
	cases := []struct {
		name   string
		values map[string]any
		want   string // in the error; "" means the values are accepted
	}{
		{"more workers than partitions", map[string]any{"worker": map[string]any{"replicas": 13}},
			"worker.replicas (13) exceeds config.kafka.partitions (12)"},
		{"more workers than raised partitions", map[string]any{"worker": map[string]any{"replicas": 25}, "config": map[string]any{"kafka": map[string]any{"partitions": 24}}},
			"worker.replicas (25) exceeds config.kafka.partitions (24)"},
		{"as many workers as partitions", map[string]any{"worker": map[string]any{"replicas": 24}, "config": map[string]any{"kafka": map[string]any{"partitions": 24}}},
			""},
		{"no worker", map[string]any{"worker": map[string]any{"replicas": 0}}, "/worker/replicas"},
		{"replicas as text", map[string]any{"worker": map[string]any{"replicas": "3"}}, "/worker/replicas"},
		{"zero partitions", map[string]any{"config": map[string]any{"kafka": map[string]any{"partitions": 0}}}, "/config/kafka/partitions"},
		{"password in clear", map[string]any{"config": map[string]any{"sink": map[string]any{"password": "canary-hunter2"}}},
			"config.sink.password holds a secret in clear"},
		{"analyst password in clear", map[string]any{"config": map[string]any{"sink": map[string]any{"analyst_password": "canary-hunter2"}}},
			"config.sink.analyst_password holds a secret in clear"},
		{"token in clear", map[string]any{"config": project("canary-3f0c9a")}, "config.collector.projects[0].token holds a secret in clear"},
		{"empty token", map[string]any{"config": project("")}, ""},
		{"numeric token in clear", map[string]any{"config": map[string]any{"collector": map[string]any{"listen": ":8080", "projects": []any{
			map[string]any{"name": "shop", "token": 31337}}}}}, "config.collector.projects[0].token holds a secret in clear"},
		{"token by reference", map[string]any{"config": project("${env:SHOP_TOKEN}")}, ""},
		{"service account secret in clear", map[string]any{"config": map[string]any{"collector": map[string]any{"listen": ":8080",
			"service_accounts": []any{map[string]any{"username": "u", "secret": "canary-s3cr3t", "projects": []any{"1"}}}}}},
			"config.collector.service_accounts[0].secret holds a secret in clear"},
		{"collector on loopback", map[string]any{"config": map[string]any{"collector": map[string]any{"listen": "127.0.0.1:8080"}}}, "/config/collector/listen"},
		{"admin on loopback", map[string]any{"config": map[string]any{"admin": map[string]any{"listen": "localhost:9464"}}}, "/config/admin/listen"},
		{"unknown pull policy", map[string]any{"image": map[string]any{"pullPolicy": "Sometimes"}}, "/image/pullPolicy"},
		{"misspelt value", map[string]any{"replicaCount": 3}, "replicaCount"},
		{"misspelt role value", map[string]any{"collector": map[string]any{"replica": 3}}, "replica"},
		{"autoscaler without replicas", map[string]any{"collector": map[string]any{"autoscaling": map[string]any{"minReplicas": 0}}}, "/collector/autoscaling/minReplicas"},
		{"autoscaler upside down", map[string]any{"collector": map[string]any{"autoscaling": map[string]any{"minReplicas": 5, "maxReplicas": 3}}},
			"collector.autoscaling.minReplicas (5) exceeds collector.autoscaling.maxReplicas (3)"},
		{"spool beside the autoscaler", map[string]any{"collector": map[string]any{"spool": map[string]any{"enabled": true}}},
			"collector.spool.enabled with collector.autoscaling.enabled"},
		{"spool without a volume", map[string]any{"config": map[string]any{"collector": map[string]any{"listen": "0.0.0.0:8080", "spool": map[string]any{"dir": "/tmp/spool"}}}},
			"config.collector.spool.dir needs a volume of each collector's own"},
		{"spool elsewhere than its volume", map[string]any{"collector": map[string]any{"autoscaling": map[string]any{"enabled": false}, "spool": map[string]any{"enabled": true}},
			"config": map[string]any{"collector": map[string]any{"listen": "0.0.0.0:8080", "spool": map[string]any{"dir": "/tmp/spool"}}}},
			"config.collector.spool.dir is set by the chart (/var/lib/veil/spool"},
		{"spool size in words", map[string]any{"collector": map[string]any{"spool": map[string]any{"size": "2 gigs"}}}, "/collector/spool/size"},
		{"bad memory quantity", map[string]any{"worker": map[string]any{"resources": map[string]any{"limits": map[string]any{"memory": "1 gig"}}}}, "/worker/resources/limits/memory"},
		{"secret file missing", map[string]any{"secrets": map[string]any{"files": map[string]any{"project-token": "t"}}},
			`config refers to /etc/veil/secrets/admin.token, but secrets.files has no "admin.token"`},
		{"two secret sources", map[string]any{"secrets": map[string]any{"existingSecret": "mine", "files": trialSecrets()}},
			"set secrets.existingSecret or secrets.files, not both"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(ch, tc.values)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("accepted; want an error about %s", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %v\nwant one about %s", err, tc.want)
			case err != nil && (strings.Contains(err.Error(), "canary") || strings.Contains(err.Error(), "31337")):
				t.Fatalf("the error quotes the secret: %v", err)
			}
		})
	}
}

// Rendering is deterministic, so upgrades roll pods only when their
// configuration changed.
func TestChartRendersTheSameTwice(t *testing.T) {
	ch := loadChart(t)
	a, err := render(ch, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := render(ch, map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	if len(a) == 0 || !reflect.DeepEqual(a, b) {
		t.Fatal("two renderings of the same values differ")
	}
}

func TestMain(m *testing.M) {
	// Helm logs each symbolic link of files/ at info level; they are
	// there on purpose (TestChartCarriesAlertsAndDashboard).
	slog.SetDefault(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
