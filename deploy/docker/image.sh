#!/usr/bin/env bash
# `make image`: builds the container image recalloc:<workspace version> from deploy/docker/Dockerfile
# with podman (as root), then proves it inside the image: every binary's --help, the libraries
# each binary loads, and the embed service loading all-MiniLM-L6-v2 through libtorch; prints the
# image's size. The binaries come from `cargo build --release --bins` on this (Debian bookworm)
# host — the Makefile builds them first — so the image is Debian bookworm too.
#
# Everything it needs is installed or made here, once, and reused:
#   - podman, buildah, runc, debootstrap (apt) when missing;
#   - /etc/containers/containers.conf: runtime = "runc" and default_ulimits within this machine's
#     hard limits, each added only when the file does not set it already;
#   - the base image: no registry is reachable, so Debian bookworm (minbase, with ca-certificates
#     and libgomp1) comes from debootstrap and the apt mirror, cached as a tarball in
#     ${RECALLOC_CACHE:-~/.cache/recalloc}/image-base/ and imported as localhost/recalloc-base:bookworm;
#   - the build context .local/image/context: bin/ (every target/release/recalloc* executable,
#     debug info stripped unless RECALLOC_IMAGE_STRIP=0), lib/ (the libtorch libraries the
#     binaries load, found with ldd), models/all-MiniLM-L6-v2 (deploy/local/model.sh). Files are
#     hard links where possible, so unchanged inputs hit podman's layer cache.
# Settings: RECALLOC_IMAGE (default recalloc:<version>), RECALLOC_IMAGE_MIRROR (default: this
# machine's Debian apt mirror), RECALLOC_IMAGE_STRIP.
set -euo pipefail
source "$(dirname "$0")/../local/env.sh"

SUITE=bookworm
VARIANT=minbase
BASE_PACKAGES=ca-certificates,libgomp1
BASE_IMAGE=localhost/recalloc-base:$SUITE
version=$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
[ -n "$version" ] || die "no version in [workspace.package] of $root/Cargo.toml"
image=${RECALLOC_IMAGE:-recalloc:$version}
context=$state/image/context
sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
if [ -n "$sudo" ] && ! command -v sudo >/dev/null; then
  die "building the image needs root (podman runs rootful here, debootstrap needs root) and there is no sudo"
fi

t_start=$(date +%s.%N)
t_phase=$t_start
phase() { t_phase=$(date +%s.%N); say "== $*"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }'; }
done_phase() { say "   done in $(elapsed "$t_phase")${1:+ ($1)}"; }

# ---------------------------------------------------------------------------------------------
phase "tools: podman, buildah, runc, debootstrap"
missing=()
for tool in podman:podman buildah:buildah runc:runc debootstrap:debootstrap; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
command -v strip >/dev/null || missing+=(binutils)
command -v wget >/dev/null || missing+=(wget)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (apt)"
  apt_install() { $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null; }
  apt_install "${missing[@]}" 2>/dev/null || { $sudo apt-get update -q >/dev/null && apt_install "${missing[@]}"; } \
    || die "apt-get install ${missing[*]} failed"
fi
for tool in podman buildah runc debootstrap strip; do
  command -v "$tool" >/dev/null || die "$tool is still missing after apt-get install"
done
done_phase "$(podman --version), $(buildah --version | cut -d' ' -f1-3), runc $(runc --version | sed -n 's/^runc version //p')"

# ---------------------------------------------------------------------------------------------
phase "containers.conf: runtime and ulimits"
conf=/etc/containers/containers.conf
# Containers may not raise limits above this machine's hard limits (podman's defaults do, and
# runc then fails to start anything); 4096 is plenty for the checks and within them here.
hard_nofile=$(ulimit -Hn); hard_nproc=$(ulimit -Hu)
lim() { if [ "$1" = unlimited ] || [ "$1" -gt 4096 ]; then echo 4096; else echo "$1"; fi; }
ulimits="[\"nofile=$(lim "$hard_nofile"):$(lim "$hard_nofile")\", \"nproc=$(lim "$hard_nproc"):$(lim "$hard_nproc")\"]"
# Adds `key = value` to [table] of $conf unless the key is set (uncommented) anywhere in it.
conf_set() {
  local table=$1 key=$2 value=$3
  if [ -f "$conf" ] && grep -qE "^[[:space:]]*$key[[:space:]]*=" "$conf"; then
    say "   $conf already sets $key: kept ($(grep -E "^[[:space:]]*$key[[:space:]]*=" "$conf" | head -1 | tr -s ' '))"
    return
  fi
  $sudo mkdir -p "$(dirname "$conf")"
  [ -f "$conf" ] || echo "# Written by recalloc's deploy/docker/image.sh; edit freely." | $sudo tee "$conf" >/dev/null
  if grep -qE "^[[:space:]]*\[$table\][[:space:]]*(#.*)?$" "$conf"; then
    # Right after the table's header line (awk: values with quotes and brackets pass untouched).
    [ -f "$conf.recalloc-backup" ] || $sudo cp -p "$conf" "$conf.recalloc-backup"
    local edited; edited=$(awk -v t="$table" -v line="$key = $value" '
      { print }
      !done && $0 ~ "^[[:space:]]*\\[" t "\\][[:space:]]*(#.*)?$" { print line; done = 1 }
    ' "$conf")
    echo "$edited" | $sudo tee "$conf" >/dev/null
  else
    printf '\n[%s]\n%s = %s\n' "$table" "$key" "$value" | $sudo tee -a "$conf" >/dev/null
  fi
  say "   $conf: [$table] $key = $value"
}
conf_set engine runtime '"runc"'
conf_set containers default_ulimits "$ulimits"
runtime=$($sudo podman info --format '{{.Host.OCIRuntime.Name}}' 2>/dev/null) \
  || die "podman info fails with $conf: $($sudo podman info 2>&1 | tail -3)"
done_phase "runtime $runtime, storage $($sudo podman info --format '{{.Store.GraphDriverName}}')"

# ---------------------------------------------------------------------------------------------
phase "base image $BASE_IMAGE (debootstrap $SUITE $VARIANT + $BASE_PACKAGES)"
# This machine's Debian mirror (the first non-security one apt uses), unless RECALLOC_IMAGE_MIRROR.
mirror=${RECALLOC_IMAGE_MIRROR:-$(grep -hsE '^[[:space:]]*(URIs:|deb[[:space:]])' /etc/apt/sources.list \
  /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
  | grep -oE 'https?://[^[:space:]]+/debian/?([[:space:]]|$)' | awk 'NR == 1 { print $1 }' || true)}
mirror=${mirror:-http://deb.debian.org/debian}
# The tarball's name says what is in it: a change of suite, variant or packages makes a new one.
recipe="$SUITE $VARIANT $BASE_PACKAGES"
key=$SUITE-$VARIANT-$(echo "$recipe" | sha256sum | cut -c1-10)
base_dir=$cache/image-base
base_tar=$base_dir/$key.tar
if [ ! -s "$base_tar" ]; then
  say "   debootstrap --variant=$VARIANT --include=$BASE_PACKAGES $SUITE from $mirror (once; cached as $base_tar)"
  mkdir -p "$base_dir"
  rootfs=$(mktemp -d "$base_dir/.rootfs.XXXXXX")
  trap '$sudo rm -rf "$rootfs" "$base_tar.partial"' EXIT
  $sudo debootstrap --variant="$VARIANT" --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$mirror" \
    > "$base_dir/debootstrap.log" 2>&1 \
    || die "debootstrap $SUITE from $mirror failed (RECALLOC_IMAGE_MIRROR sets the mirror): $(tail -5 "$base_dir/debootstrap.log")"
  # What an image does not need: downloaded packages, apt lists, manuals (copyright files stay).
  $sudo rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/man "$rootfs"/usr/share/info "$rootfs"/var/log/* "$rootfs"/debootstrap
  $sudo find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
  $sudo tar --numeric-owner --xattrs -C "$rootfs" -cf "$base_tar.partial" .
  $sudo mv "$base_tar.partial" "$base_tar"
  $sudo rm -rf "$rootfs"; trap - EXIT
fi
if [ "$($sudo podman image inspect --format '{{index .Labels "io.recalloc.base"}}' "$BASE_IMAGE" 2>/dev/null)" != "$key" ]; then
  say "   podman import $base_tar"
  $sudo podman import --change "LABEL io.recalloc.base=$key" --change 'CMD ["/bin/bash"]' \
    "$base_tar" "$BASE_IMAGE" > "$base_dir/import.log" 2>&1 \
    || die "podman import $base_tar failed: $(tail -3 "$base_dir/import.log")"
fi
done_phase "$(du -h "$base_tar" | cut -f1) tarball, $key"

# ---------------------------------------------------------------------------------------------
phase "build context $context"
[ -f "$bin/recalloc-embed" ] || die "no release binaries in $bin: run 'make image' (it builds them) or 'cargo build --release --bins'"
# Hard link when on the same file system (an unchanged input stays the same file), else copy.
place() { ln -f "$1" "$2" 2>/dev/null || cp -f "$1" "$2"; }
mkdir -p "$context/bin" "$context/lib" "$context/models"
# bin/: every recalloc executable, a new recalloc-* binary included without changes here.
bins=()
for f in "$bin"/recalloc*; do
  [ -f "$f" ] && [ -x "$f" ] || continue
  bins+=("$f")
done
for staged in "$context"/bin/*; do  # binaries that no longer exist leave the image
  [ -e "$staged" ] || continue
  [ -x "$bin/$(basename "$staged")" ] || rm -f "$staged"
done
stripped=0
for f in "${bins[@]}"; do
  dst=$context/bin/$(basename "$f")
  if [ "${RECALLOC_IMAGE_STRIP:-1}" = 1 ]; then
    # Debug info out (symbol names stay for backtraces); redone only when the binary changed.
    if [ ! -f "$dst" ] || [ "$f" -nt "$dst" ] || [ "$dst" -nt "$f" ]; then
      strip --strip-debug -o "$dst.tmp" "$f" && touch -r "$f" "$dst.tmp" && mv -f "$dst.tmp" "$dst"
      stripped=$((stripped + 1))
    fi
  else
    place "$f" "$dst"
  fi
done
# lib/: what the binaries load from libtorch's install (libtorch_cpu, libc10, libgomp, the CUDA
# runtime and CUPTI), by ldd; the system's own libraries are in the base image.
ld_path=$root/.deps/torch/lib
[ -d "$ld_path" ] || die "no libtorch at $ld_path: run deploy/local/libtorch.sh (make deps)"
system_lib='^(/usr)?/lib(64|32|x32)?/'
libs=$(LD_LIBRARY_PATH=$ld_path ldd "${bins[@]}" 2>&1 | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u)
missing_libs=$(LD_LIBRARY_PATH=$ld_path ldd "${bins[@]}" 2>&1 | awk '/not found/ { print $1 }' | sort -u | tr '\n' ' ')
[ -z "$missing_libs" ] || die "the binaries need libraries this machine does not have: $missing_libs"
# A torch install with its CUDA libraries (RECALLOC_TORCH_CUDA=1 make install) gives a GPU image:
# libtorch_cuda.so, which the embed service dlopens for embed.device = cuda, and what it loads.
cuda=cpu-only
if [ -f "$ld_path/libtorch_cuda.so" ] && ! LD_LIBRARY_PATH=$ld_path ldd "$ld_path/libtorch_cuda.so" | grep -q 'not found'; then
  libs=$( { echo "$libs"; echo "libtorch_cuda.so $ld_path/libtorch_cuda.so"
    LD_LIBRARY_PATH=$ld_path ldd "$ld_path/libtorch_cuda.so" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }'; } | sort -u)
  cuda="with CUDA (libtorch_cuda.so)"
fi
rm -f "$context"/lib/*
while read -r name path; do
  [ -n "$name" ] || continue
  echo "$path" | grep -qE "$system_lib" && continue
  place "$(readlink -f "$path")" "$context/lib/$name"
done <<< "$libs"
[ -f "$context/lib/libtorch_cpu.so" ] || die "ldd found no libtorch_cpu.so for the binaries in $bin (LIBTORCH at $ld_path)"
# models/: the weights, fetched and checked by model.sh.
bash "$root/deploy/local/model.sh"
model=$root/models/all-MiniLM-L6-v2
rm -rf "$context/models/all-MiniLM-L6-v2"; mkdir -p "$context/models/all-MiniLM-L6-v2"
(cd "$model" && find . -type d -exec mkdir -p "$context/models/all-MiniLM-L6-v2/{}" \;)
(cd "$model" && find . -type f -print0) | while IFS= read -r -d '' f; do
  place "$model/$f" "$context/models/all-MiniLM-L6-v2/$f"
done
done_phase "${#bins[@]} binaries ($stripped stripped now) $(du -sh "$context/bin" | cut -f1), $(ls "$context/lib" | wc -l) libraries $(du -shL "$context/lib" | cut -f1) $cuda, model $(du -sh "$context/models" | cut -f1)"

# ---------------------------------------------------------------------------------------------
phase "podman build -t $image"
if ! $sudo podman build --pull=never --network=none --layers \
  --build-arg BASE="$BASE_IMAGE" --build-arg VERSION="$version" \
  -f "$root/deploy/docker/Dockerfile" -t "$image" "$context" 2>&1 | sed 's/^/   /'; then
  die "podman build failed (above)"
fi
# Earlier builds of this image that the new tag replaced (only ours: by the image's title label).
$sudo podman image prune -f --filter label=org.opencontainers.image.title=recalloc >/dev/null 2>&1 || true
done_phase

# ---------------------------------------------------------------------------------------------
# As the Helm chart runs it: user 10001, read-only root file system, no capabilities, no network.
run_in_image() {
  $sudo timeout 300 podman run --rm --network=none --read-only --cap-drop=ALL \
    --security-opt=no-new-privileges "$image" bash -c "$1"
}
phase "in the image: every binary's --help and its libraries"
if ! run_in_image '
set -u; fail=0
echo "user $(id -u), PATH=$PATH, LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
for b in /opt/recalloc/bin/*; do
  name=$(basename "$b")
  if ! command -v "$name" >/dev/null; then echo "FAIL $name: not on PATH"; fail=1; continue; fi
  nf=$(ldd "$b" | grep "not found" | tr -s " \t" " ")
  if [ -n "$nf" ]; then echo "FAIL $name: missing libraries:$nf"; fail=1; continue; fi
  if out=$("$name" --help 2>&1); then
    echo "ok   $name --help: $(echo "$out" | head -1 | cut -c1-110)"
  else
    echo "FAIL $name --help (exit $?): $(echo "$out" | tail -3)"; fail=1
  fi
done
exit $fail' 2>&1 | sed 's/^/   /'; then
  die "a binary does not run in $image (above)"
fi
done_phase

phase "in the image: recalloc-embed loads the model through libtorch"
# The service loads and warms up the model (one encode) before it connects to Redis; with no
# network it then waits for Redis forever, so the check stops it once it logged "model loaded".
if ! run_in_image '
recalloc-embed > /tmp/embed.log 2>&1 & pid=$!
for i in $(seq 1 240); do
  grep -q "model loaded" /tmp/embed.log && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.5
done
kill $pid 2>/dev/null; wait $pid 2>/dev/null
grep -v -i "redis\|kafka\|broker\|rdkafka" /tmp/embed.log | head -20
grep -q "model loaded" /tmp/embed.log || { echo "no \"model loaded\" in the log:"; tail -20 /tmp/embed.log; exit 1; }' 2>&1 \
  | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^/   /'; then
  die "recalloc-embed did not load the model in $image (log above)"
fi
done_phase

# ---------------------------------------------------------------------------------------------
size=$($sudo podman image inspect --format '{{.Size}}' "$image")
say "== image $image: $size bytes ($(numfmt --to=iec-i --suffix=B "$size")), id $($sudo podman image inspect --format '{{.Id}}' "$image" | cut -c1-12)"
$sudo podman history --format '{{.Size}}\t{{.CreatedBy}}' "$image" | grep -v '^0 B' | cut -c1-120 | sed 's/^/   /' || true
say "== make image: $(elapsed "$t_start") in all"
