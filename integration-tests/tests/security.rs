//! The bearer token: with `security.token` set, ingest writes and Train are refused
//! UNAUTHENTICATED without it or with a wrong one (and change nothing), reads stay open, and
//! the CLI carries the configured token.

use recalloc_integration_tests::Cluster;
use recalloc_proto::v1::{
    Event, EventKind, GetStatsRequest, RecommendRequest, RecordEventsRequest, TrainRequest,
};
use tonic::Request;

const TOKEN: &str = "s3cret-token";

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn events() -> RecordEventsRequest {
    RecordEventsRequest {
        events: (0..20)
            .map(|i| Event {
                event_id: format!("s-{i}"),
                user_id: format!("u{}", i % 4),
                item_id: format!("i{}", i % 5),
                kind: EventKind::Purchase as i32,
                ..Default::default()
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_and_training_need_the_token_and_reads_do_not() {
    let mut c = Cluster::infra().unwrap();
    c.extra_env
        .push(("RECALLOC_SECURITY_TOKEN".into(), TOKEN.into()));
    c.start_ingest().unwrap();
    c.start_featurizer().unwrap();
    c.start_rank().unwrap();
    let mut ingest = c.grpc().await.unwrap();

    let refused = ingest.record_events(events()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("Bearer"), "{refused:?}");
    let wrong = ingest
        .record_events(with_token(events(), "guess"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated, "{wrong:?}");
    // Reads need no token, and the refused writes changed nothing.
    let stats = ingest
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.events, 0);
    let ok = ingest
        .record_events(with_token(events(), TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.accepted, 20);

    let mut rank = c.rank_client().await.unwrap();
    let refused = rank.train(TrainRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut con = c.redis_con().await.unwrap();
    recalloc_integration_tests::wait_events(&mut con, 20, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    // The CLI sends the configured token; without one it is refused with a clear message.
    let out = c.cli(&["train", "--factors", "4"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c
        .cli_command(&["train", "--factors", "4"])
        .env("RECALLOC_SECURITY_TOKEN", "")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Unauthenticated"), "{err}");
    // Recommendations are reads.
    let r = rank
        .recommend(RecommendRequest {
            user_id: "u1".into(),
            k: 2,
            exclude_seen: false,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.items.is_empty());
}
