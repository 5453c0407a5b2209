{{/* Names and labels. */}}
{{- define "veil.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "veil.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "veil.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "veil.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ include "veil.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one role: call with (dict "ctx" $ "component" "collector"). */}}
{{- define "veil.selectorLabels" -}}
app.kubernetes.io/name: {{ include "veil.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "veil.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "veil.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "veil.imageTag" .) }}
{{- end }}

{{/* The port of a listen address such as 0.0.0.0:8080. */}}
{{- define "veil.port" -}}
{{- regexFind "[0-9]+$" . }}
{{- end }}

{{- define "veil.collectorPort" -}}
{{- include "veil.port" .Values.config.collector.listen }}
{{- end }}

{{- define "veil.adminPort" -}}
{{- include "veil.port" .Values.config.admin.listen }}
{{- end }}

{{/* Veil's configuration file, as the ConfigMaps hold it: config, with
collector.spool.dir on the collectors' volume when collector.spool is on. */}}
{{- define "veil.configYaml" -}}
{{- $cfg := deepCopy .Values.config }}
{{- if .Values.collector.spool.enabled }}
{{- $collector := default (dict) $cfg.collector }}
{{- $spool := default (dict) $collector.spool }}
{{- $_ := set $spool "dir" (include "veil.spoolDir" .) }}
{{- $_ = set $collector "spool" $spool }}
{{- $_ = set $cfg "collector" $collector }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* The collectors' spool directory, on their volume. */}}
{{- define "veil.spoolDir" -}}
{{- printf "%s/spool" (trimSuffix "/" .Values.collector.spool.mountPath) }}
{{- end }}

{{/* The Secret mounted under secrets.mountPath. */}}
{{- define "veil.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- include "veil.fullname" . }}
{{- end }}
{{- end }}

{{/* The names of the Secret's keys that the configuration refers to as ${file:MOUNTPATH/NAME} or as a plain path (pseudonym_key_file, admin_token_file). */}}
{{- define "veil.secretRefs" -}}
{{- $mount := trimSuffix "/" .Values.secrets.mountPath }}
{{- $names := list }}
{{- range regexFindAll (printf "%s/[-._a-zA-Z0-9]+" (regexQuoteMeta $mount)) (include "veil.configYaml" .) -1 }}
{{- $names = append $names (trimPrefix (printf "%s/" $mount) .) }}
{{- end }}
{{- $names | uniq | sortAlpha | join " " }}
{{- end }}

{{/*
Checks that values cannot express in values.schema.json: render fails with
a message naming the value.
*/}}
{{- define "veil.validate" -}}
{{- $partitions := int (dig "kafka" "partitions" 12 .Values.config) }}
{{- if gt (int .Values.worker.replicas) $partitions }}
{{- fail (printf "worker.replicas (%d) exceeds config.kafka.partitions (%d): each partition is read by one worker of the group, so workers beyond %d would sit idle; raise the partitions (docs/deployment.md) or lower the replicas" (int .Values.worker.replicas) $partitions $partitions) }}
{{- end }}
{{- with .Values.collector.autoscaling }}
{{- if and .enabled (gt (int .minReplicas) (int .maxReplicas)) }}
{{- fail (printf "collector.autoscaling.minReplicas (%d) exceeds collector.autoscaling.maxReplicas (%d)" (int .minReplicas) (int .maxReplicas)) }}
{{- end }}
{{- end }}
{{- $spoolDir := dig "collector" "spool" "dir" "" .Values.config }}
{{- if .Values.collector.spool.enabled }}
{{- if .Values.collector.autoscaling.enabled }}
{{- fail "collector.spool.enabled with collector.autoscaling.enabled: a collector the autoscaler removes keeps the events of its spool on its volume until it is scaled back, which may be never; set collector.autoscaling.enabled=false and size collector.replicas" }}
{{- end }}
{{- if and $spoolDir (ne $spoolDir (include "veil.spoolDir" .)) }}
{{- fail (printf "config.collector.spool.dir is set by the chart (%s, on the collectors' volume at collector.spool.mountPath) when collector.spool.enabled; leave it out" (include "veil.spoolDir" .)) }}
{{- end }}
{{- else if $spoolDir }}
{{- fail "config.collector.spool.dir needs a volume of each collector's own, which the chart mounts with collector.spool.enabled=true; a pod's own filesystem is read-only and lost with the pod" }}
{{- end }}
{{- include "veil.noSecretsInClear" (dict "path" "config" "v" .Values.config "root" .) }}
{{- if and .Values.secrets.existingSecret .Values.secrets.files }}
{{- fail "set secrets.existingSecret or secrets.files, not both" }}
{{- end }}
{{- if .Values.secrets.files }}
{{- range splitList " " (include "veil.secretRefs" .) }}
{{- if and . (not (hasKey $.Values.secrets.files .)) }}
{{- fail (printf "config refers to %s/%s, but secrets.files has no %q" (trimSuffix "/" $.Values.secrets.mountPath) . .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Anywhere in the configuration, a key named password, secret or token (or
ending in _password, _secret, _token) holds nothing or a ${file:…} /
${env:…} reference, never the secret itself, which would land in a
ConfigMap. The error names the key, never the value (a schema error would
quote it).
*/}}
{{- define "veil.noSecretsInClear" -}}
{{- $path := .path }}
{{- $root := .root }}
{{- if kindIs "map" .v }}
{{- range $k, $v := .v }}
{{- $p := printf "%s.%s" $path $k }}
{{- if and (regexMatch "^(.*_)?(password|secret|token)$" $k) (not (kindIs "map" $v)) (not (kindIs "slice" $v)) (ne (toString (default "" $v)) "") }}
{{- if not (and (kindIs "string" $v) (regexMatch "[$][{](file|env):[^}]+[}]" $v)) }}
{{- fail (printf "%s holds a secret in clear, which would be stored in a ConfigMap: give it as ${file:%s/NAME}, NAME a key of the Secret (secrets.files or secrets.existingSecret), or as ${env:NAME} (extraEnv)" $p (trimSuffix "/" $root.Values.secrets.mountPath)) }}
{{- end }}
{{- end }}
{{- include "veil.noSecretsInClear" (dict "path" $p "v" $v "root" $root) }}
{{- end }}
{{- else if kindIs "slice" .v }}
{{- range $i, $e := .v }}
{{- include "veil.noSecretsInClear" (dict "path" (printf "%s[%d]" $path $i) "v" $e "root" $root) }}
{{- end }}
{{- end }}
{{- end }}

{{/* The pod-level security context of every Veil pod. */}}
{{- define "veil.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.runAsUser }}
runAsUser: {{ . }}
{{- end }}
{{- with .Values.runAsGroup }}
runAsGroup: {{ . }}
{{- end }}
{{- with .Values.fsGroup }}
fsGroup: {{ . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The container-level security context: Veil needs no privilege and writes only to /tmp. */}}
{{- define "veil.securityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Volumes of a Veil pod: call with (dict "ctx" $ "configMap" NAME "secret" NAME "geoip" BOOL). */}}
{{- define "veil.volumes" -}}
- name: config
  configMap:
    name: {{ .configMap }}
- name: secrets
  secret:
    secretName: {{ .secret }}
    defaultMode: 0440
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if and .geoip .ctx.Values.geoip.volume }}
- name: geoip
  {{- toYaml .ctx.Values.geoip.volume | nindent 2 }}
{{- end }}
{{- end }}

{{- define "veil.volumeMounts" -}}
- name: config
  mountPath: /etc/veil/veil.yaml
  subPath: veil.yaml
  readOnly: true
- name: secrets
  mountPath: {{ .ctx.Values.secrets.mountPath }}
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if and .geoip .ctx.Values.geoip.volume }}
- name: geoip
  mountPath: {{ .ctx.Values.geoip.mountPath }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "veil.env" -}}
{{- with .Values.extraEnv }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "veil.podSpecCommon" -}}
automountServiceAccountToken: false
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "veil.podSecurityContext" . | nindent 2 }}
{{- end }}

{{- define "veil.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
