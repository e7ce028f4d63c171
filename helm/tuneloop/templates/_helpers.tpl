{{/*
Names, labels and the values every tuneloop process shares. Objects are named
<fullname>-<component>; labels follow app.kubernetes.io conventions.
*/}}

{{- define "tuneloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{- define "tuneloop.fullname" -}}
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

{{- define "tuneloop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels; call with (dict "root" $ "component" "gateway"). */}}
{{- define "tuneloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tuneloop.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels; call with (dict "root" $ "component" "gateway"). */}}
{{- define "tuneloop.labels" -}}
helm.sh/chart: {{ include "tuneloop.chart" .root }}
{{ include "tuneloop.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: tuneloop
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "tuneloop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "tuneloop.engineImage" -}}
{{- $img := .Values.engine.image }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}

{{- define "tuneloop.trainingImage" -}}
{{- $img := .Values.training.kuberay.image }}
{{- printf "%s:%s" $img.repository (default (printf "%s-gpu" .Chart.AppVersion) $img.tag) }}
{{- end }}

{{- define "tuneloop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tuneloop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tuneloop.kuberayNamespace" -}}
{{- default .Release.Namespace .Values.training.kuberay.namespace }}
{{- end }}

{{/* Base URLs of every engine, comma separated (TUNELOOP_ENGINE_URLS). */}}
{{- define "tuneloop.engineUrls" -}}
{{- $urls := list }}
{{- range $i := until (int .Values.engine.replicas) }}
{{- $urls = append $urls (printf "http://%s-engine-%d:%d" (include "tuneloop.fullname" $) $i (int $.Values.engine.port)) }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{/* Directory of the base model inside every pod (TUNELOOP_BASE_MODEL, vLLM --model). */}}
{{- define "tuneloop.baseModelPath" -}}
{{- $m := .Values.baseModel }}
{{- if eq $m.source "pvc" }}
{{- trimSuffix "/" (printf "%s/%s" $m.mountPath $m.pvc.path) }}
{{- else if eq $m.source "image" }}
{{- printf "%s/base" $m.mountPath }}
{{- else }}
{{- printf "%s/models/SmolLM2-135M-Instruct" $m.mountPath }}
{{- end }}
{{- end }}

{{- define "tuneloop.modelClaimName" -}}
{{- default (printf "%s-model" (include "tuneloop.fullname" .)) .Values.baseModel.pvc.existingClaim }}
{{- end }}

{{- define "tuneloop.artifactsClaimName" -}}
{{- default (printf "%s-artifacts" (include "tuneloop.fullname" .)) .Values.artifacts.pvc.existingClaim }}
{{- end }}

{{/* The model volume of a pod. */}}
{{- define "tuneloop.modelVolume" -}}
- name: model
{{- if eq .Values.baseModel.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ include "tuneloop.modelClaimName" . }}
    readOnly: true
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.baseModel.emptyDirSizeLimit }}
{{- end }}
{{- end }}

{{- define "tuneloop.modelVolumeMount" -}}
- name: model
  mountPath: {{ .Values.baseModel.mountPath }}
  {{- if eq .Values.baseModel.source "pvc" }}
  readOnly: true
  {{- end }}
{{- end }}

{{/* Init container that puts the model into the emptyDir (sources image and default). */}}
{{- define "tuneloop.modelInitContainers" -}}
{{- $m := .Values.baseModel }}
{{- if eq $m.source "image" }}
- name: copy-model
  image: {{ printf "%s:%s" $m.image.repository $m.image.tag }}
  command: ["sh", "-c", "mkdir -p {{ $m.mountPath }}/base && cp -a {{ $m.image.path }}/. {{ $m.mountPath }}/base/"]
  volumeMounts:
    {{- include "tuneloop.modelVolumeMount" . | nindent 4 }}
{{- else if eq $m.source "default" }}
- name: import-model
  image: {{ include "tuneloop.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["tuneloop", "models", "import-default", "--quiet"]
  env:
    - name: TUNELOOP_DATA_DIR
      value: {{ $m.mountPath | quote }}
  volumeMounts:
    {{- include "tuneloop.modelVolumeMount" . | nindent 4 }}
{{- end }}
{{- end }}

{{/* TUNELOOP_ARTIFACTS_URL of every pod: the S3 URL or the PVC's mount path. */}}
{{- define "tuneloop.artifactsUrl" -}}
{{- if eq .Values.artifacts.type "s3" }}
{{- .Values.artifacts.s3.url }}
{{- else }}
{{- .Values.artifacts.pvc.mountPath }}
{{- end }}
{{- end }}

{{/* engine.extraArgs as one shell-quoted string (TUNELOOP_ENGINE_EXTRA_ARGS is shlex-split). */}}
{{- define "tuneloop.engineExtraArgs" -}}
{{- $quoted := list }}
{{- range .Values.engine.extraArgs }}
{{- $quoted = append $quoted (printf "'%s'" (replace "'" "'\"'\"'" (toString .))) }}
{{- end }}
{{- join " " $quoted }}
{{- end }}

{{/* The engine key: engines require it, gateways and the monitor send it. */}}
{{- define "tuneloop.engineKeyEnv" -}}
- name: TUNELOOP_ENGINE_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-engine-key" (include "tuneloop.fullname" .)) .Values.engineKey.existingSecret }}
      key: {{ ternary .Values.engineKey.existingSecretKey "engine-key" (ne .Values.engineKey.existingSecret "") }}
{{- end }}

{{/* Name of the Secret with the S3 keys; empty when pods use their identity (e.g. IRSA). */}}
{{- define "tuneloop.s3SecretName" -}}
{{- $s3 := .Values.artifacts.s3 }}
{{- if and (eq .Values.artifacts.type "s3") (or $s3.existingSecret $s3.accessKeyId) }}
{{- default (printf "%s-s3" (include "tuneloop.fullname" .)) $s3.existingSecret }}
{{- end }}
{{- end }}

{{/* S3 credentials from a Secret (none: the pod's identity, e.g. IRSA). */}}
{{- define "tuneloop.s3SecretEnv" -}}
{{- with (include "tuneloop.s3SecretName" .) }}
{{- $secret := . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- end }}

{{/* TUNELOOP_KUBERAY_ENV_FROM: what every RayJob pod gets by reference, the settings ConfigMap
(artifact store, base model) and the S3 Secret when there is one. */}}
{{- define "tuneloop.kuberayEnvFrom" -}}
{{- $sources := list (printf "configmap:%s-settings" (include "tuneloop.fullname" .)) }}
{{- with (include "tuneloop.s3SecretName" .) }}
{{- $sources = append $sources (printf "secret:%s" .) }}
{{- end }}
{{- join "," $sources }}
{{- end }}

{{/* Secret-backed environment of the gateway and monitor. */}}
{{- define "tuneloop.secretEnv" -}}
{{- $fullname := include "tuneloop.fullname" . }}
{{- if eq .Values.database.type "bundled" }}
{{- $db := .Values.database.bundled }}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $fullname }}-postgresql
      key: password
- name: TUNELOOP_DATABASE_URL
  value: {{ printf "postgresql+psycopg://%s:$(POSTGRES_PASSWORD)@%s-postgresql:5432/%s" $db.username $fullname $db.database | quote }}
{{- else }}
- name: TUNELOOP_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-database" $fullname) .Values.database.external.existingSecret }}
      key: {{ ternary .Values.database.external.existingSecretKey "url" (ne .Values.database.external.existingSecret "") }}
{{- end }}
- name: TUNELOOP_ADMIN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-admin-key" $fullname) .Values.adminKey.existingSecret }}
      key: {{ ternary .Values.adminKey.existingSecretKey "admin-key" (ne .Values.adminKey.existingSecret "") }}
{{ include "tuneloop.engineKeyEnv" . }}
{{- with (include "tuneloop.s3SecretEnv" .) }}
{{ . | trim }}
{{- end }}
{{- end }}

{{/* Volumes and mounts of the artifact store when it is a PVC. */}}
{{- define "tuneloop.artifactsVolume" -}}
{{- if eq .Values.artifacts.type "pvc" }}
- name: artifacts
  persistentVolumeClaim:
    claimName: {{ include "tuneloop.artifactsClaimName" . }}
{{- end }}
{{- end }}

{{- define "tuneloop.artifactsVolumeMount" -}}
{{- if eq .Values.artifacts.type "pvc" }}
- name: artifacts
  mountPath: {{ .Values.artifacts.pvc.mountPath }}
{{- end }}
{{- end }}

{{/* A value kept across upgrades: the existing Secret's key, else a new random string. */}}
{{- define "tuneloop.persistentSecret" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}

{{/* Reject combinations the schema cannot express, saying what to set. */}}
{{- define "tuneloop.validate" -}}
{{- $v := .Values }}
{{- if lt (int $v.lora.maxCpuLoras) (int $v.lora.maxLoras) }}
{{- fail (printf "lora.maxCpuLoras (%v) must be >= lora.maxLoras (%v)" $v.lora.maxCpuLoras $v.lora.maxLoras) }}
{{- end }}
{{- if and (eq $v.database.type "external") (not (or $v.database.external.url $v.database.external.existingSecret)) }}
{{- fail "database.type=external needs database.external.url or database.external.existingSecret" }}
{{- end }}
{{- if and (eq $v.artifacts.type "s3") (not $v.artifacts.s3.url) }}
{{- fail "artifacts.type=s3 (the default) needs artifacts.s3.url (s3://bucket/prefix); or set artifacts.type=pvc with a ReadWriteMany storage class (docs/kubernetes.md)" }}
{{- end }}
{{- if eq $v.artifacts.type "pvc" }}
{{- $modes := $v.artifacts.pvc.accessModes }}
{{- with $v.artifacts.pvc.existingClaim }}
{{- $claim := lookup "v1" "PersistentVolumeClaim" $.Release.Namespace . }}
{{- if $claim }}
{{- $modes = $claim.spec.accessModes }}
{{- end }}
{{- end }}
{{- if not (has "ReadWriteMany" $modes) }}
{{- fail (printf "artifacts.pvc.accessModes is %v: the gateways, the monitor and every engine mount the artifacts volume from different nodes, so it must be ReadWriteMany (or use artifacts.type=s3)" $modes) }}
{{- end }}
{{- end }}
{{- if eq $v.baseModel.source "pvc" }}
{{- $modes := $v.baseModel.pvc.accessModes }}
{{- with $v.baseModel.pvc.existingClaim }}
{{- $claim := lookup "v1" "PersistentVolumeClaim" $.Release.Namespace . }}
{{- if $claim }}
{{- $modes = $claim.spec.accessModes }}
{{- end }}
{{- end }}
{{- if not (or (has "ReadWriteMany" $modes) (has "ReadOnlyMany" $modes)) }}
{{- fail (printf "baseModel.pvc.accessModes is %v: every engine, gateway and the monitor mount the model volume, so it must be ReadOnlyMany or ReadWriteMany" $modes) }}
{{- end }}
{{- end }}
{{- range $key, $field := dict "MAX_REQUEST_BYTES" "requestBytes" "MAX_UPLOAD_BYTES" "uploadBytes" "MAX_ADAPTER_BYTES" "adapterBytes" }}
{{- if hasKey $v.extraSettings $key }}
{{- fail (printf "extraSettings.%s would set TUNELOOP_%s twice; set gateway.bodyLimits.%s instead" $key $key $field) }}
{{- end }}
{{- end }}
{{- if lt (int $v.engine.adapterCacheEntries) (int $v.lora.maxCpuLoras) }}
{{- fail (printf "engine.adapterCacheEntries (%v) must be >= lora.maxCpuLoras (%v): vLLM re-reads a cached adapter's files when it activates it again" $v.engine.adapterCacheEntries $v.lora.maxCpuLoras) }}
{{- end }}
{{- if and (eq $v.artifacts.type "s3") (ne (empty $v.artifacts.s3.accessKeyId) (empty $v.artifacts.s3.secretAccessKey)) }}
{{- fail "set both artifacts.s3.accessKeyId and artifacts.s3.secretAccessKey, or neither" }}
{{- end }}
{{- if and (eq $v.baseModel.source "image") (not $v.baseModel.image.repository) }}
{{- fail "baseModel.source=image needs baseModel.image.repository" }}
{{- end }}
{{- if and (eq $v.training.runner "ray") (not $v.training.rayAddress) }}
{{- fail "training.runner=ray needs training.rayAddress (ray://host:10001 or http://host:8265)" }}
{{- end }}
{{- if and $v.gateway.autoscaling.enabled (gt (int $v.gateway.autoscaling.minReplicas) (int $v.gateway.autoscaling.maxReplicas)) }}
{{- fail "gateway.autoscaling.minReplicas must be <= gateway.autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
