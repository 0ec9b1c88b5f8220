#!/usr/bin/env bash
# Installs libtorch for the embed service (tch 0.26 wants PyTorch 2.13.0) and links it where the
# build finds it: `.deps/torch` in the clone, named by LIBTORCH in .cargo/config.toml.
#
# The smallest set that works on CPU (about 1.2 GB instead of 5 GB): PyPI's torch wheel without
# its dependencies, plus the CUDA runtime and CUPTI that libtorch_cpu.so loads even on CPU. A GPU
# node additionally needs the CUDA libraries libtorch_cuda.so loads (cuBLAS, cuDNN, ...): set
# RECALLOC_TORCH_CUDA=1 to install torch with all its dependencies instead.
# Cached outside the clone, keyed by version; idempotent.
set -euo pipefail
source "$(dirname "$0")/env.sh"
venv=$torch_root
if [ "${RECALLOC_TORCH_CUDA:-0}" = 1 ]; then venv=$torch_root-cuda; fi
site=$venv/lib/python3.*/site-packages
if ! ls $site/torch/lib/libtorch_cpu.so >/dev/null 2>&1; then
  say "installing libtorch $TORCH_VERSION into $venv (once, about 1.2 GB)"
  rm -rf "$venv"; python3 -m venv "$venv"
  if [ "${RECALLOC_TORCH_CUDA:-0}" = 1 ]; then
    "$venv/bin/pip" install -q "torch==$TORCH_VERSION" >&2 || die "pip install torch==$TORCH_VERSION failed"
  else
    "$venv/bin/pip" install -q --no-deps "torch==$TORCH_VERSION" \
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 >&2 \
      || die "pip install torch==$TORCH_VERSION failed"
  fi
fi
torch_dir=$(cd $site/torch && pwd)
mkdir -p "$root/.deps"
ln -sfn "$torch_dir" "$root/.deps/torch"
say "libtorch: $torch_dir"
