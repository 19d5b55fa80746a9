{{/* Labels every object of the release carries. */}}
{{- define "ooda.labels" -}}
app.kubernetes.io/name: ooda
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ooda
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* What selects a component's pods: never changes across upgrades (selectors are immutable). */}}
{{- define "ooda.selector" -}}
app.kubernetes.io/name: ooda
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ooda.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The restricted Pod Security profile, for both components. */}}
{{- define "ooda.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile: { type: RuntimeDefault }
{{- end }}

{{- define "ooda.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: { drop: [ALL] }
{{- end }}

{{/* The operator configuration file, from .Values.config plus what the chart knows itself: where
     the gateway runs, so that every organisation namespace admits it and only it. */}}
{{- define "ooda.config" -}}
{{- $gateway := dict "namespace" .Release.Namespace "serviceAccount" "ooda-gateway" "podLabels" (include "ooda.selector" (dict "root" . "component" "gateway") | fromYaml) -}}
{{- with (include "ooda.publicUrl" .) }}{{ $_ := set $gateway "publicUrl" . }}{{ end -}}
{{- $config := omit .Values.config "gateway" -}}
{{- if not $config.gitCaBundle }}{{ $config = omit $config "gitCaBundle" }}{{ end -}}
{{- if not $config.sitesDomain }}{{ $config = omit $config "sitesDomain" }}{{ end -}}
{{- toYaml (merge (dict "gateway" $gateway) $config) }}
{{- end }}

{{/* Where users reach the gateway's API: gateway.publicUrl, or https://<gateway.host>. */}}
{{- define "ooda.publicUrl" -}}
{{- if .Values.gateway.publicUrl }}{{ .Values.gateway.publicUrl }}{{ else if .Values.gateway.host }}https://{{ .Values.gateway.host }}{{ end -}}
{{- end }}

{{/* The gateway's TLS Secret: its own, or the one cert-manager fills. */}}
{{- define "ooda.gatewayTlsSecret" -}}
{{- .Values.gateway.tls.secretName | default "ooda-gateway-tls" }}
{{- end }}

{{/* Replicas on different nodes and zones where the cluster has them, together where it has not. */}}
{{- define "ooda.spread" -}}
- maxSkew: 1
  topologyKey: kubernetes.io/hostname
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels: {{- .selector | nindent 6 }}
- maxSkew: 1
  topologyKey: topology.kubernetes.io/zone
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels: {{- .selector | nindent 6 }}
{{- end }}

{{/* The API server's address, for clusters where pods cannot reach the `kubernetes` Service
     (no kube-proxy, and a CNI that does not stand in for it). Empty: the in-cluster default. */}}
{{- define "ooda.apiServerEnv" -}}
{{- with .Values.apiServer.host }}
- { name: KUBERNETES_SERVICE_HOST, value: {{ . | quote }} }
- { name: KUBERNETES_SERVICE_PORT, value: {{ $.Values.apiServer.port | quote }} }
{{- end }}
{{- end }}

{{/* The gateway's host names: the API's, and the preview and sites wildcards. */}}
{{- define "ooda.hosts" -}}
{{- $hosts := list -}}
{{- with .Values.gateway.host }}{{ $hosts = append $hosts . }}{{ end -}}
{{- $hosts = append $hosts (printf "*.%s" .Values.config.previewDomain) -}}
{{- with .Values.config.sitesDomain }}{{ $hosts = append $hosts (printf "*.%s" .) }}{{ end -}}
{{- toYaml $hosts }}
{{- end }}
