#!/usr/bin/env bash
# Installs what the local cluster and the tests need when it is missing:
#   - redis-server and promtool (Debian packages redis-server, prometheus)
#   - libtorch (PyPI torch wheel, deploy/local/libtorch.sh) and the models all-MiniLM-L6-v2
#     (the default) and all-mpnet-base-v2 (deploy/local/model.sh)
#   - Apache Kafka (deploy/local/kafka.sh install: the jars from Maven Central, about 55 MB,
#     cached in ~/.cache/recalloc/kafka-<version>), with Java 17+ and Maven (Debian packages
#     openjdk-17-jre-headless, maven) when the machine has none
# Idempotent: a second run does nothing.
set -euo pipefail
source "$(dirname "$0")/env.sh"
# A fresh machine has no cache folder yet: everything below writes into it.
mkdir -p "$cache"

if ! command -v promtool >/dev/null; then
  say "installing promtool (apt prometheus; the tests lint every /metrics with it)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
fi
command -v promtool >/dev/null || die "promtool could not be installed"

if ! command -v redis-server >/dev/null; then
  say "installing redis-server (apt)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q redis-server >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q redis-server >/dev/null; }
  # The package starts a system service on 6379 on some machines; the scripts work with it or without it.
fi
command -v redis-server >/dev/null || die "redis-server could not be installed"

if { [ -z "${JAVA_HOME:-}" ] && ! command -v java >/dev/null; } || ! command -v mvn >/dev/null; then
  say "installing Java 17 and Maven (apt openjdk-17-jre-headless maven; Kafka runs on the JVM, Maven fetches it)"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get install -y -q --no-install-recommends openjdk-17-jre-headless maven >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q --no-install-recommends openjdk-17-jre-headless maven >/dev/null; }
fi
bash "$root/deploy/local/kafka.sh" install

bash "$root/deploy/local/libtorch.sh"
bash "$root/deploy/local/model.sh"
# The larger model, for its parity test (about 10 s and 419 MB of cache the first time).
bash "$root/deploy/local/model.sh" all-mpnet-base-v2
say "redis-server: $(command -v redis-server)"
say "kafka: $KAFKA_VERSION in $kafka_root"
