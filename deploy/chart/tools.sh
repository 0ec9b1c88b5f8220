# The chart tools, cached outside the clone and keyed by version. Sourced, not run: sets
# $helm_template (our `helm template` stand-in, or a real `helm` when HELM=helm) and $chart_py
# (a Python with kubernetes-validate and jsonschema).
source "$(dirname "${BASH_SOURCE[0]}")/../local/env.sh"
KV_PINS="kubernetes-validate==1.37.0 jsonschema==4.26.0"
chart_dir=$root/charts/recalloc

# Go and sprig from Debian: no helm binary is packaged, and CI reaches only the package registries.
if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/github.com/Masterminds/sprig ] \
  || [ ! -d /usr/share/gocode/src/sigs.k8s.io/yaml ]; then
  say "installing Go, sprig and sigs.k8s.io/yaml (apt) for the chart renderer"
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  pkgs="golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev"
  $sudo apt-get install -y -q --no-install-recommends $pkgs >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends $pkgs >/dev/null; } \
    || die "apt-get install $pkgs failed"
fi
src=$root/deploy/chart/helm-template/main.go
helm_template=$cache/helm-template-$(sha256sum "$src" | cut -c1-12)
if [ ! -x "$helm_template" ]; then
  say "building the chart renderer ($helm_template)"
  (cd "$root/deploy/chart/helm-template" && GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= \
    go build -o "$helm_template" .) || die "building deploy/chart/helm-template failed"
fi

kv_venv=$cache/py-chart-$(echo "$KV_PINS" | sha256sum | cut -c1-12)
if [ ! -x "$kv_venv/bin/kubernetes-validate" ] || ! "$kv_venv/bin/python" -c "import jsonschema" 2>/dev/null; then
  say "making the chart checkers' Python venv in $kv_venv"
  rm -rf "$kv_venv"; python3 -m venv "$kv_venv"
  "$kv_venv/bin/pip" install -q $KV_PINS >&2 || die "pip install $KV_PINS failed"
fi
chart_py=$kv_venv/bin/python
