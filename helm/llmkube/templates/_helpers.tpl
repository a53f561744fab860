{{- define "llmkube.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "llmkube.serviceAccountName" -}}
{{- default (include "llmkube.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "llmkube.selectorLabels" -}}
app.kubernetes.io/name: llmkube-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "llmkube.labels" -}}
{{ include "llmkube.selectorLabels" . }}
app.kubernetes.io/part-of: llmkube
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
