#!/usr/bin/env bash
# Runs the integration suite N times in a row (default 10) against the binaries of one build,
# and reports every test that failed at least once, with the run it failed in. A flaky test
# blocks every landing at random: this is how to find one before CI does.
#   make test-repeat N=10        (logs in .local/test-repeat/)
set -uo pipefail
source "$(dirname "$0")/env.sh"
n=${1:-10}
bash "$root/deploy/local/install.sh" >/dev/null
export RECALLOC_TEST_PYTHON=$(bash "$root/deploy/local/pyenv.sh")
export RECALLOC_TEST_PLAYWRIGHT=$(bash "$root/deploy/local/browser.sh")
cd "$root"
cargo build --release --bins >/dev/null 2>&1 || die "cargo build --release --bins failed"
mapfile -t exes < <(cargo test --release -p recalloc-integration-tests --no-run 2>&1 \
  | sed -n 's/.*Executable .*(\(.*\))$/\1/p')
[ ${#exes[@]} -gt 0 ] || die "no integration test executables were built"
out=$state/test-repeat; rm -rf "$out"; mkdir -p "$out/release/deps"
# A snapshot of this build (the harness finds the binaries beside the test executable), so a
# rebuild while the runs go on changes nothing under them.
cp "$bin"/recalloc "$bin"/recalloc-* "$out/release/" 2>/dev/null
rm -f "$out"/release/*.d
for i in "${!exes[@]}"; do cp "${exes[$i]}" "$out/release/deps/"; exes[$i]=$out/release/deps/$(basename "${exes[$i]}"); done
failed_runs=0
for run in $(seq "$n"); do
  start=$(date +%s); failures=0
  for exe in "${exes[@]}"; do
    name=$(basename "$exe" | sed 's/-[0-9a-f]*$//')
    log=$out/run$run-$name.log
    if ! "$exe" --test-threads=1 >"$log" 2>&1; then
      failures=$((failures + 1))
      grep -E '^test .* FAILED$' "$log" | sed "s/^/run $run: /" >>"$out/failures.txt"
      grep -qE '^test .* FAILED$' "$log" || echo "run $run: $name failed without a test result (see $log)" >>"$out/failures.txt"
    fi
  done
  [ $failures = 0 ] || failed_runs=$((failed_runs + 1))
  say "run $run of $n: $([ $failures = 0 ] && echo green || echo "$failures suite(s) failed") in $(( $(date +%s) - start )) s"
done
if [ -s "$out/failures.txt" ]; then
  say "$failed_runs of $n runs had failures:"; cat "$out/failures.txt" >&2; exit 1
fi
say "all $n runs green (logs in $out)"
