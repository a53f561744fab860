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

{{- /* What the operator does in a namespace it watches: a Role there, or a ClusterRole when it
watches them all. */ -}}
{{- define "llmkube.workloadRules" -}}
- apiGroups: [llmkube.io]
  resources: [llmtrainingjobs, llmtuningjobs, llmdeployments]
  verbs: [get, list, watch]
- apiGroups: [llmkube.io]
  resources: [llmtrainingjobs/status, llmtuningjobs/status, llmdeployments/status, llmdeployments/scale]
  verbs: [patch]
# Children carry blockOwnerDeletion ownerReferences (OwnerReferencesPermissionEnforcement).
- apiGroups: [llmkube.io]
  resources: [llmtrainingjobs/finalizers, llmtuningjobs/finalizers, llmdeployments/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [create, get, patch]
# The S3 credentials and API keys the resources name (the operator checks they exist and reads
# S3 progress with them).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# The Ray pods of a job waiting to start: why the scheduler cannot place them goes into status.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [create, get, patch]
- apiGroups: [ray.io]
  resources: [rayjobs, rayservices]
  verbs: [create, get, list, watch, patch]
- apiGroups: [ray.io]
  resources: [rayclusters]
  verbs: [get]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [create, get, patch, delete]
{{- end -}}

{{- define "llmkube.consoleSelectorLabels" -}}
app.kubernetes.io/name: llmkube-console
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "llmkube.consoleLabels" -}}
{{ include "llmkube.consoleSelectorLabels" . }}
app.kubernetes.io/part-of: llmkube
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
