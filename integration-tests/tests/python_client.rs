//! A client that is not ours: Python `grpcio` stubs generated from `proto/` by `grpc_tools`
//! record events through Ingest, train through the Ranker and ask for recommendations, and
//! get INVALID_ARGUMENT naming the field for a bad event.

use recalloc_integration_tests::{Cluster, repo_root, wait_events};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_python_grpcio_client_records_events_and_gets_recommendations() {
    let mut c = Cluster::start().unwrap();
    c.start_rank().unwrap();
    let python = std::env::var("RECALLOC_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out_dir = c.dir.path().join("py");
    std::fs::create_dir_all(&out_dir).unwrap();
    let script = format!(
        r#"
import json, sys, time
from grpc_tools import protoc
for p in ["records", "ingest", "rank"]:
    rc = protoc.main(["protoc", "-I{proto}", "--python_out={out}", "--grpc_python_out={out}",
                      "{proto}/recalloc/v1/%s.proto" % p])
    assert rc == 0, (p, rc)
sys.path.insert(0, "{out}")
import grpc
from recalloc.v1 import records_pb2, ingest_pb2, ingest_pb2_grpc, rank_pb2, rank_pb2_grpc

ingest = ingest_pb2_grpc.IngestStub(grpc.insecure_channel("{ingest}"))
ranker = rank_pb2_grpc.RankerStub(grpc.insecure_channel("{rank}"))
# 12 users; users 0-5 like items a0-a9, users 6-11 like b0-b9; user 0 has not seen a9.
events = []
for u in range(12):
    group = "a" if u < 6 else "b"
    for i in range(10):
        if u == 0 and i == 9:
            continue
        events.append(records_pb2.Event(event_id="py-%d-%d" % (u, i), user_id="pyu%d" % u,
                                        item_id="%s%d" % (group, i), kind=records_pb2.EVENT_KIND_PURCHASE))
r = ingest.RecordEvents(ingest_pb2.RecordEventsRequest(events=events), timeout=30)
try:
    ingest.RecordEvents(ingest_pb2.RecordEventsRequest(events=[records_pb2.Event(user_id="x", kind=records_pb2.EVENT_KIND_CLICK)]), timeout=30)
    bad = "accepted"
except grpc.RpcError as e:
    bad = [e.code().name, e.details()]
print(json.dumps({{"accepted": len(events), "bad": bad}}))
sys.stdout.flush()
# Wait until the featurizer applied them (the Rust side checks Redis too), then train.
for _ in range(600):
    if ingest.GetStats(ingest_pb2.GetStatsRequest(), timeout=10).events >= len(events):
        break
    time.sleep(0.1)
ranker.Train(rank_pb2.TrainRequest(algorithm=rank_pb2.ALGORITHM_IMPLICIT_ALS, factors=8), timeout=120)
for _ in range(100):
    rec = ranker.Recommend(rank_pb2.RecommendRequest(user_id="pyu0", k=3, exclude_seen=True), timeout=10)
    if rec.items:
        break
    time.sleep(0.1)
print(json.dumps({{"items": [i.item_id for i in rec.items], "source": rank_pb2.RecommendationSource.Name(rec.source)}}))
"#,
        proto = repo_root().join("proto").display(),
        out = out_dir.display(),
        ingest = c.ingest_grpc,
        rank = c.rank_grpc,
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed (run the tests through `make test`, which sets RECALLOC_TEST_PYTHON): {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["accepted"], 119);
    assert_eq!(lines[0]["bad"][0], "INVALID_ARGUMENT", "{}", lines[0]);
    assert!(
        lines[0]["bad"][1].as_str().unwrap().contains("item_id"),
        "{}",
        lines[0]
    );
    let mut con = c.redis_con().await.unwrap();
    wait_events(&mut con, 119, Duration::from_secs(10))
        .await
        .unwrap();
    // The model learned the two groups: user 0's top pick is the a-item it has not seen.
    let items: Vec<&str> = lines[1]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        lines[1]["source"], "RECOMMENDATION_SOURCE_MODEL",
        "{}",
        lines[1]
    );
    assert_eq!(items.first(), Some(&"a9"), "{items:?}");
}
