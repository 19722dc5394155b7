{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "stratos.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. A release already named after the chart is not repeated
("stratos", not "stratos-stratos").
*/}}
{{- define "stratos.fullname" -}}
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

{{- define "stratos.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stratos.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stratos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "stratos.labels" -}}
helm.sh/chart: {{ include "stratos.chart" . }}
{{ include "stratos.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stratos
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "stratos.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stratos.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the kopf peering object(s): peering.name, else the full name. */}}
{{- define "stratos.peeringName" -}}
{{- default (include "stratos.fullname" .) .Values.peering.name }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: the digest wins, an empty tag means appVersion.
Call with (dict "image" .Values.image "root" .).
*/}}
{{- define "stratos.imageRef" -}}
{{- $image := .image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .root.Chart.AppVersion $image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
Rules on namespaced resources: bound cluster-wide (ClusterRole) when watchedNamespaces is empty,
else through a Role in each watched namespace. No Secrets: teacher API keys reach stage pods only
through secretKeyRef, which the kubelet resolves, never the operator.
*/}}
{{/* The default storage claim: storage.defaultClaim, or <fullname>-data when the chart creates it. */}}
{{- define "stratos.defaultClaim" -}}
{{- if .Values.storage.defaultClaim -}}
{{- .Values.storage.defaultClaim -}}
{{- else if .Values.storage.create -}}
{{- include "stratos.fullname" . }}-data
{{- end -}}
{{- end -}}

{{- define "stratos.namespacedRules" -}}
# The custom resource: kopf patches it for finalizers and its own bookkeeping annotations.
- apiGroups: ["stratos.io"]
  resources: ["distillationjobs"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["stratos.io"]
  resources: ["distillationjobs/status"]
  verbs: ["get", "patch", "update"]
# Children carry an owner reference with blockOwnerDeletion: the OwnerReferencesPermissionEnforcement
# admission plugin (OpenShift, OLM) requires update on the owner's finalizers for that.
- apiGroups: ["stratos.io"]
  resources: ["distillationjobs/finalizers"]
  verbs: ["update"]
# Every decision is also an Event on the object (kopf posts core/v1 events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Stage workloads: one batch/v1 Job per stage.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
# Stage results are the pods' termination messages; delete cleans up on suspend.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "delete"]
# Stage configs, mounted into the stage pods as files.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Serving: a Deployment plus a Service per trained student.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Storage named in spec.storage.pvc must exist: read only.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch"]
{{- end }}
