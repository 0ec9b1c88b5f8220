#!/usr/bin/env bash
# Ingest throughput: events acknowledged per second through gRPC → ingest → broker, against a
# plain librdkafka producer (Python confluent-kafka, acks=all, idempotent) sending the same
# number of messages of the same size straight to the same broker, measured in the same run.
# Appends the result to bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/local/env.sh
py=$(bash deploy/local/pyenv.sh)
bash deploy/local/up.sh >/dev/null
# The consumers would apply and embed the loaded records meanwhile and take CPU (and Redis) from
# the measurement, which the reference, writing a topic nobody reads, does not pay: both run
# with the consumers stopped.
bash deploy/local/down.sh embed featurizer
cli=$bin/recalloc
w=$(mktemp -d); trap 'rm -rf $w' EXIT
bash deploy/local/kafka.sh topics "$kafka_port" "$partitions" recalloc.bench.v1

# Ours: the bundled 100k ratings through the CLI (2,000 events per call, 4 calls in flight).
ours() { "$cli" load goodbooks data/goodbooks | sed -nE 's/.*\(([0-9]+) events\/s\).*/\1/p'; }

# The reference: the same records, protobuf-encoded as ingest encodes them, keyed by user.
cat >"$w/raw.py" <<'PY'
import csv, sys, time
from grpc_tools import protoc
brokers, w = sys.argv[1], sys.argv[2]
assert protoc.main(["protoc", "-Iproto", f"--python_out={w}", "proto/recalloc/v1/records.proto"]) == 0
sys.path.insert(0, w)
from recalloc.v1 import records_pb2 as pb
from confluent_kafka import Producer
now = int(time.time() * 1000)
# Ingest puts the trace context in each record's headers: so does the reference.
headers = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
msgs = []
for r in csv.DictReader(open("data/goodbooks/ratings.csv")):
    v = float(r["rating"])
    rec = pb.EventRecord(event_id=f"goodbooks:rating:{r['user_id']}:{r['book_id']}", user_id=r["user_id"], item_id=r["book_id"],
                         kind=pb.EVENT_KIND_RATING, raw_value=v, value=v, normalized_value=(v - 1) / 4, timestamp_ms=now,
                         timestamp_filled=True, ingested_at_ms=now)
    msgs.append((r["user_id"], rec.SerializeToString()))
p = Producer({"bootstrap.servers": brokers, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
acked = 0
def cb(err, _):
    global acked
    if err is None: acked += 1
t = time.time()
for k, v in msgs:
    while True:
        try:
            p.produce("recalloc.bench.v1", key=k, value=v, headers=headers, on_delivery=cb); break
        except BufferError:
            p.poll(0.05)
    p.poll(0)
p.flush(120)
dt = time.time() - t
print(f"{acked / dt:.0f} {len(msgs)} {sum(len(v) for _, v in msgs) / len(msgs):.0f}")
PY
# A broker just started is a cold JVM: one untimed pass of each first, then rounds of both,
# alternating, and the median of each.
rounds=${INGEST_BENCH_ROUNDS:-3}
ours >/dev/null; "$py" "$w/raw.py" "$kafka" "$w" >/dev/null
o=(); r=()
for _ in $(seq "$rounds"); do
  o+=("$(ours)")
  read -r raw n size < <("$py" "$w/raw.py" "$kafka" "$w")
  r+=("$raw")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ours=$(median "${o[@]}"); raw=$(median "${r[@]}")
echo "rounds: ours ${o[*]} events/s; raw ${r[*]} msgs/s" >&2
ratio=$(python3 -c "print(f'{$ours / $raw:.2f}')")
line="| $(date -u +%Y-%m-%d) | $(nproc) cores | $n events, ${size} B each | $ours | $raw | $ratio |"
echo "ingest: ours $ours events/s, raw librdkafka $raw msgs/s, ratio $ratio (goal >= 0.8)"
python3 bench/results.py bench/results.md "## Ingest: acknowledged events per second" \
  "gRPC client (\`recalloc load goodbooks\`, 2,000 events per call, 4 in flight) → ingest → Kafka, against Python \`confluent-kafka\` (librdkafka, acks=all, idempotent) producing the same records straight to the broker, both with a \`traceparent\` header; after one untimed pass of each, the median of 3 alternating rounds. Goal: ratio ≥ 0.8 (rows before 2026-12-03: against tansu 0.6, goal 0.5)." \
  "| date | machine | messages | ours (events/s) | raw producer (msgs/s) | ratio |" "|---|---|---|---|---|---|" "$line"
