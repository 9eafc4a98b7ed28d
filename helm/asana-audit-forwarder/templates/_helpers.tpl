{{/* Names ---------------------------------------------------------------- */}}

{{- define "aaf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "aaf.fullname" -}}
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

{{- define "aaf.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "aaf.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "aaf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aaf.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "aaf.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "aaf.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "aaf.secretName" -}}
{{- default (include "aaf.fullname" .) .Values.asana.existingSecret }}
{{- end }}

{{- define "aaf.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Fixed paths, shared with the image (Dockerfile) ------------------------ */}}

{{- define "aaf.stateDir" -}}/var/lib/asana-audit-forwarder{{- end }}
{{- define "aaf.configDir" -}}/etc/asana-audit-forwarder{{- end }}
{{- define "aaf.secretDir" -}}/var/run/secrets/asana-audit-forwarder{{- end }}
{{- define "aaf.metricsPort" -}}9464{{- end }}

{{/* Checks the schema cannot express; each names the value to fix. --------- */}}

{{- define "aaf.validate" -}}
{{- if and (not .Values.asana.existingSecret) (not .Values.asana.token) }}
{{- fail "asana.token or asana.existingSecret is required: the forwarder needs a service account token" }}
{{- end }}
{{- if and .Values.asana.existingSecret .Values.extraSecrets }}
{{- fail (printf "extraSecrets: ignored with asana.existingSecret; put these keys in the Secret %q instead" .Values.asana.existingSecret) }}
{{- end }}
{{- if hasKey .Values.extraSecrets .Values.asana.tokenKey }}
{{- fail (printf "extraSecrets.%s: the key holds the Asana token (asana.tokenKey); use another name" .Values.asana.tokenKey) }}
{{- end }}
{{- $writable := list (include "aaf.stateDir" .) }}
{{- range .Values.extraVolumeMounts }}
{{- $writable = append $writable (.mountPath | trimSuffix "/") }}
{{- end }}
{{- $names := dict }}
{{- range $index, $sink := .Values.sinks }}
{{- if hasKey $names $sink.name }}
{{- fail (printf "sinks[%d].name: %q is used by two sinks; names must be unique" $index $sink.name) }}
{{- end }}
{{- $_ := set $names $sink.name true }}
{{- if eq $sink.type "file" }}
{{- $ok := false }}
{{- range $writable }}
{{- if hasPrefix (printf "%s/" .) (toString $sink.path) }}
{{- $ok = true }}
{{- end }}
{{- end }}
{{- if not $ok }}
{{- fail (printf "sinks[%d].path: %q is on the read-only root filesystem; write under %s/ or an extraVolumeMounts path" $index (toString $sink.path) (include "aaf.stateDir" $)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The configuration as TOML ---------------------------------------------

Values become TOML the simple way: a string, number or boolean as its JSON
text (a valid TOML value), a list of them as a JSON array (a valid TOML
array), a map as a sub-table; null leaves the key out. Keys are bare when
TOML allows, quoted otherwise. */}}

{{/* A value as TOML: its JSON text, but DEL escaped, which JSON allows raw
and TOML does not. */}}
{{- define "aaf.tomlValue" -}}
{{- toJson . | replace "\u007f" "\\u007f" }}
{{- end }}

{{- define "aaf.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ include "aaf.tomlValue" . }}{{ end }}
{{- end }}

{{/* The keys of a table: values first, then sub-tables (TOML's order).
Expects (dict "table" MAP "path" "dotted.header" "skip" LIST). */}}
{{- define "aaf.tomlTable" -}}
{{- $skip := default (list) .skip }}
{{- range $key, $value := .table }}
{{- if and (not (has $key $skip)) (not (kindIs "map" $value)) (not (kindIs "invalid" $value)) }}
{{ include "aaf.tomlKey" $key }} = {{ include "aaf.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $key, $value := .table }}
{{- if and (not (has $key $skip)) (kindIs "map" $value) $value }}
{{- $path := printf "%s.%s" $.path (include "aaf.tomlKey" $key) }}

[{{ $path }}]
{{- include "aaf.tomlTable" (dict "table" $value "path" $path) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "aaf.config" -}}
# Rendered by the asana-audit-forwarder Helm chart from its values. Check it:
#   asana-audit-forwarder check-config --config {{ include "aaf.configDir" . }}/config.toml
[source]
workspace_gid = {{ include "aaf.tomlValue" (toString .Values.asana.workspaceGid) }}
token = {{ include "aaf.tomlValue" (printf "file:%s/%s" (include "aaf.secretDir" .) .Values.asana.tokenKey) }}
{{- include "aaf.tomlTable" (dict "table" (default (dict) .Values.config.source) "path" "source") }}

[state]
directory = {{ include "aaf.stateDir" . | toJson }}

[server]
listen = {{ printf "0.0.0.0:%s" (include "aaf.metricsPort" .) | toJson }}
{{- include "aaf.tomlTable" (dict "table" (default (dict) .Values.config.server) "path" "server") }}
{{- range $section := list "log" "daemon" }}
{{- $table := default (dict) (get $.Values.config $section) }}
{{- if $table }}

[{{ $section }}]
{{- include "aaf.tomlTable" (dict "table" $table "path" $section) }}
{{- end }}
{{- end }}
{{- range .Values.sinks }}

[[sinks]]
name = {{ include "aaf.tomlValue" .name }}
type = {{ include "aaf.tomlValue" .type }}
{{- include "aaf.tomlTable" (dict "table" . "path" "sinks" "skip" (list "name" "type")) }}
{{- end }}
{{- end }}

{{/* NetworkPolicy: the sinks' ports, from each literal url or address
("https://host:8088/...", "tls://host:6514") and networkPolicy.sinkPorts,
as a list of {port, protocol}, without repeats. */}}
{{- define "aaf.sinkPorts" -}}
{{- $ports := list }}
{{- range .Values.sinks }}
{{- $target := toString (default (default "" .address) .url) }}
{{- if regexMatch "^[a-z]+://" $target }}
{{- $parsed := urlParse $target }}
{{- $scheme := $parsed.scheme }}
{{- $port := 0 }}
{{- if regexMatch ":[0-9]+$" $parsed.host }}
{{- $port = regexFind "[0-9]+$" $parsed.host | atoi }}
{{- else if eq $scheme "https" }}
{{- $port = 443 }}
{{- else if eq $scheme "http" }}
{{- $port = 80 }}
{{- end }}
{{- if $port }}
{{- $ports = append $ports (dict "port" $port "protocol" (ternary "UDP" "TCP" (eq $scheme "udp"))) }}
{{- end }}
{{- end }}
{{- end }}
{{- range .Values.networkPolicy.sinkPorts }}
{{- $ports = append $ports (dict "port" (int .port) "protocol" (default "TCP" .protocol)) }}
{{- end }}
{{- toJson (uniq $ports) }}
{{- end }}
