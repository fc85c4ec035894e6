{{/* Names, labels, images and the share plumbing shared by the templates. */}}

{{- define "carve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: the release name when it already contains
the chart's name (release "carve" gives carve-csi-controller, as deploy/).
*/}}
{{- define "carve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := include "carve.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The CSI driver's name: the CSIDriver object, the plugin directory, StorageClass.provisioner. */}}
{{- define "carve.driverName" -}}carve.csi.dev{{- end }}

{{- define "carve.provisionerName" -}}
{{- if eq .Values.mode "csi" }}{{ include "carve.driverName" . }}{{ else }}carve.csi.dev/provisioner{{ end }}
{{- end }}

{{/* The kubelet's root directory, without a trailing slash. */}}
{{- define "carve.kubeletDir" -}}
{{- $d := .Values.kubeletDir | trimSuffix "/" }}
{{- if not (hasPrefix "/" $d) }}{{ fail (printf "kubeletDir %q must be an absolute path" .Values.kubeletDir) }}{{ end }}
{{- $d }}
{{- end }}

{{/* The node plugin's directory on the host: its socket, and the FUSE holder's. */}}
{{- define "carve.pluginDir" -}}
{{ include "carve.kubeletDir" . }}/plugins/{{ include "carve.driverName" . }}
{{- end }}

{{- define "carve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "carve.name" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/*
Selector labels of one component (call with dict "root" $ "component" "csi-node"):
app.kubernetes.io/name is the object's name, as deploy/ labels it.
*/}}
{{- define "carve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "carve.fullname" .root }}-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{- define "carve.componentLabels" -}}
{{ include "carve.labels" .root }}
{{ include "carve.selectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* An image reference (call with dict "root" $ "image" "csiProvisioner"). */}}
{{- define "carve.image" -}}
{{- $img := index .root.Values.images .image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* image and imagePullPolicy of a container. */}}
{{- define "carve.containerImage" -}}
image: {{ include "carve.image" . }}
imagePullPolicy: {{ (index .root.Values.images .image).pullPolicy | default "IfNotPresent" }}
{{- end }}

{{- define "carve.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The shares, checked once: a list of dicts with name, key (SERVER:SHARE for
--mount-map), volume (the controller's pod volume source) and nodeHostPath.
Rendered as YAML and read back with fromYamlArray by the callers.
*/}}
{{- define "carve.shares" -}}
{{- $seen := dict }}
{{- $out := list }}
{{- range $i, $s := .Values.shares.nfs }}
{{- $where := printf "shares.nfs[%d]" $i }}
{{- if not (and $s.name $s.server $s.share) }}{{ fail (printf "%s needs name, server and share" $where) }}{{ end }}
{{- $vol := dict "nfs" (dict "server" $s.server "path" $s.share) }}
{{- if $s.hostPath }}{{ $vol = dict "hostPath" (dict "path" $s.hostPath "type" "Directory") }}{{ end }}
{{- $out = append $out (dict "name" $s.name "key" (printf "%s:%s" $s.server $s.share) "volume" $vol "hostPath" (default "" $s.hostPath) "nodeHostPath" (default "" $s.nodeHostPath) "where" $where) }}
{{- end }}
{{- range $i, $s := .Values.shares.gluster }}
{{- $where := printf "shares.gluster[%d]" $i }}
{{- if not (and $s.name $s.server $s.volume $s.hostPath) }}{{ fail (printf "%s needs name, server, volume and hostPath (the node's FUSE mount of the volume: Kubernetes has no glusterfs pod volume)" $where) }}{{ end }}
{{- $vol := dict "hostPath" (dict "path" $s.hostPath "type" "Directory") }}
{{- $out = append $out (dict "name" $s.name "key" (printf "%s:%s" $s.server $s.volume) "volume" $vol "hostPath" $s.hostPath "nodeHostPath" (default "" $s.nodeHostPath) "where" $where) }}
{{- end }}
{{- range $out }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,55}[a-z0-9])?$" .name) }}{{ fail (printf "%s.name %q must be a DNS label of at most 57 characters (the pod volume is <name>-share)" .where .name) }}{{ end }}
{{- if hasKey $seen .name }}{{ fail (printf "%s.name %q is also the name of %s" .where .name (get $seen .name)) }}{{ end }}
{{- $_ := set $seen .name .where }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* The controller's (or provisioner's) --mount-map arguments, one per share. */}}
{{- define "carve.controllerShareArgs" -}}
{{- range (include "carve.shares" . | fromYamlArray) }}
- --mount-map={{ .key }}=/shares/{{ .name }}
{{- end }}
{{- end }}

{{/*
The controller's (or provisioner's) mounts of the shares. A hostPath is the
node's own mount: HostToContainer, so a remount on the host shows here.
*/}}
{{- define "carve.controllerShareMounts" -}}
{{- range (include "carve.shares" . | fromYamlArray) }}
- name: {{ .name }}-share
  mountPath: /shares/{{ .name }}
  {{- if .hostPath }}
  mountPropagation: HostToContainer
  {{- end }}
{{- end }}
{{- if .Values.shares.glusterdSocket }}
- name: glusterd-socket
  mountPath: /var/run/glusterd.socket
{{- end }}
{{- end }}

{{- define "carve.controllerShareVolumes" -}}
{{- range (include "carve.shares" . | fromYamlArray) }}
- name: {{ .name }}-share
  {{- toYaml .volume | nindent 2 }}
{{- end }}
{{- if .Values.shares.glusterdSocket }}
- name: glusterd-socket
  hostPath:
    path: {{ .Values.shares.glusterdSocket }}
    type: Socket
{{- end }}
{{- end }}

{{/* Leader election arguments of csi-provisioner and csi-resizer. */}}
{{- define "carve.sidecarLeaderElection" -}}
{{- if .Values.leaderElection.enabled }}
- --leader-election
- --leader-election-namespace=$(POD_NAMESPACE)
{{- end }}
{{- end }}

{{/* Refuses several active replicas without leader election. */}}
{{- define "carve.checkReplicas" -}}
{{- if and (not .root.Values.leaderElection.enabled) (gt (int .replicas) 1) }}
{{- fail (printf "%s: %d replicas need leaderElection.enabled (each would act on every claim)" .what (int .replicas)) }}
{{- end }}
{{- end }}

{{/* Extra arguments, appended as given. */}}
{{- define "carve.extraArgs" -}}
{{- range . }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/* The hardening of every container that needs no privileges. */}}
{{- define "carve.restrictedSecurityContext" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities: {drop: ["ALL"]}
{{- end }}

{{/*
carve's controller and provisioner: root only to chown new directories and
keep setgid (the export needs no_root_squash); every other capability dropped.
*/}}
{{- define "carve.carverSecurityContext" -}}
securityContext:
  runAsUser: 0
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
    add: ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"]
{{- end }}

{{/* GOMEMLIMIT from the memory limit: the Go GC works harder near it instead of being OOM-killed. */}}
{{- define "carve.gomemlimit" -}}
- name: GOMEMLIMIT
  valueFrom: {resourceFieldRef: {resource: limits.memory}}
{{- end }}

{{/* The Go runtime of each CSI controller container: GOMEMLIMIT, and one P (with one per core each Go program spent about a third of its CPU waking and parking threads between API events, README "Sizing"). */}}
{{- define "carve.controllerGoEnv" -}}
{{ include "carve.gomemlimit" . }}
- {name: GOMAXPROCS, value: "1"}
{{- end }}

{{- define "carve.podNamespaceEnv" -}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
{{- end }}

{{/* nodeSelector, affinity, tolerations and priorityClassName of a pod (call with a component's values). */}}
{{- define "carve.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
