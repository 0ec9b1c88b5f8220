#!/usr/bin/env bash
# Makes (once) the Python environment of the independent clients the tests use — librdkafka via
# confluent-kafka, grpcio and protobuf — and prints its python. Cached outside the clone, keyed by
# the pinned versions.
set -euo pipefail
source "$(dirname "$0")/env.sh"
pins="confluent-kafka==2.12.1 grpcio==1.76.0 grpcio-tools==1.76.0"
key=$(echo "$pins" | sha256sum | cut -c1-12)
venv=$cache/py-tests-$key
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import confluent_kafka, grpc, grpc_tools" 2>/dev/null; then
  say "making the test clients' Python venv in $venv"
  rm -rf "$venv"; python3 -m venv "$venv"
  "$venv/bin/pip" install -q $pins >&2 || die "pip install $pins failed"
fi
echo "$venv/bin/python"
