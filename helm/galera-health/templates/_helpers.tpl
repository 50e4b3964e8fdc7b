{{/*
Names and labels.
*/}}
{{- define "galera-health.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "galera-health.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "galera-health.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "galera-health.labels" -}}
app.kubernetes.io/name: {{ include "galera-health.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{ include "galera-health.extraLabels" . }}
{{- end -}}

{{/* Labels that never appear in selectors. */}}
{{- define "galera-health.extraLabels" -}}
helm.sh/chart: {{ include "galera-health.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: galera-health
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of the reference StatefulSet's Galera pods (stable: used in selectors). */}}
{{- define "galera-health.galeraSelectorLabels" -}}
app.kubernetes.io/name: {{ include "galera-health.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: galera
{{- end -}}

{{/* The Galera pods the Service and NetworkPolicy select: the reference StatefulSet's, or yours. */}}
{{- define "galera-health.galeraPodSelector" -}}
{{- if .Values.referenceStatefulSet.enabled -}}
{{ include "galera-health.galeraSelectorLabels" . }}
{{- else -}}
{{- if not .Values.galera.podSelector -}}
{{- fail "galera.podSelector must name your Galera pods' labels (or enable referenceStatefulSet)" -}}
{{- end -}}
{{ toYaml .Values.galera.podSelector }}
{{- end -}}
{{- end -}}

{{/* "true" when the agents label their pods with the role (agent.writer and agent.podLabel). */}}
{{- define "galera-health.podLabelOn" -}}
{{- and .Values.agent.writer (ne .Values.agent.podLabel "") -}}
{{- end -}}

{{/* The ServiceAccount the Galera pods run as when the agents label them: put it in your pod's
     serviceAccountName in sidecar mode (the reference StatefulSet does). */}}
{{- define "galera-health.serviceAccountName" -}}
{{- printf "%s-agent" (include "galera-health.fullname" .) -}}
{{- end -}}

{{- define "galera-health.secretName" -}}
{{- default (printf "%s-auth" (include "galera-health.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "galera-health.configMapName" -}}
{{- printf "%s-config" (include "galera-health.fullname" .) -}}
{{- end -}}

{{- define "galera-health.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Paths inside the agent container. */}}
{{/* The config is a directory mount (no subPath): the kubelet swaps the file in place and the
     agent's own mtime watch reloads it. */}}
{{- define "galera-health.configDir" -}}/etc/galera-health/config{{- end -}}
{{- define "galera-health.secretDir" -}}/etc/galera-health/secret{{- end -}}

{{/*
Cross-field checks the JSON schema cannot express; each stops rendering with one clear line.
*/}}
{{- define "galera-health.validate" -}}
{{- $a := .Values.agent -}}
{{- if ge (float64 $a.statementTimeout) (float64 $a.readTimeout) -}}
{{- fail (printf "agent.statementTimeout (%v) must be below agent.readTimeout (%v) so the server ends a slow poll before the client gives up" $a.statementTimeout $a.readTimeout) -}}
{{- end -}}
{{- if and (not .Values.auth.existingSecret) (not .Values.auth.password) -}}
{{- fail "auth.password is required when auth.existingSecret is empty (or name an existing Secret in auth.existingSecret)" -}}
{{- end -}}
{{- if and .Values.agent.writer (not .Values.auth.existingSecret) (not .Values.auth.writerPassword) -}}
{{- fail "auth.writerPassword is required with agent.writer when auth.existingSecret is empty (the writer account's password; the monitor account stays USAGE-only)" -}}
{{- end -}}
{{- if and .Values.referenceStatefulSet.enabled (not .Values.auth.existingSecret) (not .Values.auth.rootPassword) -}}
{{- fail "auth.rootPassword is required for the reference StatefulSet when auth.existingSecret is empty" -}}
{{- end -}}
{{- $p := .Values.service.azureProbe -}}
{{- if and .Values.service.enabled $p.enabled (ge (mul (int $p.intervalSeconds) (int $p.numberOfProbes)) 120) -}}
{{- fail (printf "service.azureProbe.intervalSeconds x numberOfProbes (%d x %d) must be below 120 (Azure limit)" (int $p.intervalSeconds) (int $p.numberOfProbes)) -}}
{{- end -}}
{{- if and .Values.service.enabled $p.enabled (eq (int $p.nodePort) (int .Values.service.port)) -}}
{{- fail "service.azureProbe.nodePort must differ from service.port (cloud-provider-azure would read it as the Service port)" -}}
{{- end -}}
{{- if and .Values.service.enabled (eq .Values.service.type "LoadBalancer") (not .Values.service.internal) (not .Values.service.loadBalancerSourceRanges) (not .Values.service.publicWithoutSourceRanges) -}}
{{- fail "service.internal=false with no service.loadBalancerSourceRanges opens the MySQL port to the Internet: set loadBalancerSourceRanges, or service.publicWithoutSourceRanges=true if that is what you want" -}}
{{- end -}}
{{- $np := .Values.networkPolicy -}}
{{- if and $np.enabled (not $np.mysqlFromReleaseNamespace) (not $np.mysqlFrom) (not $np.mysqlFromPrivateRanges) (not $np.mysqlFromAnywhere) -}}
{{- fail "networkPolicy admits no MySQL client: set networkPolicy.mysqlFrom (your application namespaces or subnets), networkPolicy.mysqlFromReleaseNamespace=true, or networkPolicy.mysqlFromAnywhere=true to admit every source" -}}
{{- end -}}
{{- if and $a.killSessions (ge (float64 $a.killSessionsAfter) (float64 .Values.drain.preStopSleepSeconds)) -}}
{{- fail (printf "agent.killSessionsAfter (%v) must be below drain.preStopSleepSeconds (%v): sessions are killed while the preStop still waits, before mariadbd's SIGTERM" $a.killSessionsAfter .Values.drain.preStopSleepSeconds) -}}
{{- end -}}
{{- if and .Values.auth.statusTokenKey (not .Values.auth.existingSecret) (not .Values.auth.statusToken) -}}
{{- fail "auth.statusToken is required when auth.statusTokenKey is set and auth.existingSecret is empty" -}}
{{- end -}}
{{- if and (not (kindIs "invalid" .Values.agent.status.port)) (eq (int .Values.agent.status.port) (int .Values.agent.port)) -}}
{{- fail "agent.status.port must differ from agent.port (null serves /status and /metrics on agent.port)" -}}
{{- end -}}
{{- if and $a.writerUsers (not $a.writer) -}}
{{- fail "agent.writerUsers needs agent.writer=true: the sessions are closed when a node stops being the writer" -}}
{{- end -}}
{{- if .Values.writerService.enabled -}}
{{- if not $a.writer -}}
{{- fail "writerService.enabled needs agent.writer=true: without the election no agent answers 200 on /writer and the writer Service has no backend" -}}
{{- end -}}
{{- if not (and .Values.service.enabled (eq .Values.service.type "LoadBalancer") .Values.service.azureProbe.enabled) -}}
{{- fail "writerService.enabled needs service.enabled, service.type=LoadBalancer and service.azureProbe.enabled: the writer Service shares the read Service's probe nodePort" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.readersService.enabled (ne (include "galera-health.podLabelOn" .) "true") -}}
{{- fail "readersService.enabled needs agent.writer=true and agent.podLabel: it selects the pods the agents label standby" -}}
{{- end -}}
{{- if .Values.referenceStatefulSet.enabled -}}
{{- $r := .Values.referenceStatefulSet -}}
{{- if lt (int $r.terminationGracePeriodSeconds) (add (int .Values.drain.preStopSleepSeconds) 30) -}}
{{- fail (printf "referenceStatefulSet.terminationGracePeriodSeconds (%d) must be at least drain.preStopSleepSeconds + 30 (%d): a clean Galera shutdown needs time after the drain" (int $r.terminationGracePeriodSeconds) (add (int .Values.drain.preStopSleepSeconds) 30)) -}}
{{- end -}}
{{- $agentResources := .Values.agent.resources -}}
{{- if not (and $agentResources.requests $agentResources.limits (eq (toString $agentResources.requests.cpu) (toString $agentResources.limits.cpu)) (eq (toString $agentResources.requests.memory) (toString $agentResources.limits.memory))) -}}
{{- fail "agent.resources: requests must equal limits (cpu and memory) with the reference StatefulSet, or the Galera pod is not Guaranteed and is evicted first under node pressure" -}}
{{- end -}}
{{- if ge (int $r.bootstrapOrdinal) (int $r.replicas) -}}
{{- fail (printf "referenceStatefulSet.bootstrapOrdinal (%d) must be below replicas (%d)" (int $r.bootstrapOrdinal) (int $r.replicas)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The reference database's memory (referenceStatefulSet.resources.memory: <n>Mi or <n>Gi) in
     MiB. */}}
{{- define "galera-health.memoryMiB" -}}
{{- $m := toString .Values.referenceStatefulSet.resources.memory -}}
{{- if hasSuffix "Gi" $m -}}
{{- mul (atoi (trimSuffix "Gi" $m)) 1024 -}}
{{- else -}}
{{- atoi (trimSuffix "Mi" $m) -}}
{{- end -}}
{{- end -}}

{{/* innodb_buffer_pool_size in MiB: innodbBufferPoolPercent of the memory, rounded down to whole
     128 MiB chunks (InnoDB's default innodb_buffer_pool_chunk_size), at least one chunk. */}}
{{- define "galera-health.bufferPoolMiB" -}}
{{- $mib := atoi (include "galera-health.memoryMiB" .) -}}
{{- $pool := div (mul $mib (int .Values.referenceStatefulSet.innodbBufferPoolPercent)) 100 -}}
{{- max 128 (mul (div $pool 128) 128) -}}
{{- end -}}

{{/* available_when_donor: null = true with the reference StatefulSet (its SST is mariabackup,
     which keeps the donor serving), false in sidecar mode (your SST may be rsync, which blocks
     the donor). */}}
{{- define "galera-health.availableWhenDonor" -}}
{{- if kindIs "invalid" .Values.agent.availableWhenDonor -}}
{{- .Values.referenceStatefulSet.enabled -}}
{{- else -}}
{{- .Values.agent.availableWhenDonor -}}
{{- end -}}
{{- end -}}

{{/* The port /status, /metrics and / are served on: agent.status.port, or the probe port. */}}
{{- define "galera-health.statusPort" -}}
{{- if kindIs "invalid" .Values.agent.status.port -}}
{{- .Values.agent.port -}}
{{- else -}}
{{- .Values.agent.status.port -}}
{{- end -}}
{{- end -}}

{{/* The Azure probe's nodePort, first of:
     1. service.azureProbe.nodePort, when set (a deliberate change);
     2. the nodePort of the probe Service this release already has in the cluster (helm lookup):
        an upgrade keeps the port the Azure LB probes, whatever an earlier chart version chose
        (0.1.0 fixed 30920), so no backend probes down until the LB is reconfigured;
     3. a number derived from the namespace and release in 30000-30085, the band Kubernetes
        (>= 1.29; opt-in since 1.27) keeps for static nodePorts, so two releases do not collide.
     `helm template` and `helm install/upgrade --dry-run` (client side) reach no cluster: lookup
     returns nothing there and they print the derived number (or the value set); `helm upgrade`
     and `helm template --dry-run=server` see the existing Service. */}}
{{- define "galera-health.probeNodePort" -}}
{{- $name := printf "%s-probe" (include "galera-health.fullname" .) -}}
{{- $existing := lookup "v1" "Service" .Release.Namespace $name -}}
{{- include "galera-health.probeNodePortFrom" (dict "root" . "existing" $existing) -}}
{{- end -}}

{{/* The choice above, given the existing probe Service (an empty dict when there is none). */}}
{{- define "galera-health.probeNodePortFrom" -}}
{{- $root := .root -}}
{{- $p := $root.Values.service.azureProbe -}}
{{- $kept := 0 -}}
{{- range (dig "spec" "ports" (list) (default (dict) .existing)) -}}
{{- if and (eq (toString (get . "name")) "galera-health") (get . "nodePort") -}}
{{- $kept = int (get . "nodePort") -}}
{{- end -}}
{{- end -}}
{{- if not (kindIs "invalid" $p.nodePort) -}}
{{- $p.nodePort -}}
{{- else if $kept -}}
{{- $kept -}}
{{- else -}}
{{- add 30000 (mod (atoi (adler32sum (printf "%s/%s" $root.Release.Namespace (include "galera-health.fullname" $root)))) 86) -}}
{{- end -}}
{{- end -}}

{{/*
The agent's TOML config (the ConfigMap's agent.toml). Keys as in the agent's README; no password.
*/}}
{{- define "galera-health.agentToml" -}}
{{- $a := .Values.agent -}}
# galera-health agent config, rendered by the galera-health chart.
listen = "0.0.0.0:{{ $a.port }}"
user = {{ $a.user | quote }}
password_file = "{{ include "galera-health.secretDir" . }}/{{ .Values.auth.passwordKey }}"
interval = {{ $a.interval | float64 }}
connect_timeout = {{ $a.connectTimeout | int }}
read_timeout = {{ $a.readTimeout | int }}
write_timeout = {{ $a.writeTimeout | int }}
statement_timeout = {{ $a.statementTimeout | float64 }}
{{- if not (kindIs "invalid" $a.maxAge) }}
max_age = {{ $a.maxAge | float64 }}
{{- end }}
{{- if not (kindIs "invalid" $a.holdDown) }}
hold_down = {{ $a.holdDown | float64 }}
{{- end }}
backoff_max = {{ $a.backoffMax | float64 }}
stuck_after = {{ $a.stuckAfter | float64 }}
drain_seconds = {{ $a.drainSeconds | float64 }}
state_dir = {{ $a.stateDir | quote }}
log_level = {{ $a.logLevel | quote }}
log_format = {{ $a.logFormat | quote }}
available_when_donor = {{ include "galera-health.availableWhenDonor" . }}
kill_sessions = {{ $a.killSessions }}
kill_sessions_after = {{ $a.killSessionsAfter | float64 }}
writer = {{ $a.writer }}
writer_priority = {{ $a.writerPriority | int }}
{{- if eq (include "galera-health.podLabelOn" .) "true" }}
kubernetes_pod_label = {{ $a.podLabel | quote }}
{{- end }}
{{- if $a.writer }}
writer_user = {{ $a.writerUser | quote }}
writer_password_file = "{{ include "galera-health.secretDir" . }}/{{ .Values.auth.writerPasswordKey }}"
{{- with $a.writerUsers }}
writer_users = {{ join "," . | quote }}
{{- end }}
{{- if not (kindIs "invalid" $a.writerKillGrace) }}
writer_kill_grace = {{ $a.writerKillGrace | float64 }}
{{- end }}
{{- end }}
{{- if not (kindIs "invalid" $a.status.port) }}
status_listen = "0.0.0.0:{{ $a.status.port }}"
{{- end }}
{{- if .Values.auth.statusTokenKey }}
status_token_file = "{{ include "galera-health.secretDir" . }}/{{ .Values.auth.statusTokenKey }}"
{{- end }}
{{- if .Values.referenceStatefulSet.enabled }}
{{- $fullname := include "galera-health.fullname" . }}
{{- $port := include "galera-health.statusPort" . }}
# Whole-cluster recovery (docs/architecture.md): the node's datadir, mounted read-only into this
# container, and every pod's agent; the start script follows the decision on /recovery.
datadir = "/var/lib/mysql"
recovery_peers = "{{ range $i, $_ := until (int .Values.referenceStatefulSet.replicas) }}{{ if $i }},{{ end }}{{ $fullname }}-{{ $i }}=http://{{ $fullname }}-{{ $i }}.{{ $fullname }}-headless.{{ $.Release.Namespace }}.svc:{{ $port }}{{ end }}"
{{- else if .Values.agent.datadir }}
datadir = {{ .Values.agent.datadir | quote }}
{{- end }}

[nodes]
{{ $a.nodeName }} = {{ $a.nodeAddress | quote }}
{{- end -}}

{{/*
The agent sidecar container. Include it in your Galera pod's containers:
  containers:
    - name: mariadb
      ...
    {{- include "galera-health.sidecar" . | nindent 4 }}
and add the volumes from "galera-health.volumes" to the pod.
*/}}
{{- define "galera-health.sidecar" -}}
- name: galera-health
  image: {{ include "galera-health.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["--config", "{{ include "galera-health.configDir" . }}/agent.toml"]
  ports:
    - name: galera-health
      containerPort: {{ .Values.agent.port }}
      protocol: TCP
    {{- if not (kindIs "invalid" .Values.agent.status.port) }}
    - name: gh-status
      containerPort: {{ .Values.agent.status.port }}
      protocol: TCP
    {{- end }}
  {{- $podLabel := eq (include "galera-health.podLabelOn" .) "true" }}
  {{- if or $podLabel .Values.agent.extraEnv }}
  env:
    {{- if $podLabel }}
    # the pod the agent labels with its role (kubernetes_pod_label), from the downward API
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    {{- end }}
    {{- with .Values.agent.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  livenessProbe:
    {{- include "galera-health.livenessProbe" . | nindent 4 }}
  resources:
    {{- toYaml .Values.agent.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.agent.securityContext | nindent 4 }}
  volumeMounts:
    - name: galera-health-config
      mountPath: {{ include "galera-health.configDir" . }}
      readOnly: true
    - name: galera-health-secret
      mountPath: {{ include "galera-health.secretDir" . }}
      readOnly: true
    - name: galera-health-state
      mountPath: {{ .Values.agent.stateDir }}
    {{- if .Values.agent.socketDir }}
    - name: mysqld-socket
      mountPath: {{ .Values.agent.socketDir }}
    {{- end }}
    {{- if .Values.referenceStatefulSet.enabled }}
    # grastate.dat, gvwstate.dat, wsrep-recover.log: read-only, and readable through the pod's
    # fsGroup (mariadbd writes them 0660 in the fsGroup-owned volume); nothing else is granted.
    - name: data
      mountPath: /var/lib/mysql
      readOnly: true
    {{- end }}
{{- end -}}

{{/* The pod volumes the sidecar needs (add to your pod's volumes). */}}
{{- define "galera-health.volumes" -}}
- name: galera-health-config
  configMap:
    name: {{ include "galera-health.configMapName" . }}
- name: galera-health-secret
  secret:
    secretName: {{ include "galera-health.secretName" . }}
    items:
      - key: {{ .Values.auth.passwordKey }}
        path: {{ .Values.auth.passwordKey }}
      {{- if .Values.auth.statusTokenKey }}
      - key: {{ .Values.auth.statusTokenKey }}
        path: {{ .Values.auth.statusTokenKey }}
      {{- end }}
      {{- if .Values.agent.writer }}
      - key: {{ .Values.auth.writerPasswordKey }}
        path: {{ .Values.auth.writerPasswordKey }}
      {{- end }}
    defaultMode: 0440
- name: galera-health-state
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- if .Values.agent.socketDir }}
- name: mysqld-socket
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- end -}}

{{/* Mounts for the DATABASE container: the shared state dir (preStop writes the maintenance file)
     and, with agent.socketDir, the socket directory. */}}
{{- define "galera-health.databaseVolumeMounts" -}}
- name: galera-health-state
  mountPath: {{ .Values.agent.stateDir }}
{{- if .Values.agent.socketDir }}
- name: mysqld-socket
  mountPath: {{ .Values.agent.socketDir }}
{{- end }}
{{- end -}}

{{/* Readiness probe for the DATABASE container: the agent's /readyz (same verdict as /health). */}}
{{- define "galera-health.readinessProbe" -}}
httpGet:
  path: /readyz
  port: {{ .Values.agent.port }}
periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
timeoutSeconds: {{ .Values.probes.readiness.timeoutSeconds }}
failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
successThreshold: {{ .Values.probes.readiness.successThreshold }}
{{- end -}}

{{/* Startup probe for the DATABASE container: /readyz, patient enough for a long SST. */}}
{{- define "galera-health.startupProbe" -}}
{{- $s := .Values.probes.startup -}}
httpGet:
  path: /readyz
  port: {{ .Values.agent.port }}
periodSeconds: {{ $s.periodSeconds }}
timeoutSeconds: 1
failureThreshold: {{ max 1 (div (int $s.maxSeconds) (int $s.periodSeconds)) }}
{{- end -}}

{{/* Liveness probe for the AGENT container: /livez, which never asks the database. */}}
{{- define "galera-health.livenessProbe" -}}
httpGet:
  path: /livez
  port: {{ .Values.agent.port }}
periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
timeoutSeconds: {{ .Values.probes.liveness.timeoutSeconds }}
failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
{{- end -}}

{{/* preStop of the DATABASE container: agent to 503 maintenance, wait out readiness + LB window,
     then clear the file (so a restarted container does not stay in maintenance) and let the
     container's SIGTERM shut mariadbd down cleanly. */}}
{{- define "galera-health.preStop" -}}
exec:
  command:
    - /bin/sh
    - -c
    - >-
      echo "pod terminating (preStop drain)" > {{ .Values.agent.stateDir }}/maintenance;
      sleep {{ .Values.drain.preStopSleepSeconds }};
      rm -f {{ .Values.agent.stateDir }}/maintenance
{{- end -}}
