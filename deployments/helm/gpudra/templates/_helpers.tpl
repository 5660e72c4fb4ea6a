{{/*
Chart name, for the app.kubernetes.io/name label.
*/}}
{{- define "gpudra.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every object name: fullnameOverride, else the release name. Kept
short enough that "<prefix>-kubelet-plugin" fits in 63 characters.
*/}}
{{- define "gpudra.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- end }}

{{/*
Name of the kubelet plugin DaemonSet and of its cluster-scoped objects.
*/}}
{{- define "gpudra.kubeletPlugin.fullname" -}}
{{- printf "%s-kubelet-plugin" (include "gpudra.fullname" .) }}
{{- end }}

{{/*
chart label value: name-version.
*/}}
{{- define "gpudra.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "gpudra.labels" -}}
helm.sh/chart: {{ include "gpudra.chart" . }}
app.kubernetes.io/name: {{ include "gpudra.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Labels of the kubelet plugin's objects.
*/}}
{{- define "gpudra.kubeletPlugin.labels" -}}
{{ include "gpudra.labels" . }}
app.kubernetes.io/component: kubelet-plugin
{{- end }}

{{/*
Selector labels of the kubelet plugin pods (immutable once installed).
*/}}
{{- define "gpudra.kubeletPlugin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpudra.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: kubelet-plugin
{{- end }}

{{/*
Service account of the kubelet plugin.
*/}}
{{/*
The device plugin's service account (device-plugin mode): created by
deviceplugin.yaml when the plugin uses the API (MPS daemons, feature labels,
config ConfigMap).
*/}}
{{- define "gpudra.devicePlugin.serviceAccountName" -}}
{{- printf "%s-device-plugin" (include "gpudra.fullname" .) }}
{{- end }}

{{- define "gpudra.kubeletPlugin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gpudra.kubeletPlugin.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference.
*/}}
{{- define "gpudra.image" -}}
{{- printf "%s:%s" .Values.image.repository (toString .Values.image.tag) }}
{{- end }}

{{/*
Host paths derived from the values.
*/}}
{{- define "gpudra.hostStateDir" -}}
{{- .Values.hostStateDir | trimSuffix "/" }}
{{- end }}

{{- define "gpudra.kubeletDir" -}}
{{- .Values.kubeletDir | trimSuffix "/" }}
{{- end }}

{{/*
A number as the plugin's flags parse it: integral values without a fraction or
an exponent (values files give every number as a float64).
*/}}
{{- define "gpudra.number" -}}
{{- if eq (float64 .) (float64 (int64 .)) }}
{{- int64 . | toString }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
NVML backend: real, or mock:<machine>.
*/}}
{{- define "gpudra.nvmlBackend" -}}
{{- if .Values.mock.enabled }}
{{- printf "mock:%s" .Values.mock.machine }}
{{- else }}
{{- print "real" }}
{{- end }}
{{- end }}

{{/*
Environment that the DRA kubelet plugin, the device plugin and the doctor
init container read the same way: the node, the NVML backend, where the
driver is (the host's driver root, or the mock driver's directory), the CDI
spec directory, the host path of nvidia-cdi-hook, the log verbosity and the
health monitor settings (pkg/health.Flags). Each DaemonSet includes it first
in its container's env and adds its own variables after it.
*/}}
{{- define "gpudra.nodeEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
- name: NVML_BACKEND
  value: {{ include "gpudra.nvmlBackend" . | quote }}
{{- if .Values.mock.enabled }}
- name: MOCK_HOST_ROOT
  value: {{ printf "%s/mock" (include "gpudra.hostStateDir" .) | quote }}
{{- else }}
- name: HOST_DRIVER_ROOT
  value: {{ .Values.nvidiaDriverRoot | quote }}
- name: NVIDIA_DRIVER_ROOT
  value: /driver-root
{{- end }}
- name: CDI_ROOT
  value: {{ .Values.cdiRoot | quote }}
- name: NVIDIA_CDI_HOOK_PATH
  value: {{ printf "%s/bin/nvidia-cdi-hook" (include "gpudra.hostStateDir" .) | quote }}
- name: VERBOSITY
  value: {{ .Values.logVerbosity | int64 | toString | quote }}
- name: HEALTH_MONITOR
  value: {{ .Values.health.enabled | toString | quote }}
- name: HEALTH_IGNORED_XIDS
  value: {{ include "gpudra.health.ignoredXIDs" . | quote }}
- name: HEALTH_REPLACE_IGNORED_XIDS
  value: {{ .Values.health.replaceIgnoredXIDs | toString | quote }}
- name: HEALTH_RECOVERY_PERIOD
  value: {{ .Values.health.recoveryPeriod | quote }}
{{- end }}

{{/*
Environment of the plugin container (also given to the doctor init container,
so it checks exactly what the plugin will use): gpudra.nodeEnv, then the DRA
plugin's own variables.
*/}}
{{- define "gpudra.kubeletPlugin.env" -}}
{{ include "gpudra.nodeEnv" . }}
{{- if not .Values.mock.enabled }}
# The host's sysfs (gpudra.kubeletPlugin.volumeMounts), from which the plugin
# reads the GPUs' PCIe roots.
- name: SYSFS_ROOT
  value: /host-sys
{{- end }}
- name: FEATURE_LABELS
  value: {{ .Values.featureLabels.enabled | toString | quote }}
- name: DEVICE_METADATA
  value: {{ dig "enabled" false (.Values.deviceMetadata | default dict) | toString | quote }}
- name: POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
- name: DRIVER_NAME
  value: {{ .Values.driverName | quote }}
- name: KUBELET_REGISTRAR_DIRECTORY_PATH
  value: {{ printf "%s/plugins_registry" (include "gpudra.kubeletDir" .) | quote }}
- name: KUBELET_PLUGINS_DIRECTORY_PATH
  value: {{ printf "%s/plugins" (include "gpudra.kubeletDir" .) | quote }}
- name: INSTALL_CDI_HOOK_FROM
  value: /usr/bin/nvidia-cdi-hook
- name: METRICS_ADDRESS
  value: {{ printf ":%d" (.Values.metrics.port | int64) | quote }}
- name: KUBE_API_QPS
  value: {{ include "gpudra.number" .Values.kubeAPIQPS | quote }}
- name: KUBE_API_BURST
  value: {{ .Values.kubeAPIBurst | int64 | toString | quote }}
- name: HEALTH_RESEND_INTERVAL
  value: {{ .Values.healthResendInterval | quote }}
- name: HEALTH_TAINT_EFFECT
  value: {{ .Values.health.taintEffect | quote }}
- name: STALE_CLAIM_GRACE_PERIOD
  value: {{ .Values.staleClaims.gracePeriod | quote }}
- name: DYNAMIC_MIG
  value: {{ .Values.dynamicMIG.enabled | quote }}
- name: CONSUMABLE_CAPACITY
  value: {{ .Values.consumableCapacity | toString | quote }}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- if .Values.mps.enabled }}
- name: MPS_DAEMON_IMAGE
  value: {{ include "gpudra.image" . | quote }}
- name: MPS_BASE_DIR
  value: {{ include "gpudra.mps.baseDir" . | quote }}
- name: MPS_PRIORITY_CLASS_NAME
  value: {{ .Values.mps.priorityClassName | quote }}
{{- end }}
{{- include "gpudra.extraEnv" . }}
{{- end }}

{{/*
extraEnv, last in the env of the DRA plugin container and the doctor init
container (the device plugin's DaemonSet renders it the same way), so that a
variable of it replaces the chart's own of that name.
*/}}
{{- define "gpudra.extraEnv" -}}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Host directory of the claims' MPS directories: mps.baseDir, which must be
under hostStateDir (the plugin sees only that at the host's paths), or
<hostStateDir>/mps.
*/}}
{{- define "gpudra.mps.baseDir" -}}
{{- $state := include "gpudra.hostStateDir" . }}
{{- $dir := .Values.mps.baseDir | trimSuffix "/" }}
{{- if not $dir }}
{{- printf "%s/mps" $state }}
{{- else if hasPrefix (printf "%s/" $state) $dir }}
{{- $dir }}
{{- else }}
{{- fail (printf "mps.baseDir %q must be a directory under hostStateDir %q (the plugin mounts only that); leave it empty for %s/mps" .Values.mps.baseDir $state $state) }}
{{- end }}
{{- end }}

{{/*
health.ignoredXIDs as the comma-separated list the plugins parse.
*/}}
{{- define "gpudra.health.ignoredXIDs" -}}
{{- $xids := list }}
{{- range .Values.health.ignoredXIDs }}
{{- $xids = append $xids (include "gpudra.number" .) }}
{{- end }}
{{- join "," $xids }}
{{- end }}

{{/*
Volume mounts of the plugin container (and of the doctor init container).
*/}}
{{- define "gpudra.kubeletPlugin.volumeMounts" -}}
- name: plugins-registry
  mountPath: {{ printf "%s/plugins_registry" (include "gpudra.kubeletDir" .) }}
- name: plugins
  mountPath: {{ printf "%s/plugins" (include "gpudra.kubeletDir" .) }}
- name: cdi
  mountPath: {{ .Values.cdiRoot }}
- name: host-state
  mountPath: {{ include "gpudra.hostStateDir" . }}
{{- if not .Values.mock.enabled }}
- name: driver-root
  mountPath: /driver-root
  readOnly: true
  mountPropagation: HostToContainer
- name: host-sys
  mountPath: /host-sys
  readOnly: true
{{- end }}
{{- end }}

{{/*
Which plugin this release runs on the nodes: "dra" (the DRA kubelet plugin)
or "device-plugin" (the classic device plugin). mode=auto picks dra when the
cluster serves resource.k8s.io/v1, else the device plugin. One release never
runs both, so a node never advertises its GPUs twice.
*/}}
{{- define "gpudra.mode" -}}
{{- if eq .Values.mode "auto" }}
{{- if .Capabilities.APIVersions.Has "resource.k8s.io/v1" }}dra{{ else }}device-plugin{{ end }}
{{- else }}
{{- .Values.mode }}
{{- end }}
{{- end }}
