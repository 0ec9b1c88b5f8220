#!/usr/bin/env bash
# The chart's checks (part of `make test` and `make chart`), with the real helm (v3.17.2, fetched
# once by deploy/local/helm.sh). For the default values and each ci/*-values.yaml:
#  1. helm lint --strict passes;
#  2. helm template renders (helm checks the values against values.schema.json first), and the
#     values as helm merged them satisfy values.schema.json for Python's jsonschema too;
#  3. every rendered manifest passes kubernetes-validate --strict against Kubernetes $KUBE_VERSION
#     (custom resources — KEDA's ScaledObject and the ServiceMonitor — have no schema there and
#     are reported as skipped);
#  4. the scheduler's Role grants only Deployments, their scale, and (when enabled) its Lease;
#  5. with TLS on, every KEDA trigger on the scheduler's external scaler authenticates with a
#     rendered TriggerAuthentication that carries the CA (and the client certificate when the
#     servers require one); KEDA's Kafka triggers (keda.kafka) name the consumers' group and no
#     Deployment is the target of two ScaledObjects;
#  6. the console's Deployment and Service render as expected (console_check below).
# Then: deploy/k8s equals helm's render with the default values; values that cannot work are
# refused by helm template with their message (several schedulers without leader election, a
# consumer scaled both by the scheduler and by KEDA's Kafka trigger, values the schema forbids);
# consumer replicas beyond kafka.partitions are not refused (the group's extra members idle).
set -euo pipefail
source "$(dirname "$0")/tools.sh"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
failed=0
bad() { echo "chart check FAILED: $*" >&2; failed=1; }
echo "chart: $(helm version --short) ($helm_bin)" >&2

# The values exactly as helm merges them (.Values), from a copy of the chart with one more template.
cp -r "$chart_dir" "$work/values-chart"
echo '{{ toJson .Values }}' >"$work/values-chart/templates/merged-values.json"
merged_values() {  # values files... -> the merged values as JSON on stdout
  local args=() f
  for f in "$@"; do args+=(-f "$f"); done
  helm template recalloc "$work/values-chart" --kube-version "$KUBE_VERSION" "${args[@]}" --show-only templates/merged-values.json \
    | sed '/^---$/d; /^# Source: /d'
}

# The console: with console.enabled, one Deployment running recalloc-console on 0.0.0.0:9106 with
# every service's gRPC address and HTTP base URL at the release's Service names (the embed API's
# Service, or the workers' without an API variant), the shared token file when a token is set
# (its /api is then guarded), the release's TLS files (its client certificate when the servers
# require one), no Redis or Kafka settings, HTTP probes on /healthz and /readyz, and a ClusterIP
# Service with port 9106 named http (scraped by the ServiceMonitor); without it, none of these.
console_check() {  # name, merged values JSON, render folder
  "$chart_py" - "$@" <<'PY'
import glob, json, sys, yaml
name, values = sys.argv[1], json.load(open(sys.argv[2]))
docs = [d for p in sorted(glob.glob(sys.argv[3] + "/*.yaml")) for d in yaml.safe_load_all(open(p)) if d]
full, ns = "recalloc", "recalloc"
def console(kind):
    return [d for d in docs if d["kind"] == kind and d["metadata"]["labels"].get("app.kubernetes.io/component") == "console"]
errors = []
monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
scraped = {e["port"] for m in monitors for e in m["spec"]["endpoints"]}
if not values["console"]["enabled"]:
    if console("Deployment") or console("Service"):
        errors.append("console.enabled=false rendered a console")
    if "http" in scraped:
        errors.append("the ServiceMonitor scrapes a console that is not there")
else:
    deps, svcs = console("Deployment"), console("Service")
    if len(deps) != 1 or len(svcs) != 1:
        sys.exit(f"  {name}: {len(deps)} console Deployments and {len(svcs)} Services, not one each")
    dep, svc = deps[0], svcs[0]
    if dep["metadata"]["name"] != f"{full}-console" or svc["metadata"]["name"] != f"{full}-console":
        errors.append(f"named {dep['metadata']['name']} / {svc['metadata']['name']}")
    if dep["spec"]["replicas"] != values["console"]["replicas"]:
        errors.append(f"replicas {dep['spec']['replicas']}")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    if c["command"] != ["recalloc-console"]:
        errors.append(f"command {c['command']}")
    if c["image"] != f"{values['image']['repository']}:{values['image']['tag'] or '0.1.0'}":
        errors.append(f"image {c['image']}")
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    embed = "embed" if any(v["enabled"] for v in values["embed"]["variants"].values()) else "embed-worker"
    want = {
        "RECALLOC_CONFIG": "/etc/recalloc/config.toml",
        "RECALLOC_CONSOLE_HTTP_ADDR": "0.0.0.0:9106",
        "RECALLOC_CONSOLE_REFRESH_MS": str(values["console"]["refreshMs"]),
        "RECALLOC_CONSOLE_INGEST_ADDR": f"{full}-ingest.{ns}.svc:50051",
        "RECALLOC_CONSOLE_EMBED_ADDR": f"{full}-{embed}.{ns}.svc:50052",
        "RECALLOC_CONSOLE_RANK_ADDR": f"{full}-rank.{ns}.svc:50053",
        "RECALLOC_CONSOLE_SCHEDULER_ADDR": f"{full}-scheduler.{ns}.svc:50054",
        "RECALLOC_CONSOLE_INGEST_URL": f"http://{full}-ingest.{ns}.svc:9101",
        "RECALLOC_CONSOLE_FEATURIZER_URL": f"http://{full}-featurizer.{ns}.svc:9105",
        "RECALLOC_CONSOLE_EMBED_URL": f"http://{full}-{embed}.{ns}.svc:9102",
        "RECALLOC_CONSOLE_RANK_URL": f"http://{full}-rank.{ns}.svc:9103",
        "RECALLOC_CONSOLE_SCHEDULER_URL": f"http://{full}-scheduler.{ns}.svc:9104",
    }
    sec = values["security"]
    token = bool(sec["existingTokenSecret"] or sec["token"])
    if token:
        want["RECALLOC_SECURITY_TOKEN_FILE"] = "/etc/recalloc/token/token"
    if sec["tls"]["enabled"]:
        want["RECALLOC_SECURITY_TLS_CA_FILE"] = "/etc/recalloc/tls/ca.crt"
        if sec["tls"]["requireClientCerts"]:
            want["RECALLOC_SECURITY_TLS_CLIENT_CERT_FILE"] = "/etc/recalloc/tls/tls.crt"
            want["RECALLOC_SECURITY_TLS_CLIENT_KEY_FILE"] = "/etc/recalloc/tls/tls.key"
    for k, v in want.items():
        if env.get(k) != v:
            errors.append(f"env {k}={env.get(k)!r}, want {v!r}")
    for k in env:
        if k.startswith(("RECALLOC_REDIS_", "RECALLOC_KAFKA_")):
            errors.append(f"env {k}: the console uses neither Redis nor Kafka")
        if k == "RECALLOC_SECURITY_TOKEN_FILE" and not token:
            errors.append("a token file without a token")
    # Every other Deployment's token file too: the console guards with the token the writes take.
    for d in docs:
        if d["kind"] == "Deployment" and token:
            e = {x["name"]: x.get("value") for x in d["spec"]["template"]["spec"]["containers"][0]["env"]}
            if e.get("RECALLOC_SECURITY_TOKEN_FILE") != "/etc/recalloc/token/token":
                errors.append(f"{d['metadata']['name']} lacks the token file")
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    if token and (mounts.get("token") != "/etc/recalloc/token" or "secret" not in volumes.get("token", {})):
        errors.append("the token Secret is not mounted at /etc/recalloc/token")
    if sec["tls"]["enabled"] and mounts.get("tls") != "/etc/recalloc/tls":
        errors.append("the TLS Secret is not mounted at /etc/recalloc/tls")
    ports = [(p["name"], p["containerPort"]) for p in c["ports"]]
    if ports != [("http", 9106)]:
        errors.append(f"container ports {ports}")
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = (c.get(probe) or {}).get("httpGet") or {}
        if (got.get("path"), got.get("port")) != (path, 9106):
            errors.append(f"{probe} {c.get(probe)}")
    if c["resources"] != values["console"]["resources"]:
        errors.append(f"resources {c['resources']}")
    if c["securityContext"] != values["securityContext"] or pod["securityContext"] != values["podSecurityContext"]:
        errors.append("security contexts differ from the values")
    if pod.get("automountServiceAccountToken") is not False or "serviceAccountName" in pod:
        errors.append("the console needs no Kubernetes API access")
    sp = svc["spec"]
    if sp.get("clusterIP") == "None" or [(p["name"], p["port"], p["targetPort"]) for p in sp["ports"]] != [("http", 9106, "http")]:
        errors.append(f"Service spec {sp}")
    if sp["selector"] != dep["spec"]["selector"]["matchLabels"]:
        errors.append("the Service does not select the console's pods")
    if monitors and "http" not in scraped:
        errors.append("the ServiceMonitor does not scrape the console's port http")
for e in errors:
    print(f"  {name}: console: {e}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
}

for values in "" "$chart_dir"/ci/*-values.yaml; do
  name=${values:+$(basename "$values" .yaml)}; name=${name:-defaults}
  args=(); [ -n "$values" ] && args=(-f "$values")
  helm lint --strict --kube-version "$KUBE_VERSION" "${args[@]}" "$chart_dir" >"$work/$name.lint" 2>&1 \
    || { cat "$work/$name.lint" >&2; bad "$name: helm lint --strict"; }
  merged_values ${values:+"$values"} >"$work/$name.json" || { bad "$name: helm template refused the values"; continue; }
  "$chart_py" - "$chart_dir/values.schema.json" "$work/$name.json" <<'PY' || bad "$name: values do not satisfy values.schema.json"
import json, sys, jsonschema
schema, values = (json.load(open(p)) for p in sys.argv[1:3])
errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(values), key=lambda e: list(e.path))
for e in errors:
    print(f"  {'.'.join(map(str, e.path)) or '(top)'}: {e.message}", file=sys.stderr)
sys.exit(1 if errors else 0)
PY
  render "$work/$name" "${args[@]}" || { bad "$name: helm template failed"; continue; }
  "$kv_venv/bin/kubernetes-validate" --strict -k "$KUBE_VERSION" --quiet "$work/$name"/*.yaml >"$work/$name.kv" 2>&1 \
    || { cat "$work/$name.kv" >&2; bad "$name: kubernetes-validate $KUBE_VERSION"; }
  grep -v "Couldn't find schema for kind \(ScaledObject\|ServiceMonitor\|TriggerAuthentication\)" "$work/$name.kv" | grep . >&2 || true
  # The Role: nothing beyond deployments, deployments/scale and leases, and no wildcard verb.
  "$chart_py" - "$work/$name"/*.yaml <<'PY' || bad "$name: a Role grants more than it should"
import sys, yaml
allowed = {("apps", "deployments"), ("apps", "deployments/scale"), ("coordination.k8s.io", "leases")}
ok = True
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") not in ("Role", "ClusterRole"):
            continue
        if doc["kind"] == "ClusterRole":
            print(f"  {path}: a ClusterRole", file=sys.stderr); ok = False
        for rule in doc.get("rules", []):
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    if (g, r) not in allowed:
                        print(f"  {path}: grants {g}/{r}", file=sys.stderr); ok = False
            if "*" in rule["verbs"]:
                print(f"  {path}: a wildcard verb", file=sys.stderr); ok = False
sys.exit(0 if ok else 1)
PY
  # KEDA: against a TLS scheduler each external trigger names a TriggerAuthentication with what it
  # needs; each Kafka trigger reads its consumers' group; one ScaledObject per Deployment.
  "$chart_py" - "$work/$name.json" "$work/$name"/*.yaml <<'PY' || bad "$name: KEDA's ScaledObjects are wrong (TLS scheduler, consumer group or a shared target)"
import json, sys, yaml
values = json.load(open(sys.argv[1]))
tls = values["security"]["tls"]
docs = [d for p in sys.argv[2:] for d in yaml.safe_load_all(open(p)) if d]
auths = {d["metadata"]["name"]: {r["parameter"] for r in d["spec"]["secretTargetRef"]}
         for d in docs if d["kind"] == "TriggerAuthentication"}
need = {"caCert"} | ({"tlsClientCert", "tlsClientKey"} if tls["requireClientCerts"] else set())
ok = True
groups = {"featurizer": values["featurizer"]["groupId"], "embed-worker": values["embed"]["worker"]["groupId"]}
targets = {}
for d in docs:
    if d["kind"] != "ScaledObject":
        continue
    target = d["spec"]["scaleTargetRef"]["name"]
    if target in targets:
        print(f"  {target}: the target of ScaledObjects {targets[target]} and {d['metadata']['name']}", file=sys.stderr); ok = False
    targets[target] = d["metadata"]["name"]
    for t in d["spec"]["triggers"]:
        if t["type"] == "kafka":
            component = d["metadata"]["labels"]["app.kubernetes.io/component"]
            if t["metadata"].get("consumerGroup") != groups.get(component):
                print(f"  {d['metadata']['name']}: consumerGroup {t['metadata'].get('consumerGroup')!r}, the group is {groups.get(component)!r}", file=sys.stderr); ok = False
            continue
        ref = (t.get("authenticationRef") or {}).get("name")
        if not tls["enabled"]:
            if ref:
                print(f"  {d['metadata']['name']}: authenticationRef without TLS", file=sys.stderr); ok = False
        elif ref not in auths or not need <= auths[ref]:
            print(f"  {d['metadata']['name']}: trigger auth {ref!r} lacks {sorted(need - auths.get(ref, set()))}", file=sys.stderr); ok = False
sys.exit(0 if ok else 1)
PY
  console_check "$name" "$work/$name.json" "$work/$name" || bad "$name: the console's Deployment or Service is not as expected"
  echo "chart: $name: helm lint --strict ok, helm template renders $(ls "$work/$name" | wc -l) files, schema ok, kubernetes-validate $KUBE_VERSION ok, console ok" >&2
done

# Without an embed API variant the console reads the embed workers; console.enabled=false renders
# no console at all (and no ServiceMonitor endpoint for it).
printf 'embed:\n  variants:\n    cpu:\n      enabled: false\n' >"$work/no-api.yaml"
merged_values "$work/no-api.yaml" >"$work/no-api.json" && render "$work/no-api" -f "$work/no-api.yaml" \
  && console_check no-embed-api "$work/no-api.json" "$work/no-api" || bad "no embed API variant: the console does not read the embed workers"
printf 'console:\n  enabled: false\nserviceMonitor:\n  enabled: true\n' >"$work/no-console.yaml"
merged_values "$work/no-console.yaml" >"$work/no-console.json" && render "$work/no-console" -f "$work/no-console.yaml" \
  && console_check no-console "$work/no-console.json" "$work/no-console" || bad "console.enabled=false: a console was rendered"

render "$work/k8s" || bad "defaults: helm template failed"
cp "$root/deploy/chart/k8s-README.md" "$work/k8s/README.md"
diff -r "$root/deploy/k8s" "$work/k8s" >&2 || bad "deploy/k8s differs from the chart's defaults: run bash deploy/chart/render.sh"

# Values that cannot work must be refused by helm template with the reason: the chart's `fail` and
# `required` come as "Error: execution error at (recalloc/templates/...): MESSAGE", the schema's
# as "Error: values don't meet the specifications of the schema(s) ...: - PATH: MESSAGE".
refuse() {  # description, expected message (exact text), values yaml
  printf '%s\n' "$3" >"$work/refuse.yaml"
  if helm template recalloc "$chart_dir" -f "$work/refuse.yaml" >/dev/null 2>"$work/refuse.err"; then
    bad "$1: rendered, should have been refused"
  elif ! grep -qF -- "$2" "$work/refuse.err"; then
    bad "$1: refused without saying '$2': $(cat "$work/refuse.err")"
  fi
}
refuse "two schedulers without election" \
  "scheduler.replicas > 1 needs scheduler.leaderElection: true (else every replica would scale)" \
  $'scheduler:\n  replicas: 2'
refuse "TLS without its Secret" "security.tls.secretName is required when security.tls.enabled" \
  $'security:\n  tls:\n    enabled: true'
refuse "an embed worker on an unknown variant" 'embed.worker.variant "tpu" is not one of embed.variants' \
  $'embed:\n  worker:\n    variant: tpu'
refuse "a consumer scaled by the scheduler and by KEDA's Kafka trigger" \
  "keda.kafka.enabled and scheduler.deployments both scale featurizer: remove it from scheduler.deployments or set keda.kafka.enabled=false" \
  $'keda:\n  kafka:\n    enabled: true\nscheduler:\n  deployments:\n    - {component: featurizer, query: up, capacityPerReplica: 1, minReplicas: 1, maxReplicas: 4}'
refuse "KEDA's Kafka trigger with minReplicas above maxReplicas" \
  "keda.kafka.minReplicas (5) exceeds keda.kafka.maxReplicas (4; 0 = kafka.partitions)" \
  $'keda:\n  kafka:\n    enabled: true\n    minReplicas: 5'
refuse "a negative replica count (the schema)" "- scheduler.replicas: Must be greater than or equal to 0" \
  $'scheduler:\n  replicas: -1'
refuse "a console reading the services too often (the schema)" \
  "- console.refreshMs: Must be greater than or equal to 100" \
  $'console:\n  refreshMs: 50'
refuse "an unknown ranking algorithm (the schema)" \
  '- rank.algorithm: rank.algorithm must be one of the following: "implicit_als", "explicit_mf", "hybrid"' \
  $'rank:\n  algorithm: svd'

[ $failed = 0 ] || exit 1
echo "chart checks passed" >&2
