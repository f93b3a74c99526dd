{{/* Names ------------------------------------------------------------------------------------ */}}

{{- define "lgtm-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <fullname>: the release name, or release-chart when the release name lacks the chart name. */}}
{{- define "lgtm-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lgtm-agent.daemonsetName" -}}{{ include "lgtm-agent.fullname" . }}-daemonset{{- end }}
{{- define "lgtm-agent.clusterName" -}}{{ include "lgtm-agent.fullname" . }}-cluster{{- end }}
{{- define "lgtm-agent.headlessName" -}}{{ include "lgtm-agent.fullname" . }}-cluster-headless{{- end }}
{{- define "lgtm-agent.otlpServiceName" -}}{{ include "lgtm-agent.fullname" . }}-otlp{{- end }}
{{- define "lgtm-agent.authSecretName" -}}{{ include "lgtm-agent.fullname" . }}-auth{{- end }}

{{- define "lgtm-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels ----------------------------------------------------------------------------------- */}}

{{- define "lgtm-agent.labels" -}}
helm.sh/chart: {{ include "lgtm-agent.chart" . }}
app.kubernetes.io/name: {{ include "lgtm-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one workload: (list $ "daemonset"|"cluster"). */}}
{{- define "lgtm-agent.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "lgtm-agent.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* repository:tag, or repository@digest when image.digest is set. */}}
{{- define "lgtm-agent.image" -}}
{{- with .Values.image.digest }}
{{- printf "%s@%s" $.Values.image.repository . }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The ServiceAccount of one mode: (list $ "daemonset"|"cluster"). */}}
{{- define "lgtm-agent.serviceAccountName" -}}
{{- $ := index . 0 -}}
{{- if $.Values.serviceAccount.name -}}
{{- $.Values.serviceAccount.name -}}
{{- else if eq (index . 1) "daemonset" -}}
{{- include "lgtm-agent.daemonsetName" $ -}}
{{- else -}}
{{- include "lgtm-agent.clusterName" $ -}}
{{- end -}}
{{- end }}

{{/* The hostPath of the DaemonSet's data dir: one directory per release. */}}
{{- define "lgtm-agent.dataHostPath" -}}
{{- printf "%s/%s/%s" (.Values.daemonset.hostPaths.data | trimSuffix "/") .Release.Namespace (include "lgtm-agent.fullname" .) -}}
{{- end }}

{{/* The two values every install must set; the deploy scripts and the examples set them. */}}
{{- define "lgtm-agent.requiredValues" -}}
{{- if not .Values.clusterName -}}
{{- fail "\n\nclusterName is required: the name of this cluster, added as label `cluster` to everything shipped.\n  helm install lgtm-agent charts/lgtm-agent --set clusterName=<this cluster> --set tenant=<tenant>" -}}
{{- end -}}
{{- if not .Values.tenant -}}
{{- fail "\n\ntenant is required: the tenant (X-Scope-OrgID) of this cluster in the central Mimir, Loki and Tempo.\n  helm install lgtm-agent charts/lgtm-agent --set clusterName=<this cluster> --set tenant=<tenant>" -}}
{{- end -}}
{{- end }}

{{/* Config --------------------------------------------------------------------------------- */}}

{{/* A backend URL: (list value path tlsEnabled). A value with :// is used as given. */}}
{{- define "lgtm-agent.url" -}}
{{- $v := index . 0 -}}
{{- if contains "://" $v -}}
{{- $v -}}
{{- else -}}
{{- printf "%s://%s%s" (ternary "https" "http" (index . 2)) $v (index . 1) -}}
{{- end -}}
{{- end }}

{{/* What the three exporters share: headers, TLS and authentication. */}}
{{- define "lgtm-agent.exporterCommon" -}}
{{- with .Values.headers }}
headers:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .Values.tls.enabled }}
tls:
  {{- if .Values.tls.ca }}
  ca_file: /etc/lgtm-agent/tls/ca.crt
  {{- end }}
  {{- if .Values.tls.clientCertificate }}
  cert_file: /etc/lgtm-agent/tls/tls.crt
  key_file: /etc/lgtm-agent/tls/tls.key
  {{- end }}
  {{- with .Values.tls.serverName }}
  server_name: {{ . | quote }}
  {{- end }}
  insecure_skip_verify: {{ .Values.tls.insecureSkipVerify }}
{{- end }}
{{- if .Values.auth.basic.enabled }}
basic_auth:
  username: {{ required "auth.basic.username is required when auth.basic.enabled" .Values.auth.basic.username | quote }}
  password_file: /etc/lgtm-agent/auth/password
{{- end }}
{{- if .Values.auth.bearerToken.enabled }}
bearer_token_file: /etc/lgtm-agent/token/token
{{- end }}
{{- end }}

{{/* The generated config of one mode: (list $ "daemonset"|"cluster"). */}}
{{- define "lgtm-agent.generatedConfig" -}}
{{- $ := index . 0 -}}
{{- $mode := index . 1 -}}
{{- $ds := eq $mode "daemonset" -}}
{{- $tls := $.Values.tls.enabled -}}
{{- $common := include "lgtm-agent.exporterCommon" $ -}}
{{- include "lgtm-agent.requiredValues" $ }}
cluster: {{ $.Values.clusterName | quote }}
tenant: {{ $.Values.tenant | quote }}
mode: {{ $mode }}
data_dir: /var/lib/lgtm-agent
admin:
  listen: "0.0.0.0:9464"
log:
  format: {{ $.Values.logFormat }}
  level: {{ $.Values.logLevel | quote }}
exporters:
  mimir:
    url: {{ include "lgtm-agent.url" (list $.Values.endpoints.mimir "/api/v1/push" $tls) | quote }}
    {{- $common | nindent 4 }}
  loki:
    url: {{ include "lgtm-agent.url" (list $.Values.endpoints.loki "/loki/api/v1/push" $tls) | quote }}
    {{- $common | nindent 4 }}
  tempo:
    endpoint: {{ include "lgtm-agent.url" (list $.Values.endpoints.tempo "" $tls) | quote }}
    {{- $common | nindent 4 }}
logs:
  enabled: {{ $ds }}
  {{- if $ds }}
  path: /var/log/pods
  {{- end }}
scrape:
  {{- if $.Values.selfMonitoring.enabled }}
  static_configs:
    - targets: ["127.0.0.1:9464"]
      labels:
        job: {{ printf "%s/%s" $.Release.Namespace (ternary (include "lgtm-agent.daemonsetName" $) (include "lgtm-agent.clusterName" $) $ds) | quote }}
        namespace: {{ $.Release.Namespace | quote }}
        pod: "${POD_NAME}"
        container: lgtm-agent
        {{- if $ds }}
        node: "${NODE_NAME}"
        {{- end }}
  {{- end }}
  kubelet:
    enabled: {{ $ds }}
    {{- if $ds }}
    via: {{ $.Values.daemonset.kubelet.via }}
    {{- if eq $.Values.daemonset.kubelet.via "direct" }}
    # The node's IP (downward API status.hostIP): node names do not resolve on every cluster.
    address: "${NODE_IP}"
    {{- end }}
    insecure_skip_verify: {{ $.Values.daemonset.kubelet.insecureSkipVerify }}
    {{- end }}
  host_metrics:
    enabled: {{ $ds }}
    {{- if $ds }}
    root: /host
    {{- end }}
  monitors:
    enabled: {{ not $ds }}
otlp:
  enabled: true
  grpc: "0.0.0.0:4317"
  http: "0.0.0.0:4318"
  {{- if and $ds $.Values.cluster.enabled $.Values.daemonset.forwardTracesToCluster }}
  forward_traces_to: {{ printf "%s.%s.svc:4317" (include "lgtm-agent.headlessName" $) $.Release.Namespace | quote }}
  {{- end }}
events:
  enabled: {{ not $ds }}
tail_sampling:
  enabled: {{ not $ds }}
cluster_state:
  enabled: {{ not $ds }}
{{- end }}

{{/*
Deep merge: (list dst src). Maps merge key by key; anything else in src (false, 0, "", lists,
null) replaces what dst has. Unlike sprig's mergeOverwrite, `false` does override `true`.
*/}}
{{- define "lgtm-agent.deepMerge" -}}
{{- $dst := index . 0 -}}
{{- $src := index . 1 -}}
{{- range $k, $v := $src -}}
{{- if and (kindIs "map" $v) (kindIs "map" (index $dst $k)) -}}
{{- include "lgtm-agent.deepMerge" (list (index $dst $k) $v) -}}
{{- else -}}
{{- $_ := set $dst $k (deepCopy $v) -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* The final config of one mode: generated, then `config`, then `<mode>.config`. */}}
{{- define "lgtm-agent.config" -}}
{{- $ := index . 0 -}}
{{- $mode := index . 1 -}}
{{- $cfg := include "lgtm-agent.generatedConfig" . | fromYaml -}}
{{- if hasKey $cfg "Error" -}}
{{- fail (printf "generated %s config is not YAML: %s" $mode (get $cfg "Error")) -}}
{{- end -}}
{{- include "lgtm-agent.deepMerge" (list $cfg ($.Values.config | default dict)) -}}
{{- include "lgtm-agent.deepMerge" (list $cfg ((index $.Values $mode).config | default dict)) -}}
{{- toYaml $cfg -}}
{{- end }}

{{/* Pod parts ------------------------------------------------------------------------------ */}}

{{- define "lgtm-agent.env" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: NODE_IP
  valueFrom:
    fieldRef:
      fieldPath: status.hostIP
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* envFrom of both workloads (container level), when set. */}}
{{- define "lgtm-agent.envFrom" -}}
{{- with .Values.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Volume mounts of the credentials both modes use. */}}
{{- define "lgtm-agent.secretMounts" -}}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: /etc/lgtm-agent/tls
  readOnly: true
{{- end }}
{{- if .Values.auth.basic.enabled }}
- name: auth
  mountPath: /etc/lgtm-agent/auth
  readOnly: true
{{- end }}
{{- if .Values.auth.bearerToken.enabled }}
- name: token
  mountPath: /etc/lgtm-agent/token
  readOnly: true
{{- end }}
{{- end }}

{{- define "lgtm-agent.secretVolumes" -}}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "tls.existingSecret is required when tls.enabled" .Values.tls.existingSecret }}
{{- end }}
{{- if .Values.auth.basic.enabled }}
- name: auth
  secret:
    secretName: {{ .Values.auth.basic.existingSecret | default (include "lgtm-agent.authSecretName" .) }}
    items:
      - key: {{ .Values.auth.basic.passwordKey }}
        path: password
{{- end }}
{{- if .Values.auth.bearerToken.enabled }}
- name: token
  secret:
    secretName: {{ required "auth.bearerToken.existingSecret is required when auth.bearerToken.enabled" .Values.auth.bearerToken.existingSecret }}
    items:
      - key: {{ .Values.auth.bearerToken.key }}
        path: token
{{- end }}
{{- end }}

{{- define "lgtm-agent.probes" -}}
{{- with .Values.livenessProbe }}
livenessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.readinessProbe }}
readinessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The kubelet access of the DaemonSet's final config (after `config` and `daemonset.config`). */}}
{{- define "lgtm-agent.kubeletVia" -}}
{{- $cfg := include "lgtm-agent.config" (list . "daemonset") | fromYaml -}}
{{- $kubelet := (($cfg.scrape | default dict).kubelet | default dict) -}}
{{- if and (ne (toString $kubelet.enabled) "false") (eq (toString $kubelet.via) "apiserver") -}}apiserver{{- else -}}direct{{- end -}}
{{- end }}
