package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A configuration whose secrets are references loads with the secrets in
// place, wherever in the file they are, and leaves everything else as
// written.
func TestLoadResolvesSecretReferences(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	token := write("shop-token", "tok-9f3a\n") // as `echo tok > file` writes it
	secret := write("shop-secret", "sec-51bd\r\n")
	t.Setenv("VEIL_TEST_CH_PASSWORD", "pw-77e0")
	t.Setenv("VEIL_TEST_SA_SECRET", "sa-0c2d")
	p := write("veil.yaml", `
collector:
  projects:
    - name: shop
      token: "${file:`+token+`}"
      id: "1"
      secret: "${file:`+secret+`}"
  service_accounts:
    - username: importer
      secret: "${env:VEIL_TEST_SA_SECRET}"
      projects: ["1"]
deidentify:
  policies:
    projects:
      shop:
        pii_deny: ["$email", "${x}", "literal-$${env:NOT_A_REF}"]
sink:
  password: "${env:VEIL_TEST_CH_PASSWORD}"
  analyst_password: "pre-${env:VEIL_TEST_CH_PASSWORD}-post"
`)
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{
		"collector.projects[0].token":          cfg.Collector.Projects[0].Token,
		"collector.projects[0].secret":         cfg.Collector.Projects[0].Secret,
		"collector.service_accounts[0].secret": cfg.Collector.ServiceAccounts[0].Secret,
		"sink.password":                        cfg.Sink.Password,
		"sink.analyst_password":                cfg.Sink.AnalystPassword,
		"pii_deny":                             strings.Join(cfg.Deidentify.Policies.Projects["shop"].PIIDeny, " "),
	}
	want := map[string]string{
		"collector.projects[0].token":          "tok-9f3a",
		"collector.projects[0].secret":         "sec-51bd",
		"collector.service_accounts[0].secret": "sa-0c2d",
		"sink.password":                        "pw-77e0",
		"sink.analyst_password":                "pre-pw-77e0-post",
		"pii_deny":                             "$email ${x} literal-${env:NOT_A_REF}",
	}
	for k, w := range want {
		t.Run(k, func(t *testing.T) {
			if got[k] != w {
				t.Fatalf("%s = %q, want %q", k, got[k], w)
			}
		})
	}
}

func TestLoadRejectsBrokenSecretReferences(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "set")
	if err := os.WriteFile(secretFile, []byte("canary-secret-value"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VEIL_TEST_SET", "canary-env-value")
	base := "collector:\n  projects: [{name: a, token: t}]\n"
	tests := []struct{ name, yaml, want string }{
		{"missing file", base + "sink:\n  password: \"${file:" + filepath.Join(dir, "nope") + "}\"\n",
			"sink.password: ${file:" + filepath.Join(dir, "nope") + "}: no such file or directory"},
		{"unset variable", base + "sink:\n  password: \"${env:VEIL_TEST_UNSET_42}\"\n",
			"sink.password: ${env:VEIL_TEST_UNSET_42}: the environment variable is not set"},
		{"no closing brace", base + "sink:\n  password: \"${env:VEIL_TEST_SET\"\n",
			"sink.password: a ${env:…} reference has no closing brace"},
		{"empty name", base + "sink:\n  analyst_password: \"${file:}\"\n",
			"sink.analyst_password: ${file:} names nothing"},
		{"in a list", "collector:\n  projects: [{name: a, token: t}, {name: b, token: \"${env:VEIL_TEST_UNSET_42}\"}]\n",
			"collector.projects[1].token: ${env:VEIL_TEST_UNSET_42}"},
		{"in a map", base + "deidentify:\n  policies:\n    projects:\n      a:\n        pii_deny: [\"${file:" + secretFile + "}\", \"${env:VEIL_TEST_UNSET_42}\"]\n",
			"deidentify.policies.projects.a.pii_deny[1]: ${env:VEIL_TEST_UNSET_42}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "veil.yaml")
			if err := os.WriteFile(p, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "canary") {
				t.Fatalf("error %q carries a secret's value", err)
			}
		})
	}
}
