{{/*
The six services: values key -> binary name, HTTP port (HTTP_ADDR, the
service's default port) and NATS role (key in nats.credentials.secrets).
*/}}
{{- define "tenantprov.serviceTable" -}}
orchestrator: {name: orchestrator, port: 9180, role: orchestrator}
minioAgent: {name: minio-agent, port: 9181, role: agentMinio}
pgAgent: {name: pg-agent, port: 9182, role: agentPostgres}
qdrantAgent: {name: qdrant-agent, port: 9183, role: agentQdrant}
redisAgent: {name: redis-agent, port: 9184, role: agentRedis}
auditSink: {name: audit-sink, port: 9185, role: auditSink}
{{- end }}

{{- define "tenantprov.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}{{ .Release.Name | trunc 40 | trimSuffix "-" }}{{ else }}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" }}{{ end }}
{{- end }}

{{- define "tenantprov.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .svc.name }}
{{- end }}

{{- define "tenantprov.labels" -}}
{{ include "tenantprov.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: tenantprov
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{- define "tenantprov.image" -}}
{{ .root.Values.image.repository }}/{{ .svc.name }}:{{ .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- end }}

{{/*
Secret files per service: each becomes an item of the pod's projected
"secrets" volume at /etc/tenantprov/secrets/<path> and the variable env
points at it (NAME_FILE, read by pkg/config).
*/}}
{{- define "tenantprov.files.orchestrator" -}}
- {env: CONTROL_PLANE_IDENTITY_FILE, secret: {{ .Values.controlPlane.identitySecret.name }}, key: {{ .Values.controlPlane.identitySecret.key }}, path: control-plane.agekey}
{{- end }}
{{- define "tenantprov.files.minioAgent" -}}
- {env: MINIO_ROOT_PASSWORD_FILE, secret: {{ .Values.minio.rootPasswordSecret.name }}, key: {{ .Values.minio.rootPasswordSecret.key }}, path: minio-root-password}
{{- end }}
{{- define "tenantprov.files.pgAgent" -}}
- {env: PG_ADMIN_URL_FILE, secret: {{ .Values.postgres.adminUrlSecret.name }}, key: {{ .Values.postgres.adminUrlSecret.key }}, path: pg-admin-url}
{{- end }}
{{- define "tenantprov.files.qdrantAgent" -}}
- {env: QDRANT_API_KEY_FILE, secret: {{ .Values.qdrant.apiKeySecret.name }}, key: {{ .Values.qdrant.apiKeySecret.key }}, path: qdrant-api-key}
{{- end }}
{{- define "tenantprov.files.redisAgent" -}}
- {env: REDIS_ADMIN_PASSWORD_FILE, secret: {{ .Values.redis.adminPasswordSecret.name }}, key: {{ .Values.redis.adminPasswordSecret.key }}, path: redis-admin-password}
{{- end }}
{{- define "tenantprov.files.auditSink" -}}
- {env: AUDIT_PG_URL_FILE, secret: {{ .Values.auditSink.writerUrlSecret.name }}, key: {{ .Values.auditSink.writerUrlSecret.key }}, path: audit-pg-url}
{{- end }}

{{/* Plain (non-secret) configuration per service. */}}
{{- define "tenantprov.env.orchestrator" -}}
- {name: OPERATOR_RECIPIENTS, value: {{ required "controlPlane.operatorRecipients is required (age recipients of the operators)" .Values.controlPlane.operatorRecipients | quote }}}
{{- end }}
{{- define "tenantprov.env.agent" -}}
- {name: CONTROL_PLANE_RECIPIENT, value: {{ required "controlPlane.recipient is required (the control plane's age recipient)" .Values.controlPlane.recipient | quote }}}
{{- end }}
{{- define "tenantprov.env.minioAgent" -}}
{{ include "tenantprov.env.agent" . }}
- {name: MINIO_ENDPOINT, value: {{ required "minio.endpoint is required (host:port)" .Values.minio.endpoint | quote }}}
- {name: MINIO_SECURE, value: {{ .Values.minio.secure | quote }}}
- {name: MINIO_PUBLIC_ENDPOINT, value: {{ .Values.minio.publicEndpoint | default .Values.minio.endpoint | quote }}}
- {name: MINIO_ROOT_USER, value: {{ .Values.minio.rootUser | quote }}}
{{- end }}
{{- define "tenantprov.env.pgAgent" -}}
{{ include "tenantprov.env.agent" . }}
- {name: PG_SSLMODE, value: {{ .Values.postgres.sslmode | quote }}}
{{- with .Values.postgres.publicHost }}
- {name: PG_PUBLIC_HOST, value: {{ . | quote }}}
{{- end }}
- {name: PG_PUBLIC_PORT, value: {{ .Values.postgres.publicPort | quote }}}
{{- end }}
{{- define "tenantprov.env.qdrantAgent" -}}
{{ include "tenantprov.env.agent" . }}
- {name: QDRANT_HOST, value: {{ required "qdrant.host is required" .Values.qdrant.host | quote }}}
- {name: QDRANT_GRPC_PORT, value: {{ .Values.qdrant.grpcPort | quote }}}
- {name: QDRANT_USE_TLS, value: {{ .Values.qdrant.useTLS | quote }}}
- {name: QDRANT_PUBLIC_HOST, value: {{ .Values.qdrant.publicHost | default .Values.qdrant.host | quote }}}
- {name: QDRANT_PUBLIC_GRPC_PORT, value: {{ .Values.qdrant.publicGrpcPort | quote }}}
{{- end }}
{{- define "tenantprov.env.redisAgent" -}}
{{ include "tenantprov.env.agent" . }}
- {name: REDIS_ADDR, value: {{ required "redis.addr is required (host:port)" .Values.redis.addr | quote }}}
- {name: REDIS_ADMIN_USER, value: {{ .Values.redis.adminUser | quote }}}
- {name: REDIS_TLS, value: {{ .Values.redis.tls | quote }}}
{{- if .Values.caBundle.configMap }}
- {name: REDIS_TLS_CA_FILE, value: {{ printf "/etc/tenantprov/ca/%s" .Values.caBundle.key | quote }}}
{{- end }}
- {name: REDIS_PUBLIC_ADDR, value: {{ .Values.redis.publicAddr | default .Values.redis.addr | quote }}}
{{- end }}
{{- define "tenantprov.env.auditSink" -}}
[]
{{- end }}

{{/* Configuration every service reads (pkg/service.Config). */}}
{{- define "tenantprov.env.common" -}}
- {name: NATS_URL, value: {{ required "nats.urls is required (every node of the NATS cluster)" .root.Values.nats.urls | quote }}}
- {name: NATS_CREDS, value: {{ printf "/etc/tenantprov/nats/%s" .root.Values.nats.credentials.key | quote }}}
- {name: HTTP_ADDR, value: {{ printf "0.0.0.0:%v" .svc.port | quote }}}
- {name: LOG_LEVEL, value: {{ .root.Values.logLevel | quote }}}
- {name: JETSTREAM_REPLICAS, value: {{ .root.Values.nats.jetstreamReplicas | quote }}}
- {name: SHUTDOWN_TIMEOUT, value: {{ printf "%vs" .root.Values.shutdownTimeoutSeconds | quote }}}
{{- with .root.Values.tracing }}
{{- if .otlpEndpoint }}
- {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: {{ .otlpEndpoint | quote }}}
- {name: OTEL_EXPORTER_OTLP_PROTOCOL, value: {{ .protocol | default "http/protobuf" | quote }}}
- {name: OTEL_SERVICE_NAME, value: {{ $.svc.name | quote }}}
{{- if .sampler }}
- {name: OTEL_TRACES_SAMPLER, value: {{ .sampler | quote }}}
{{- end }}
{{- end }}
{{- end }}
{{- if .root.Values.caBundle.configMap }}
- {name: SSL_CERT_FILE, value: {{ printf "/etc/tenantprov/ca/%s" .root.Values.caBundle.key | quote }}}
{{- end }}
{{- end }}

{{- define "tenantprov.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "tenantprov.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end }}
