{{/* Chart name. */}}
{{- define "genrm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-qualified base name. Cut to 48 characters so that "<fullname>-<component>" stays a valid
63-character DNS label without cutting off the suffix (which would make the names collide).
*/}}
{{- define "genrm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "genrm.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "genrm.labels" -}}
helm.sh/chart: {{ include "genrm.chart" . }}
app.kubernetes.io/name: {{ include "genrm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: genrm-platform
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "server"). Immutable once installed. */}}
{{- define "genrm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "genrm.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "genrm.componentLabels" -}}
{{ include "genrm.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "genrm.server.fullname" -}}{{ include "genrm.fullname" . }}-server{{- end }}
{{- define "genrm.router.fullname" -}}{{ include "genrm.fullname" . }}-router{{- end }}
{{- define "genrm.recipes.fullname" -}}{{ include "genrm.fullname" . }}-recipes{{- end }}
{{- define "genrm.sandbox.fullname" -}}{{ include "genrm.fullname" . }}-sandbox{{- end }}

{{/* In-cluster DNS name of the servers' headless Service: its A records are the ready server pods. */}}
{{- define "genrm.server.dns" -}}
{{ include "genrm.server.fullname" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- end }}

{{/* The sandbox servers' headless Service, discovered by the router beside the GenRM servers'. */}}
{{- define "genrm.sandbox.dns" -}}
{{ include "genrm.sandbox.fullname" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
{{- end }}

{{- define "genrm.server.image" -}}
{{- $img := .Values.server.image }}
{{- printf "%s:%s" $img.repository (default (printf "%s-%s" .Chart.AppVersion $img.variant) $img.tag) }}
{{- end }}

{{- define "genrm.sandbox.image" -}}
{{- $img := .Values.sandbox.image }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}

{{- define "genrm.router.image" -}}
{{- $img := .Values.router.image }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}

{{/* Auth is on when keys are given or an existing Secret is named. */}}
{{- define "genrm.auth.enabled" -}}
{{- if or .Values.auth.existingSecret .Values.auth.apiKeys .Values.auth.adminApiKeys }}true{{ end }}
{{- end }}

{{- define "genrm.auth.secretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "genrm.fullname" .)) }}
{{- end }}

{{/* Model directory inside the container; empty when the engine needs none. */}}
{{- define "genrm.server.modelPath" -}}
{{- $m := .Values.server.model }}
{{- if eq $m.source "tiny" }}/models/tiny
{{- else if ne $m.source "none" }}/models/{{ trimPrefix "/" $m.path }}
{{- end }}
{{- end }}
