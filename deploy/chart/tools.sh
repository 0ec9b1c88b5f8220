# The chart tools, cached outside the clone and keyed by version. Sourced, not run: puts the real
# helm (v3.17.2, deploy/local/helm.sh) first on PATH with its cache, config and data folders next
# to it, sets $chart_py (a Python with kubernetes-validate and jsonschema) and defines render.
source "$(dirname "${BASH_SOURCE[0]}")/../local/env.sh"
KV_PINS="kubernetes-validate==1.37.0 jsonschema==4.26.0"
# The Kubernetes version the chart is rendered for (Capabilities.KubeVersion) and validated against.
KUBE_VERSION=${KUBE_VERSION:-1.34.0}
chart_dir=$root/charts/recalloc

helm_bin=$(bash "$root/deploy/local/helm.sh") || die "deploy/local/helm.sh failed"
helm_home=$(dirname "$helm_bin")
export PATH=$helm_home:$PATH
export HELM_CACHE_HOME=$helm_home/cache HELM_CONFIG_HOME=$helm_home/config HELM_DATA_HOME=$helm_home/data
[ "$(command -v helm)" = "$helm_bin" ] || die "helm on PATH is $(command -v helm), not $helm_bin"

# render OUT_DIR [helm template options...]: `helm template` of the chart as release recalloc in
# namespace recalloc, one file per template, flat in OUT_DIR (helm writes OUT_DIR/recalloc/templates/).
render() {
  local out=$1; shift
  rm -rf "$out.helm"
  helm template recalloc "$chart_dir" --namespace recalloc --kube-version "$KUBE_VERSION" \
    "$@" --output-dir "$out.helm" >/dev/null || return 1
  mkdir -p "$out" && mv "$out.helm/recalloc/templates/"* "$out/" && rm -rf "$out.helm"
}

kv_venv=$cache/py-chart-$(echo "$KV_PINS" | sha256sum | cut -c1-12)
if [ ! -x "$kv_venv/bin/kubernetes-validate" ] || ! "$kv_venv/bin/python" -c "import jsonschema" 2>/dev/null; then
  say "making the chart checkers' Python venv in $kv_venv"
  rm -rf "$kv_venv"; python3 -m venv "$kv_venv"
  "$kv_venv/bin/pip" install -q $KV_PINS >&2 || die "pip install $KV_PINS failed"
fi
chart_py=$kv_venv/bin/python
