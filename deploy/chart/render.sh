#!/usr/bin/env bash
# Renders charts/recalloc with its default values into deploy/k8s/ (one file per template) with
# the real helm (`helm template`, v3.17.2 from deploy/local/helm.sh): the plain manifests for
# clusters without Helm. Run it (`make manifests`) after changing the chart; CI
# (deploy/chart/check.sh) fails when deploy/k8s differs from this output.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
out=${1:-$root/deploy/k8s}
rm -rf "$out.tmp"
render "$out.tmp" || die "helm template $chart_dir failed"
cp "$root/deploy/chart/k8s-README.md" "$out.tmp/README.md"
rm -rf "$out" && mv "$out.tmp" "$out"
say "rendered $chart_dir into $out with $(helm version --short)"
