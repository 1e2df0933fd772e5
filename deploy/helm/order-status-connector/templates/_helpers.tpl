{{- define "osc.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "osc.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "osc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "osc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "osc.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "osc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "osc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "osc.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "osc.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if .Values.secrets.values -}}
{{- include "osc.fullname" . -}}
{{- end -}}
{{- end -}}

{{/* The drain deadline the daemon honours after SIGTERM (config.limits.drain_timeout_s, 20 by default). */}}
{{- define "osc.drainTimeout" -}}
{{- $limits := .Values.config.limits | default dict -}}
{{- $limits.drain_timeout_s | default 20 | float64 | ceil | int -}}
{{- end -}}

{{/* Grace period: explicit (must exceed the drain deadline) or drain + 15 s. */}}
{{- define "osc.gracePeriod" -}}
{{- $drain := include "osc.drainTimeout" . | int -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $drain 15 -}}
{{- else -}}
{{- $grace := .Values.terminationGracePeriodSeconds | int -}}
{{- if le $grace $drain -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than config.limits.drain_timeout_s (%d): Kubernetes would kill the daemon mid-drain" $grace $drain) -}}
{{- end -}}
{{- $grace -}}
{{- end -}}
{{- end -}}

{{- define "osc.serverPort" -}}
{{- $server := .Values.config.server | default dict -}}
{{- $server.port | default 8080 | int -}}
{{- end -}}
