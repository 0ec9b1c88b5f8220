{{/* Names: "<release>" when the release is called recalloc, else "<release>-recalloc". */}}
{{- define "recalloc.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The standard labels; call with (dict "root" $ "component" "rank"). */}}
{{- define "recalloc.labels" -}}
{{ include "recalloc.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: recalloc
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "recalloc.selectorLabels" -}}
app.kubernetes.io/name: recalloc
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "recalloc.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "recalloc.tokenSecret" -}}
{{- .Values.security.existingTokenSecret | default (printf "%s-token" (include "recalloc.fullname" .)) -}}
{{- end -}}

{{/* Environment every process shares: dependencies (unless "deps" is false: Redis and Kafka,
the Redis password), secrets, TLS, telemetry, the config file. Call with (dict "root" $ "deps" true). */}}
{{- define "recalloc.env" -}}
{{- $root := .root -}}
- name: RECALLOC_CONFIG
  value: /etc/recalloc/config.toml
{{- if .deps }}
- name: RECALLOC_REDIS_URL
  value: {{ $root.Values.redis.url | quote }}
- name: RECALLOC_REDIS_MODE
  value: {{ $root.Values.redis.mode | quote }}
{{- with $root.Values.redis.nodes }}
- name: RECALLOC_REDIS_NODES
  value: {{ . | quote }}
{{- end }}
{{- if $root.Values.redis.tls }}
- name: RECALLOC_REDIS_TLS
  value: "true"
{{- end }}
{{- with $root.Values.redis.username }}
- name: RECALLOC_REDIS_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if $root.Values.redis.passwordSecret.name }}
- name: RECALLOC_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.redis.passwordSecret.name }}
      key: {{ $root.Values.redis.passwordSecret.key }}
{{- end }}
- name: RECALLOC_KAFKA_BROKERS
  value: {{ $root.Values.kafka.brokers | quote }}
- name: RECALLOC_KAFKA_PARTITIONS
  value: {{ $root.Values.kafka.partitions | quote }}
{{- end }}
{{- if or $root.Values.security.existingTokenSecret $root.Values.security.token }}
- name: RECALLOC_SECURITY_TOKEN_FILE
  value: /etc/recalloc/token/token
{{- end }}
{{- if $root.Values.security.tls.enabled }}
- name: RECALLOC_SECURITY_TLS_CERT_FILE
  value: /etc/recalloc/tls/tls.crt
- name: RECALLOC_SECURITY_TLS_KEY_FILE
  value: /etc/recalloc/tls/tls.key
- name: RECALLOC_SECURITY_TLS_CA_FILE
  value: /etc/recalloc/tls/ca.crt
{{- if $root.Values.security.tls.requireClientCerts }}
- name: RECALLOC_SECURITY_TLS_CLIENT_CA_FILE
  value: /etc/recalloc/tls/ca.crt
{{- end }}
{{- end }}
- name: RECALLOC_TELEMETRY_LOG_FILTER
  value: {{ $root.Values.telemetry.logFilter | quote }}
- name: RECALLOC_TELEMETRY_LOG_FORMAT
  value: {{ $root.Values.telemetry.logFormat | quote }}
{{- with $root.Values.telemetry.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end -}}

{{- define "recalloc.volumeMounts" -}}
- name: config
  mountPath: /etc/recalloc/config.toml
  subPath: config.toml
  readOnly: true
{{- if or .Values.security.existingTokenSecret .Values.security.token }}
- name: token
  mountPath: /etc/recalloc/token
  readOnly: true
{{- end }}
{{- if .Values.security.tls.enabled }}
- name: tls
  mountPath: /etc/recalloc/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "recalloc.volumes" -}}
- name: config
  configMap:
    name: {{ include "recalloc.fullname" . }}-config
{{- if or .Values.security.existingTokenSecret .Values.security.token }}
- name: token
  secret:
    secretName: {{ include "recalloc.tokenSecret" . }}
{{- end }}
{{- if .Values.security.tls.enabled }}
- name: tls
  secret:
    secretName: {{ required "security.tls.secretName is required when security.tls.enabled" .Values.security.tls.secretName }}
{{- end }}
{{- end -}}

{{/* Probes; call with (dict "root" $ "grpcPort" 50051 "httpPort" 9101). Native gRPC probes on
grpc.health.v1: liveness asks the always-serving "liveness" service, readiness the overall
status, which follows Redis and Kafka. Kubernetes' gRPC probes cannot speak TLS, so with TLS on
they become the same questions over the plain HTTP port (/healthz, /readyz). */}}
{{- define "recalloc.probes" -}}
{{- if or .root.Values.security.tls.enabled (not .grpcPort) -}}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ .httpPort }}
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ .httpPort }}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ .httpPort }}
  periodSeconds: 5
  failureThreshold: 2
{{- else -}}
startupProbe:
  grpc:
    port: {{ .grpcPort }}
    service: liveness
  periodSeconds: 2
  failureThreshold: 60
livenessProbe:
  grpc:
    port: {{ .grpcPort }}
    service: liveness
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  grpc:
    port: {{ .grpcPort }}
  periodSeconds: 5
  failureThreshold: 2
{{- end -}}
{{- end -}}

{{- define "recalloc.podSecurity" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* A Deployment of one gRPC process. Call with (dict "root" $ "component" "rank" "binary"
"recalloc-rank" "grpcPort" 50053 "httpPort" 9103 "replicas" 2 "spec" .Values.rank "env" list
"serviceAccount" ""), optionally "rollingUpdate" (the strategy's maxSurge, maxUnavailable),
"httpPortName" (default http-metrics) and "noDeps" true (no Redis or Kafka settings: the console).
`spec` supplies resources, nodeSelector, tolerations, affinity, extraEnv. */}}
{{- define "recalloc.deployment" -}}
{{- $root := .root -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "recalloc.fullname" $root }}-{{ .component }}
  labels:
    {{- include "recalloc.labels" . | nindent 4 }}
spec:
  replicas: {{ .replicas }}
  revisionHistoryLimit: 5
  {{- with .rollingUpdate }}
  # Consumers: every start and stop of a member is one incremental rebalance of its group.
  strategy:
    type: RollingUpdate
    rollingUpdate:
      {{- toYaml . | nindent 6 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "recalloc.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "recalloc.labels" . | nindent 8 }}
        {{- with .podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    spec:
      {{- include "recalloc.podSpec" . | trim | nindent 6 }}
{{- end -}}

{{/* The pod spec every process shares. */}}
{{- define "recalloc.podSpec" -}}
{{- $root := .root -}}
{{- with .serviceAccount }}
serviceAccountName: {{ . }}
{{- else }}
automountServiceAccountToken: false
{{- end }}
{{- include "recalloc.podSecurity" $root }}
terminationGracePeriodSeconds: 30
containers:
  - name: {{ .container | default .component }}
    image: {{ include "recalloc.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: [{{ .binary | quote }}]
    ports:
      {{- if .grpcPort }}
      - name: grpc
        containerPort: {{ .grpcPort }}
        protocol: TCP
      {{- end }}
      - name: {{ .httpPortName | default "http-metrics" }}
        containerPort: {{ .httpPort }}
        protocol: TCP
    env:
      {{- include "recalloc.env" (dict "root" $root "deps" (not .noDeps)) | nindent 6 }}
      {{- with .env }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
      {{- with .spec.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- include "recalloc.probes" . | nindent 4 }}
    resources:
      {{- toYaml .spec.resources | nindent 6 }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    volumeMounts:
      {{- include "recalloc.volumeMounts" $root | nindent 6 }}
      - name: tmp
        mountPath: /tmp
volumes:
  {{- include "recalloc.volumes" $root | nindent 2 }}
  - name: tmp
    emptyDir: {}
{{- with .spec.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .spec.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .spec.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A Deployment of Kafka consumers: the replicas are members of one consumer group
(cooperative-sticky assignment), so they come and go freely and a rebalance moves only the
partitions that change owner; members beyond the group's partitions idle. Same arguments as
recalloc.deployment; "rollingUpdate" (maxSurge, maxUnavailable) defaults to one member at a time,
the new one ready before an old one leaves. */}}
{{- define "recalloc.consumers" -}}
{{- include "recalloc.deployment" (merge (dict "rollingUpdate" (.rollingUpdate | default (dict "maxSurge" 1 "maxUnavailable" 0))) .) -}}
{{- end -}}

{{/* A Service for one component. Headless (clusterIP: None): DNS answers with every ready pod,
so gRPC clients balance per request across replicas; a ClusterIP would pin each HTTP/2
connection to one pod. "virtualIP" true makes it an ordinary ClusterIP Service (the console's
page: browsers, port-forwards and Ingresses want one stable address, not gRPC balancing);
"httpPortName" names the HTTP port (default http-metrics). */}}
{{- define "recalloc.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "recalloc.fullname" .root }}-{{ .name | default .component }}
  labels:
    {{- include "recalloc.labels" . | nindent 4 }}
spec:
  {{- if not .virtualIP }}
  clusterIP: None
  {{- end }}
  {{- with .publishNotReady }}
  publishNotReadyAddresses: true
  {{- end }}
  selector:
    {{- with .selector }}
    {{- toYaml . | nindent 4 }}
    {{- else }}
    {{- include "recalloc.selectorLabels" . | nindent 4 }}
    {{- end }}
  ports:
    {{- if .grpcPort }}
    - name: grpc
      port: {{ .grpcPort }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    {{- end }}
    - name: {{ .httpPortName | default "http-metrics" }}
      port: {{ .httpPort }}
      targetPort: {{ .httpPortName | default "http-metrics" }}
      protocol: TCP
{{- end -}}

{{/* A PodDisruptionBudget for one component when enabled and it runs more than one pod. */}}
{{- define "recalloc.pdb" -}}
{{- if and .spec.pdb.enabled (gt (int .replicas) 1) }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "recalloc.fullname" .root }}-{{ .component }}
  labels:
    {{- include "recalloc.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .spec.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "recalloc.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* The embed process's settings for one variant; call with (dict "root" $ "variant" $v). */}}
{{- define "recalloc.embedEnv" -}}
- name: RECALLOC_EMBED_GRPC_ADDR
  value: 0.0.0.0:50052
- name: RECALLOC_EMBED_METRICS_ADDR
  value: 0.0.0.0:9102
- name: RECALLOC_EMBED_MODEL_DIR
  value: /opt/recalloc/models/all-MiniLM-L6-v2
- name: RECALLOC_EMBED_STORAGE
  value: {{ .root.Values.embed.storage | quote }}
- name: RECALLOC_EMBED_DEVICE
  value: {{ .variant.device | quote }}
- name: RECALLOC_EMBED_HALF_PRECISION
  value: {{ .variant.halfPrecision | quote }}
- name: RECALLOC_EMBED_WORKERS
  value: {{ .variant.workers | quote }}
- name: RECALLOC_EMBED_THREADS_PER_WORKER
  value: {{ .variant.threadsPerWorker | quote }}
{{- end -}}
