{{/* The chart's name, overridable by nameOverride. */}}
{{- define "airollout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: the release name, plus the chart name unless it already has it. */}}
{{- define "airollout.fullname" -}}
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

{{/* Labels that select the operator's pod; they never change across upgrades. */}}
{{- define "airollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "airollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every resource of the chart. */}}
{{- define "airollout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "airollout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: airollout
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "airollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "airollout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository, then @digest when set, else :tag (the appVersion by default). */}}
{{- define "airollout.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespaces the operator watches when it is not cluster-wide. */}}
{{- define "airollout.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- toJson .Values.watchNamespaces }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/*
What the operator calls in a namespace it watches, and nothing more:
- the operator lists and watches AIRollouts (it never reads one alone: the watch keeps each current), patches
  them (to remove a verb it handled) and their status (a separate subresource, so a separate rule);
- it posts core/v1 Events about the AIRollouts it handles;
- the operator reads the Secrets each AIRollout names: the FeatBit token and the Prometheus credentials.
*/}}
{{- define "airollout.namespacedRules" -}}
- apiGroups: [airollout.dev]
  resources: [airollouts]
  verbs: [list, watch, patch]
- apiGroups: [airollout.dev]
  resources: [airollouts/status]
  verbs: [patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# The guardrail templates AIRollouts reference: read one by one and cached (--template-ttl), never listed.
- apiGroups: [airollout.dev]
  resources: [guardrailtemplates]
  verbs: [get]
{{- end }}

{{- define "airollout.clusterTemplateRules" -}}
- apiGroups: [airollout.dev]
  resources: [clusterguardrailtemplates]
  verbs: [get]
{{- end }}
