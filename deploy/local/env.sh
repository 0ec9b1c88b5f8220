# Shared settings of the local scripts. Sourced, not run.
# Everything installed lives outside the clone (keyed by version) so CI and later runs reuse it;
# state and logs of the local cluster live in the git-ignored .local/ folder of the clone.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cache=${RECALLOC_CACHE:-$HOME/.cache/recalloc}
# A fresh machine has no cache folder: every script that sources this file may write into it.
mkdir -p "$cache"
# Apache Kafka (KRaft), fetched from Maven Central by deploy/local/kafka.sh.
KAFKA_VERSION=4.4.0
KAFKA_LOG4J_VERSION=2.25.5
KAFKA_SLF4J_VERSION=2.0.17
KAFKA_MVN_DEP_PLUGIN=3.8.1
kafka_root=$cache/kafka-$KAFKA_VERSION
TORCH_VERSION=2.13.0
torch_root=$cache/libtorch-$TORCH_VERSION
target=${CARGO_TARGET_DIR:-$root/target}
bin=$target/release
state=$root/.local
logs=$state/logs
run=$state/run
kafka=${RECALLOC_KAFKA_BROKERS:-127.0.0.1:9092}
kafka_port=${kafka%%,*}; kafka_port=${kafka_port##*:}
kafka_controller_port=${RECALLOC_KAFKA_CONTROLLER_PORT:-$((kafka_port + 1))}
redis_url=${RECALLOC_REDIS_URL:-redis://127.0.0.1:6379}
redis_port=$(echo "$redis_url" | sed -E 's#.*:([0-9]+)(/.*)?$#\1#')
partitions=${RECALLOC_KAFKA_PARTITIONS:-4}
# The web console (recalloc-console); the checks read it at RECALLOC_CONSOLE_URL.
console_addr=${RECALLOC_CONSOLE_HTTP_ADDR:-127.0.0.1:9106}
topics=(recalloc.events.v1 recalloc.items.v1 recalloc.users.v1)
say() { echo "[recalloc] $*" >&2; }
die() { echo "[recalloc] error: $*" >&2; exit 1; }
