//! The web console (`recalloc-console`) against the real cluster, in a real browser: headless
//! Chromium driven by `integration-tests/browser/console.mjs` (playwright-core, installed by
//! `deploy/local/browser.sh`; `make test` sets `RECALLOC_TEST_PLAYWRIGHT`). What the page shows
//! is compared with the services' own gRPC answers and with `recalloc recommend`. And without a
//! browser: the API refuses calls without the token while the page shell stays public, and bad
//! input is answered with the field at fault.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use recalloc_integration_tests::{
    Cluster, Proc, bin, bin_dir, free_port, repo_root, wait_events, wait_quiet, wait_ready,
};
use recalloc_proto::v1::ingest_client::IngestClient;
use recalloc_proto::v1::scheduler_client::SchedulerClient;
use recalloc_proto::v1::{
    GetModelInfoRequest, GetPlanRequest, GetStatsRequest, Policy, SimilarItemsRequest,
    SimulateRequest, TracePoint,
};
use serde_json::Value;

/// Books of the bundled goodbooks sample the test loads (30,622 ratings of them).
const BOOKS: u32 = 300;
/// The reader with the most ratings among those books (7).
const USER: &str = "23684";
const ITEM: &str = "1";
const TRACE: &str = "crane/input0";
const TOKEN: &str = "browser-test-token";

/// `data/goodbooks` cut to its first `books` books and their ratings (tags kept whole).
fn goodbooks_subset(dir: &Path, books: u32) -> PathBuf {
    let src = repo_root().join("data/goodbooks");
    let out = dir.join("goodbooks-subset");
    std::fs::create_dir_all(&out).unwrap();
    for f in ["tags.csv", "book_tags.csv"] {
        std::fs::copy(src.join(f), out.join(f)).unwrap();
    }
    let keep = |path: &str, id_col: usize| {
        let mut rdr = csv::Reader::from_path(src.join(path)).unwrap();
        let mut w = csv::Writer::from_path(out.join(path)).unwrap();
        w.write_record(rdr.headers().unwrap()).unwrap();
        let mut n = 0u64;
        for row in rdr.records() {
            let row = row.unwrap();
            if row[id_col].parse::<u32>().unwrap() <= books {
                w.write_record(&row).unwrap();
                n += 1;
            }
        }
        w.flush().unwrap();
        n
    };
    assert_eq!(keep("books.csv", 0), u64::from(books));
    keep("ratings.csv", 1);
    out
}

fn scheduler_config(c: &Cluster, grpc: u16, http: u16) -> String {
    // Distinct replica floors, so the replicas the page shows can only be the plan's own.
    format!(
        r#"[scheduler]
grpc_addr = "127.0.0.1:{grpc}"
metrics_addr = "127.0.0.1:{http}"
mode = "dry_run"
tick_seconds = 1
horizon_steps = 12

[[scheduler.deployments]]
name = "recalloc-rank"
capacity_per_replica = 2000.0
min_replicas = 2
startup_seconds = 1
signal = {{ kind = "metrics_rate", url = "http://{rank}/metrics", metric = "recalloc_grpc_requests_total" }}

[[scheduler.deployments]]
name = "recalloc-embed"
capacity_per_replica = 150.0
min_replicas = 1
startup_seconds = 1
signal = {{ kind = "metrics_rate", url = "http://{embed}/metrics", metric = "recalloc_embed_texts_total" }}

[[scheduler.deployments]]
name = "recalloc-featurizer"
capacity_per_replica = 5000.0
min_replicas = 3
startup_seconds = 1
signal = {{ kind = "kafka_lag", group = "recalloc-featurizer", topic = "recalloc.events.v1", drain_seconds = 60 }}
"#,
        rank = c.rank_http,
        embed = c.embed_http,
    )
}

fn text<'a>(v: &'a Value, path: &str) -> &'a str {
    v.pointer(path)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("the page shows no {path}: {v:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_what_the_services_answer() {
    let playwright = std::env::var("RECALLOC_TEST_PLAYWRIGHT").expect(
        "RECALLOC_TEST_PLAYWRIGHT is not set: run the tests through `make test`, or export \
         RECALLOC_TEST_PLAYWRIGHT=$(bash deploy/local/browser.sh)",
    );
    let started = Instant::now();
    let mut c = Cluster::start().unwrap();
    c.start_embed().unwrap();
    c.start_rank().unwrap();

    // A little of the goodbooks data, every book embedded, a hybrid model.
    let data = goodbooks_subset(c.dir.path(), BOOKS);
    c.load_goodbooks(&data);
    let mut con = c.redis_con().await.unwrap();
    wait_events(&mut con, 30_622, Duration::from_secs(120))
        .await
        .unwrap();
    wait_quiet(&mut con, Duration::from_secs(60)).await.unwrap();
    let mut ingest = IngestClient::new(c.channel(c.ingest_grpc).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let s = ingest
            .get_stats(GetStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        if s.embedded_items == u64::from(BOOKS) {
            break;
        }
        assert!(Instant::now() < deadline, "books not embedded: {s:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = c.cli(&["train", "--algorithm", "hybrid"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rank = c.rank_client().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let model = loop {
        if let Ok(m) = rank.get_model_info(GetModelInfoRequest {}).await {
            break m.into_inner();
        }
        assert!(Instant::now() < deadline, "rank never served the model");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The scheduler (dry run, a tick a second) and the console.
    let (sched_grpc, sched_http, console_port) = (free_port(), free_port(), free_port());
    let config = c.dir.path().join("scheduler.toml");
    std::fs::write(&config, scheduler_config(&c, sched_grpc, sched_http)).unwrap();
    let mut scheduler = c
        .spawn_with(
            "scheduler",
            "recalloc-scheduler",
            &[("RECALLOC_CONFIG", config.to_str().unwrap())],
        )
        .unwrap();
    let sched_http_addr: SocketAddr = format!("127.0.0.1:{sched_http}").parse().unwrap();
    wait_ready(sched_http_addr, &mut scheduler, Duration::from_secs(30)).unwrap();
    let console_addr: SocketAddr = format!("127.0.0.1:{console_port}").parse().unwrap();
    let (grpc_env, http_env, console_env) = (
        format!("127.0.0.1:{sched_grpc}"),
        sched_http_addr.to_string(),
        console_addr.to_string(),
    );
    let mut console = c
        .spawn_with(
            "console",
            "recalloc-console",
            &[
                ("RECALLOC_SCHEDULER_GRPC_ADDR", &grpc_env),
                ("RECALLOC_SCHEDULER_METRICS_ADDR", &http_env),
                ("RECALLOC_CONSOLE_HTTP_ADDR", &console_env),
                ("RECALLOC_CONSOLE_REFRESH_MS", "1000"),
                // Only the console has it: the page must ask for it and send it on every call.
                ("RECALLOC_SECURITY_TOKEN", TOKEN),
            ],
        )
        .unwrap();
    wait_ready(console_addr, &mut console, Duration::from_secs(30)).unwrap();
    // A few plans for the charts' past half.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let out = c
        .cli(&["recommend", "--user", USER, "-k", "5", "--json"])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();

    // The browser.
    let shots = bin_dir().parent().unwrap().join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let browser_started = Instant::now();
    let run = Command::new("node")
        .arg(repo_root().join("integration-tests/browser/console.mjs"))
        .arg(format!("http://{console_addr}/"))
        .args(["--user", USER, "--item", ITEM, "--trace", TRACE])
        .args(["--bad-user", "nobody-at-all", "--token", TOKEN])
        .arg("--screenshot")
        .arg(&screenshot)
        .env("RECALLOC_TEST_PLAYWRIGHT", &playwright)
        .output()
        .expect("node runs (deploy/local/browser.sh installs it)");
    let browser_seconds = browser_started.elapsed().as_secs_f64();
    assert!(
        run.status.success(),
        "console.mjs failed: {}\n{}",
        String::from_utf8_lossy(&run.stderr),
        console.log()
    );
    let page: Value = serde_json::from_slice(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "console.mjs printed no JSON ({e}): {}",
            String::from_utf8_lossy(&run.stdout)
        )
    });
    eprintln!(
        "the browser saw (in {browser_seconds:.1} s; the test so far {:.0} s): {page:#}",
        started.elapsed().as_secs_f64()
    );

    // The token asked for once, before any data was shown; then a page without errors.
    assert_eq!(page["login"]["asked"], true, "{page:#}");
    assert_eq!(page["login"]["data_before"], Value::Null, "{page:#}");
    assert_eq!(page["login"]["token_kept"], true, "{page:#}");
    let refused = page["login_errors"].as_array().unwrap();
    assert!(
        refused
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("HTTP 401")),
        "{page:#}"
    );
    assert_eq!(page["errors"], serde_json::json!([]), "{page:#}");
    assert_eq!(page["status"], 200);
    assert_eq!(page["content_type"], "text/html; charset=utf-8");
    assert_eq!(page["title"], "recalloc console");

    // Overview: every service ready, the ingest stats, the plan's replicas.
    for svc in ["ingest", "featurizer", "embed", "rank", "scheduler"] {
        assert_eq!(
            text(&page, &format!("/overview/services/{svc}/health")),
            "ready",
            "{svc}"
        );
    }
    let stats = ingest
        .get_stats(GetStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    for (field, want) in [
        ("events", stats.events),
        ("users", stats.users),
        ("items", stats.items),
        ("ratings", stats.ratings),
        ("embedded_items", stats.embedded_items),
    ] {
        assert_eq!(
            text(&page, &format!("/overview/stats/{field}")),
            want.to_string(),
            "{field}"
        );
    }
    assert_eq!(stats.events, 30_622);
    let mut sched = SchedulerClient::connect(format!("http://{grpc_env}"))
        .await
        .unwrap();
    let plan = sched
        .get_plan(GetPlanRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(plan.dry_run);
    assert_eq!(
        text(&page, "/overview/plan/dry_run"),
        "dry run (planned, not applied)"
    );
    let floors = [
        ("recalloc-rank", "rank", 2),
        ("recalloc-embed", "embed", 1),
        ("recalloc-featurizer", "featurizer", 3),
    ];
    for (deployment, svc, floor) in floors {
        let d = plan
            .deployments
            .iter()
            .find(|d| d.deployment == deployment)
            .unwrap_or_else(|| panic!("no plan for {deployment}: {plan:?}"));
        // No load to speak of: every step at the Deployment's floor.
        assert_eq!(d.current_replicas, floor, "{deployment}: {d:?}");
        assert_eq!(d.replicas, vec![floor; 13], "{deployment}: {d:?}");
        let shown = &page["deployments"][deployment];
        assert_eq!(shown["current_replicas"], d.current_replicas.to_string());
        let planned: Vec<String> = d.replicas.iter().map(u32::to_string).collect();
        assert_eq!(shown["planned_replicas"], planned.join(" "), "{deployment}");
        assert!(shown["chart_paths"].as_u64().unwrap() >= 3, "{shown}");
        assert!(shown["chart_bands"].as_u64().unwrap() >= 1, "{shown}");
        assert!(shown["chart_height"].as_f64().unwrap() > 100.0, "{shown}");
        let row = &page["overview"]["services"][svc];
        assert_eq!(row["replicas_current"], d.current_replicas.to_string());
        assert_eq!(row["replicas_planned"], d.replicas[1].to_string());
        assert_eq!(row["replicas"], format!("{floor} → {floor}"));
    }
    // Rates come from two scrapes: a number for every gRPC server (the console's own reads
    // are its load, whether one fell inside the last window or not), none for the featurizer.
    for svc in ["ingest", "embed", "rank", "scheduler"] {
        let rate: f64 = text(&page, &format!("/overview/services/{svc}/request_rate"))
            .parse()
            .unwrap_or_else(|e| panic!("{svc}'s request rate is not shown: {e}"));
        assert!(rate >= 0.0);
    }
    assert_eq!(
        text(&page, "/overview/services/featurizer/request_rate"),
        "—"
    );
    // The consumers' lag: what their gauges said at the console's last read (a number; the
    // featurizer reports it every 2 s from the group's committed offsets).
    for svc in ["featurizer", "embed"] {
        let lag: f64 = text(&page, &format!("/overview/services/{svc}/lag"))
            .parse()
            .unwrap_or_else(|e| panic!("{svc}'s lag is not shown: {e}"));
        assert!(lag >= 0.0);
    }

    // Models: the current model as rank describes it.
    for (field, want) in [
        ("version", model.version.clone()),
        ("algorithm", "hybrid".to_string()),
        ("factors", model.factors.to_string()),
        ("users", model.users.to_string()),
        ("items", model.items.to_string()),
    ] {
        assert_eq!(text(&page, &format!("/model/{field}")), want, "{field}");
    }
    assert_eq!(model.items, u64::from(BOOKS));
    assert_eq!(page["models_seen"], serde_json::json!([model.version]));
    assert!(page["model_metrics"]["fit_seconds"].is_string(), "{page:#}");

    // Try it: the CLI's recommendations, in its order, with titles and reasons.
    let want: Vec<(&str, &str)> = cli["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["item_id"].as_str().unwrap(), i["title"].as_str().unwrap()))
        .collect();
    assert_eq!(want.len(), 5, "{cli}");
    let shown: Vec<(&str, &str)> = page["recommend"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["item_id"].as_str().unwrap(), i["title"].as_str().unwrap()))
        .collect();
    assert_eq!(shown, want, "{page:#}");
    assert_eq!(page["recommend"]["source"], cli["source"]);
    assert_eq!(page["recommend"]["source"], "model");
    assert_eq!(page["recommend"]["model_version"], cli["model_version"]);
    for i in page["recommend"]["items"].as_array().unwrap() {
        let reasons = i["reasons"].as_str().unwrap_or_default();
        assert!(reasons.starts_with("because you liked: "), "{i}");
    }
    let similar = rank
        .similar_items(SimilarItemsRequest {
            item_id: ITEM.into(),
            k: 5,
            by_text: false,
        })
        .await
        .unwrap()
        .into_inner();
    let want: Vec<&str> = similar.items.iter().map(|i| i.item_id.as_str()).collect();
    assert_eq!(page["similar"]["items"], serde_json::json!(want));
    assert_eq!(want.len(), 5);

    // The simulator: the scheduler's figures for the bundled trace, and the chart.
    let trace_csv =
        std::fs::read_to_string(repo_root().join(format!("data/traces/{TRACE}.csv"))).unwrap();
    let parsed = recalloc_alloc::trace::Trace::parse(&trace_csv).unwrap();
    let trace = parsed
        .timestamps()
        .iter()
        .zip(parsed.values())
        .map(|(ts, value)| TracePoint {
            ts: *ts,
            value: *value,
        })
        .collect();
    let sim = sched
        .simulate(SimulateRequest {
            trace,
            capacity_per_pod: 15.0,
            startup_seconds: 60,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let shown = &page["simulate"];
    assert_eq!(shown["error"], Value::Null, "{shown}");
    assert_eq!(shown["capacity_per_pod"], "15");
    for r in &sim.results {
        let name = match Policy::try_from(r.policy).unwrap() {
            Policy::Hpa => "hpa",
            Policy::Seed => "seed",
            Policy::Recalloc => "recalloc",
            Policy::Unspecified => unreachable!(),
        };
        let row = &shown["results"][name];
        assert_eq!(row["slack"], format!("{:.3}", r.slack), "{name}: {row}");
        assert_eq!(
            row["under_provisioned_seconds"],
            format!("{:.0}", r.under_provisioned_seconds),
            "{name}"
        );
        assert_eq!(
            row["scaling_actions"],
            r.scaling_actions.to_string(),
            "{name}"
        );
    }
    assert_eq!(sim.results.len(), 3);
    // Demand and three capacities; the forecast band; on screen.
    assert!(shown["chart_height"].as_f64().unwrap() > 200.0, "{shown}");
    assert!(shown["chart_paths"].as_u64().unwrap() >= 4, "{shown}");
    assert!(shown["chart_bands"].as_u64().unwrap() >= 1, "{shown}");
    assert_eq!(
        shown["legend"],
        serde_json::json!([
            "forecast band",
            "demand",
            "hpa capacity",
            "seed capacity",
            "recalloc capacity"
        ])
    );

    // Bad input is shown next to its field.
    assert_eq!(page["bad_user"]["shown"], true, "{page:#}");
    assert_eq!(page["bad_user"]["field"], "user");
    assert_eq!(page["bad_user"]["items"], 0);
    assert!(
        text(&page, "/bad_user/text").contains("unknown"),
        "{page:#}"
    );
    assert_eq!(page["bad_csv"]["field"], "csv", "{page:#}");
    assert!(text(&page, "/bad_csv/text").contains("line 3"), "{page:#}");
    assert_eq!(
        page["bad_csv"]["chart_height"], 0.0,
        "no chart for a failed run"
    );

    // The screenshot.
    let png = std::fs::read(&screenshot).expect("the screenshot was saved");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 50_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", screenshot.display());

    assert!(console.terminate().unwrap().success(), "{}", console.log());
    scheduler.terminate();
}

/// One HTTP/1.1 request: (status, headers, body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(s, "{head}\r\n{body}").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Without any service running: the shell is public, the API needs the token, the console is
/// ready once it has read (that everything is down), bad input names its field, and a SIGTERM
/// stops it cleanly.
#[test]
fn the_api_needs_the_token_and_names_the_field_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let nowhere = || format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin("recalloc-console"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RECALLOC_") || k.starts_with("OTEL_") {
            cmd.env_remove(k);
        }
    }
    let token = "console-test-token";
    cmd.env("RECALLOC_SECURITY_TOKEN", token)
        .env("RECALLOC_CONSOLE_HTTP_ADDR", addr.to_string())
        .env("RECALLOC_CONSOLE_REFRESH_MS", "500");
    for service in ["INGEST", "EMBED", "RANK", "SCHEDULER"] {
        cmd.env(format!("RECALLOC_{service}_GRPC_ADDR"), nowhere());
    }
    for service in ["INGEST", "FEATURIZER", "EMBED", "RANK", "SCHEDULER"] {
        cmd.env(format!("RECALLOC_{service}_METRICS_ADDR"), nowhere());
    }
    let mut console = Proc::spawn("console", cmd, dir.path().join("console.log")).unwrap();
    wait_ready(addr, &mut console, Duration::from_secs(30)).unwrap();

    let (status, head, body) = request(addr, "GET", "/", &[], "");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(body.contains("<title>recalloc console</title>"));
    let (status, head, body) = request(addr, "GET", "/console.js", &[], "");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(body.contains("function timeChart"));

    let bearer = format!("Bearer {token}");
    let with_token = [("Authorization", bearer.as_str())];
    for headers in [&[][..], &[("Authorization", "Bearer not-the-token")][..]] {
        for path in [
            "/api/overview",
            "/api/models",
            "/api/recommend?user=u",
            "/api/nope",
        ] {
            let (status, head, body) = request(addr, "GET", path, headers, "");
            assert_eq!(status, 401, "{path} {headers:?}: {body}");
            assert!(head.contains("www-authenticate: bearer"), "{head}");
            assert_eq!(json(&body)["field"], "authorization");
        }
        let (status, ..) = request(addr, "POST", "/api/simulate", headers, "{}");
        assert_eq!(status, 401);
    }

    // Every service down: the overview says so, for each.
    let (status, _, body) = request(addr, "GET", "/api/overview", &with_token, "");
    assert_eq!(status, 200, "{body}");
    let o = json(&body);
    assert!(o["rounds"].as_u64().unwrap() >= 1);
    let states: Vec<&str> = o["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["health"]["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["down"; 5], "{o:#}");
    assert!(
        o["stats_error"].as_str().unwrap().starts_with("ingest:"),
        "{o:#}"
    );

    let check = |method: &str, path: &str, body: &str, want: u16, field: &str, says: &str| {
        let (status, _, answer) = request(addr, method, path, &with_token, body);
        assert_eq!(status, want, "{method} {path}: {answer}");
        let e = json(&answer);
        assert_eq!(e["field"], field, "{method} {path}: {answer}");
        assert!(
            e["error"].as_str().unwrap().contains(says),
            "{method} {path}: {answer}"
        );
    };
    check("GET", "/api/recommend", "", 400, "user", "user is required");
    check(
        "GET",
        "/api/recommend?user=u&k=0",
        "",
        400,
        "k",
        "from 1 to 100",
    );
    check(
        "GET",
        "/api/similar?item=",
        "",
        400,
        "item",
        "item is required",
    );
    check(
        "GET",
        "/api/similar?item=i&by_text=maybe",
        "",
        400,
        "by_text",
        "true or false",
    );
    // Input that is fine, with rank down: the gateway's fault, named.
    check("GET", "/api/recommend?user=u", "", 502, "rank", "rank:");
    check(
        "POST",
        "/api/simulate",
        r#"{"csv": "ts,value\n0,1\n60,lots\n", "capacity_per_pod": 2}"#,
        400,
        "csv",
        "line 3",
    );
    check(
        "POST",
        "/api/simulate",
        r#"{"trace": "crane/nope"}"#,
        404,
        "trace",
        "crane/input0",
    );
    check(
        "POST",
        "/api/simulate",
        r#"{"csv": "0,1\n60,2\n"}"#,
        400,
        "capacity_per_pod",
        "required",
    );
    check(
        "POST",
        "/api/simulate",
        "{not json",
        400,
        "body",
        "not a simulation request",
    );
    let (status, _, body) = request(addr, "GET", "/api/traces", &with_token, "");
    assert_eq!(status, 200);
    assert_eq!(json(&body)[0]["name"], "crane/input0");
    let (status, _, body) = request(addr, "GET", "/api/nope", &with_token, "");
    assert_eq!(
        (status, json(&body)["error"].as_str().unwrap()),
        (404, "no API route /api/nope")
    );

    // Its own metrics count the refusals.
    let (_, _, metrics) = request(addr, "GET", "/metrics", &[], "");
    assert!(
        metrics.contains(
            "recalloc_console_http_requests_total{route=\"/api/overview\",code=\"401\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("recalloc_console_poll_rounds_total"),
        "{metrics}"
    );

    let status = console.terminate().expect("the console stops on SIGTERM");
    assert!(status.success(), "{status:?}: {}", console.log());
}
