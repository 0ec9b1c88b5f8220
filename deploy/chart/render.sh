#!/usr/bin/env bash
# Renders charts/recalloc with its default values into deploy/k8s/ (one file per template), the
# plain manifests for clusters without Helm. Run it after changing the chart; CI
# (deploy/chart/check.sh) fails when deploy/k8s differs from this output.
set -euo pipefail
source "$(dirname "$0")/tools.sh"
out=${1:-$root/deploy/k8s}
rm -rf "$out.tmp" && "$helm_template" --name recalloc --namespace recalloc --output-dir "$out.tmp" "$chart_dir"
cp "$root/deploy/chart/k8s-README.md" "$out.tmp/README.md"
rm -rf "$out" && mv "$out.tmp" "$out"
say "rendered $chart_dir into $out"
