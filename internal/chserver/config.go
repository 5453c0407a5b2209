package chserver

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"text/template"

	"github.com/veilhq/veil/sink"
)

// The configuration keeps to what ClickHouse 18.16 (Debian) and current
// releases both accept. Caches are sized for a laptop, not a server: the
// defaults (8 GiB uncompressed, 5 GiB marks) are meant for dedicated hosts.
// umask 077: the server's data, logs and temporary files are its owner's
// alone (raw data never reaches ClickHouse, but the de-identified tables
// are still nobody else's to read on a shared machine).
var configTmpl = template.Must(template.New("config").Parse(`<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>{{.Dir}}/clickhouse-server.log</log>
    <errorlog>{{.Dir}}/clickhouse-server.err.log</errorlog>
    <size>50M</size>
    <count>2</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{{.TCPPort}}</tcp_port>
  <http_port>{{.HTTPPort}}</http_port>
  <interserver_http_port>{{.InterserverPort}}</interserver_http_port>
  <path>{{.Dir}}/data/</path>
  <tmp_path>{{.Dir}}/data/tmp/</tmp_path>
  <user_files_path>{{.Dir}}/data/user_files/</user_files_path>
  <format_schema_path>{{.Dir}}/data/format_schemas/</format_schema_path>
  <users_config>users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <umask>077</umask>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <mlock_executable>false</mlock_executable>
</yandex>
`))

// users.xml has no `default` user: a connection that names no user, or
// names `default`, is refused, on the native protocol and over HTTP alike.
// Veil connects as User with its password; analysts as `analyst`, whose
// profile holds readonly = 1 and the analyst limits (sink.AnalystSettings)
// and who may read the `veil` database only. Passwords are stored as
// SHA-256 hashes.
var usersTmpl = template.Must(template.New("users").Parse(`<?xml version="1.0"?>
<yandex>
  <profiles>
    <default>
      <max_memory_usage>4000000000</max_memory_usage>
      <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>
    </default>
    <analyst>
{{- range .AnalystSettings}}
      <{{.Name}}>{{.Value}}</{{.Name}}>
{{- end}}
    </analyst>
  </profiles>
  <users>
    <{{.User}}>
      <password_sha256_hex>{{.PasswordSHA256}}</password_sha256_hex>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </{{.User}}>
{{- if .AnalystPassword}}
    <analyst>
      <password_sha256_hex>{{.AnalystPasswordSHA256}}</password_sha256_hex>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>analyst</profile>
      <quota>default</quota>
      <allow_databases><database>veil</database></allow_databases>
    </analyst>
{{- end}}
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
`))

func writeConfig(cfg Config) error {
	hash := func(pw string) string {
		sum := sha256.Sum256([]byte(pw))
		return hex.EncodeToString(sum[:])
	}
	data := struct {
		Config
		User                  string
		PasswordSHA256        string
		AnalystPasswordSHA256 string
		AnalystSettings       []sink.Setting
	}{cfg, User, hash(cfg.Password), hash(cfg.AnalystPassword), sink.AnalystSettings(cfg.AnalystLimits)}
	for name, tmpl := range map[string]*template.Template{"config.xml": configTmpl, "users.xml": usersTmpl} {
		var b bytes.Buffer
		if err := tmpl.Execute(&b, data); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(cfg.Dir, name), b.Bytes(), 0o600); err != nil {
			return err
		}
	}
	return nil
}
