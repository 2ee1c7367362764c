{{/* Names, labels and the values every template derives. */}}

{{- define "reflect.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-wide prefix. Kept to 40 characters so that a replica's worker pods,
     <fullname>-replica-<group>-<worker>, stay within the 63 of a DNS label. */}}
{{- define "reflect.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "reflect.routerName" -}}{{ include "reflect.fullname" . }}-router{{- end -}}
{{/* The LeaderWorkerSet; also the name of the headless Service LeaderWorkerSet creates for it. */}}
{{- define "reflect.lwsName" -}}{{ include "reflect.fullname" . }}-replica{{- end -}}
{{- define "reflect.leadersName" -}}{{ include "reflect.fullname" . }}-leaders{{- end -}}

{{- define "reflect.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "reflect.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "reflect.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "reflect.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "reflect.selectorLabels" -}}
app.kubernetes.io/name: {{ include "reflect.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "reflect.routerSelectorLabels" -}}
{{ include "reflect.selectorLabels" . }}
app.kubernetes.io/component: router
{{- end -}}

{{/* Every pod of every replica group (leaders and workers). */}}
{{- define "reflect.replicaSelectorLabels" -}}
{{ include "reflect.selectorLabels" . }}
app.kubernetes.io/component: replica
{{- end -}}

{{/* Leader pods only: LeaderWorkerSet labels the leader of each group worker-index "0". */}}
{{- define "reflect.leaderSelectorLabels" -}}
{{ include "reflect.replicaSelectorLabels" . }}
leaderworkerset.sigs.k8s.io/worker-index: "0"
{{- end -}}

{{- define "reflect.image" -}}
{{- $root := index . 0 -}}
{{- $repository := index . 1 -}}
{{- $tag := default $root.Chart.AppVersion $root.Values.image.tag -}}
{{- if $root.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $root.Values.image.registry) $repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "reflect.workerImage" -}}
{{- if eq .Values.worker.backend "cuda" -}}
{{- include "reflect.image" (list . .Values.image.workerCuda) -}}
{{- else -}}
{{- include "reflect.image" (list . .Values.image.workerCpu) -}}
{{- end -}}
{{- end -}}

{{/* The worker-cpu image also serves the `reflect mkmodel` init container of model.source
     generate, for routers and replicas alike. */}}
{{- define "reflect.generatorImage" -}}
{{- include "reflect.image" (list . .Values.image.workerCpu) -}}
{{- end -}}

{{/* Ranks of one replica: tensor parallel × pipeline parallel. */}}
{{- define "reflect.worldSize" -}}
{{- mul (int .Values.worker.tensorParallel) (int .Values.worker.pipelineParallel) -}}
{{- end -}}

{{/* Pods of one replica group (LeaderWorkerSet size). */}}
{{- define "reflect.podsPerGroup" -}}
{{- $world := int (include "reflect.worldSize" .) -}}
{{- $perPod := int .Values.worker.ranksPerPod -}}
{{- if or (lt $perPod 1) (ne (mod $world $perPod) 0) -}}
{{- fail (printf "worker.ranksPerPod (%d) must divide tensorParallel × pipelineParallel (%d)" $perPod $world) -}}
{{- end -}}
{{- div $world $perPod -}}
{{- end -}}

{{- define "reflect.tensorKind" -}}
{{- if .Values.worker.tensorKind -}}
{{- .Values.worker.tensorKind -}}
{{- else if eq .Values.worker.backend "cuda" -}}
nccl
{{- else -}}
gloo
{{- end -}}
{{- end -}}

{{- define "reflect.modelDirectory" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.model.mountPath) (required "model.directory is required (the model directory's path inside the model volume, or the name to generate)" .Values.model.directory) -}}
{{- end -}}

{{- define "reflect.servedModelName" -}}
{{- required "model.servedModelName is required" .Values.model.servedModelName -}}
{{- end -}}

{{/* The replica leaders the router connects to (--replicas). */}}
{{- define "reflect.replicaAddresses" -}}
{{- $lws := include "reflect.lwsName" . -}}
{{- $count := int .Values.worker.replicas -}}
{{- if .Values.worker.autoscaling.enabled -}}
{{- $count = max $count (int .Values.worker.autoscaling.maxReplicas) | int -}}
{{- end -}}
{{- $addresses := list -}}
{{- range $group := until $count -}}
{{- $addresses = append $addresses (printf "%s-%d.%s.%s.svc.%s:%d" $lws $group $lws $.Release.Namespace $.Values.clusterDomain (int $.Values.worker.grpcPort)) -}}
{{- end -}}
{{- join "," $addresses -}}
{{- end -}}

{{/* The model volume (a pod volume named "model"). */}}
{{- define "reflect.modelVolume" -}}
- name: model
{{- if eq .Values.model.source "generate" }}
  emptyDir:
    sizeLimit: {{ .Values.model.generate.sizeLimit }}
{{- else if eq .Values.model.volume.type "pvc" }}
  persistentVolumeClaim:
    claimName: {{ required "model.volume.claimName is required with model.volume.type pvc" .Values.model.volume.claimName }}
    readOnly: true
{{- else if eq .Values.model.volume.type "hostPath" }}
  hostPath:
    path: {{ required "model.volume.hostPath is required with model.volume.type hostPath" .Values.model.volume.hostPath }}
    type: Directory
{{- else }}
{{- fail (printf "model.volume.type must be pvc or hostPath, not %q" .Values.model.volume.type) }}
{{- end }}
{{- end -}}

{{/* With model.source generate: an init container writing the demo model into the "model"
     emptyDir (same preset, same bytes in every pod: mkmodel is deterministic). */}}
{{- define "reflect.generateModelInitContainer" -}}
{{- if eq .Values.model.source "generate" }}
- name: generate-model
  image: {{ include "reflect.generatorImage" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: [/usr/local/bin/reflect]
  args:
    - mkmodel
    - --preset={{ .Values.model.generate.preset }}
    - --dtype={{ .Values.model.generate.dtype }}
    - --tokenizer_dir=/usr/local/share/reflect/llama-3.1-tokenizer
    - --out={{ include "reflect.modelDirectory" . }}
  securityContext:
    {{- include "reflect.containerSecurityContext" . | nindent 4 }}
  resources:
    requests: {cpu: 100m, memory: 256Mi}
    limits: {memory: 2Gi}
  volumeMounts:
    - name: model
      mountPath: {{ .Values.model.mountPath }}
{{- end }}
{{- end -}}

{{- define "reflect.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "reflect.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Checks across values that the schema cannot express. */}}
{{- define "reflect.validate" -}}
{{- if not (has .Values.model.source (list "volume" "generate")) -}}
{{- fail (printf "model.source must be volume or generate, not %q" .Values.model.source) -}}
{{- end -}}
{{- if and (eq .Values.worker.backend "cpu") (eq (include "reflect.tensorKind" .) "nccl") -}}
{{- fail "worker.tensorKind nccl needs worker.backend cuda" -}}
{{- end -}}
{{- $_ := include "reflect.podsPerGroup" . -}}
{{- end -}}
