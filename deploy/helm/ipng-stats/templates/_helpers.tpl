{{- define "ipng-stats.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ipng-stats.labels" -}}
app.kubernetes.io/name: {{ include "ipng-stats.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ipng-stats.selector" -}}
app.kubernetes.io/name: {{ include "ipng-stats.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The agent's configuration: the values' config, with bpf.cgroup at the
     host's cgroup directory as mounted in the pod (the agent attaches to
     the cgroup2 mount at or below it). */}}
{{- define "ipng-stats.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $bpf := default dict $cfg.bpf -}}
{{- $_ := set $bpf "cgroup" "/host/cgroup" -}}
{{- $_ := set $cfg "bpf" $bpf -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The metrics port, from config.web.listen_address (":9113" style). */}}
{{- define "ipng-stats.port" -}}
{{- $addr := (default dict .Values.config.web).listen_address | default ":9113" -}}
{{- last (splitList ":" $addr) -}}
{{- end -}}
