//! Process wiring: one HTTP port with the page (`/`, its script and style, built into the
//! binary), the JSON API under `/api` (behind the bearer token when one is configured), and
//! `/metrics`, `/healthz`, `/readyz`; the poller that feeds the snapshot; phased shutdown (not
//! ready, stop polling, stop accepting and let the calls in flight finish).
//!
//! Routes of the API: `GET /api/overview`, `/api/deployments`, `/api/models` (views of the
//! snapshot); `GET /api/recommend?user=U&k=5`, `/api/similar?item=I&k=5&by_text=false`,
//! `/api/traces`, and `POST /api/simulate` (calls made for the request).

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::join_all;
use recalloc_common::auth::{BearerToken, Secret};
use recalloc_common::config::Config;
use recalloc_common::serve::{ServeError, Stop};
use recalloc_common::{Metrics, Readiness};
use recalloc_proto::v1::{
    ExplainRequest, RecommendRequest, RecommendationSource, SimilarItemsRequest, SimulateRequest,
    TracePoint,
};
use serde::Serialize;

use crate::api::{self, ApiError};
use crate::backend::{self, Clients, Http};
use crate::charts::{self, SimulationChart};
use crate::poller;
use crate::state::{self, Snapshot};

pub const GRACE: Duration = Duration::from_secs(10);
/// How long a simulation may take (the recalloc policy re-plans at every step of the trace).
pub const SIMULATE_TIMEOUT: Duration = Duration::from_secs(300);
/// Buckets of a simulation chart (the page is about 1000 px wide).
pub const CHART_POINTS: usize = 1200;
/// Reasons shown per recommendation.
const REASONS: u32 = 3;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const CONSOLE_JS: &str = include_str!("../assets/console.js");
const CONSOLE_CSS: &str = include_str!("../assets/console.css");

const REQUESTS: &str = "recalloc_console_http_requests_total";
const LATENCY: &str = "recalloc_console_http_request_duration_seconds";
/// The paths metrics are labelled with (anything else is `other`, so a scan of random paths
/// cannot grow the registry).
const ROUTES: [&str; 10] = [
    "/",
    "/console.js",
    "/console.css",
    "/api/overview",
    "/api/deployments",
    "/api/models",
    "/api/recommend",
    "/api/similar",
    "/api/traces",
    "/api/simulate",
];

#[derive(Clone)]
struct AppState {
    snapshot: Arc<RwLock<Snapshot>>,
    clients: Clients,
    token: Option<Arc<Secret>>,
    metrics: Arc<Metrics>,
}

/// Runs the console until `shutdown` resolves; `on_bound` learns the bound address first.
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    if cfg.console.refresh_ms < 100 {
        return Err(ServeError::config(
            "console.refresh_ms",
            format!("{} is too often: at least 100", cfg.console.refresh_ms),
        ));
    }
    let token = recalloc_common::auth::token(&cfg.security).map_err(ServeError::Config)?;
    let guarded = token.is_some();
    let bearer =
        BearerToken::new(token.as_ref()).map_err(|e| ServeError::config("security.token", e))?;
    let clients = Clients::new(&cfg, bearer)?;
    let metrics = Metrics::new();
    let readiness = Readiness::new(None, &[]);
    let snapshot = Arc::new(RwLock::new(Snapshot::new(
        backend::targets(&cfg),
        cfg.console.refresh_ms,
    )));
    let state = AppState {
        snapshot: snapshot.clone(),
        clients: clients.clone(),
        token: token.map(Arc::new),
        metrics: metrics.clone(),
    };
    let app = router(state).merge(recalloc_common::http::routes(
        metrics.clone(),
        readiness.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(cfg.console.http_addr)
        .await
        .map_err(|source| recalloc_common::serve::BindError {
            addr: cfg.console.http_addr,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| recalloc_common::serve::BindError {
            addr: cfg.console.http_addr,
            source,
        })?;
    on_bound(addr);
    tracing::info!(%addr, refresh_ms = cfg.console.refresh_ms, guarded, "console serving");

    let polling = Stop::default();
    let poller = tokio::spawn(poller::run(
        clients,
        Http::default(),
        snapshot,
        metrics,
        readiness.clone(),
        Duration::from_millis(u64::from(cfg.console.refresh_ms)),
        polling.signal(),
    ));
    let serving = Stop::default();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(serving.signal())
            .into_future(),
    );
    shutdown.await;
    // Phase 1: not ready, so a load balancer stops sending; stop reading the services.
    readiness.set(false).await;
    polling.stop();
    let _ = poller.await;
    // Phase 2: stop accepting and let the requests in flight (a simulation) finish.
    serving.stop();
    match tokio::time::timeout(GRACE, server).await {
        Ok(Ok(r)) => r.map_err(|e| ServeError::dependency("http server", e))?,
        Ok(Err(e)) => tracing::error!(error = %e, "http task failed"),
        Err(_) => tracing::warn!("requests in flight did not finish within the grace period"),
    }
    tracing::info!("console stopped");
    Ok(())
}

fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/overview", get(overview))
        .route("/deployments", get(deployments))
        .route("/models", get(models))
        .route("/recommend", get(recommend))
        .route("/similar", get(similar))
        .route("/traces", get(traces))
        .route("/simulate", post(simulate))
        .fallback(|req: Request| async move { error(ApiError::no_route(req.uri().path())) })
        .layer(DefaultBodyLimit::max(api::MAX_TRACE_BYTES + 64 * 1024))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/console.css",
            get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
        .nest("/api", api)
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The page is built into the binary: a new console is a new page.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = Response::new(Body::from(body));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the answer: {e}"),
        )
            .into_response(),
    }
}

fn ok(value: &impl Serialize) -> Response {
    json(StatusCode::OK, value)
}

fn error(e: ApiError) -> Response {
    json(
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e,
    )
}

/// The API needs `Authorization: Bearer <token>` when a token is configured; the page shell
/// and its assets do not (they hold no data), so the page can ask for the token.
async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(why) = recalloc_common::auth::check_bearer(given, token) {
            let mut r = error(ApiError::unauthorized(why));
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

/// Requests by route and status, and their latency.
async fn count(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let route = ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .unwrap_or("other");
    let started = Instant::now();
    let resp = next.run(req).await;
    let code = resp.status().as_u16().to_string();
    s.metrics.inc_counter(
        REQUESTS,
        "console HTTP requests by route and status",
        &[("route", route), ("code", &code)],
        1,
    );
    s.metrics.observe(
        LATENCY,
        "console HTTP request latency",
        &[("route", route)],
        started.elapsed(),
    );
    resp
}

async fn overview(State(s): State<AppState>) -> Response {
    let view = state::overview(&s.snapshot.read().expect("snapshot lock"));
    ok(&view)
}

async fn deployments(State(s): State<AppState>) -> Response {
    let view = state::deployments(&s.snapshot.read().expect("snapshot lock"));
    ok(&view)
}

async fn models(State(s): State<AppState>) -> Response {
    let view = state::models(&s.snapshot.read().expect("snapshot lock"));
    ok(&view)
}

async fn traces() -> Response {
    ok(&crate::traces::BUNDLED)
}

#[derive(Serialize)]
struct Reason {
    item_id: String,
    title: String,
    score: f32,
}

#[derive(Serialize)]
struct Recommended {
    item_id: String,
    title: String,
    score: f32,
    /// The history items that contribute most (Explain); empty when rank has none to give.
    reasons: Vec<Reason>,
    explain_error: Option<String>,
}

#[derive(Serialize)]
struct Recommendations {
    user_id: String,
    source: String,
    model_version: String,
    items: Vec<Recommended>,
}

fn timeout<T>(message: T, within: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(within);
    r
}

/// `recalloc recommend --user U -k K --explain`, as JSON: the same request (seen items
/// excluded), the reasons from Explain.
async fn recommend(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    match try_recommend(&s, q.as_deref()).await {
        Ok(r) => ok(&r),
        Err(e) => error(e),
    }
}

async fn try_recommend(s: &AppState, q: Option<&str>) -> Result<Recommendations, ApiError> {
    let q = api::query(q);
    let user = api::required(&q, "user")?;
    let k = api::k(&q, 5)?;
    let mut rank = s.clients.rank.clone();
    let r = rank
        .recommend(timeout(
            RecommendRequest {
                user_id: user.clone(),
                k,
                exclude_seen: true,
                filter: None,
            },
            backend::READ_TIMEOUT * 3,
        ))
        .await
        .map_err(|st| ApiError::upstream("rank", "user", &st))?
        .into_inner();
    // Popular items are rank's answer for anyone it knows nothing about, a typo included.
    if r.source == RecommendationSource::Popular as i32 {
        return Err(ApiError::not_found(
            "user",
            format!(
                "user {user:?} is unknown: not in model {}, no history, no profile text (rank would answer the most popular items)",
                r.model_version
            ),
        ));
    }
    let explained = join_all(r.items.iter().map(|i| {
        let mut rank = s.clients.rank.clone();
        let request = ExplainRequest {
            user_id: user.clone(),
            item_id: i.item_id.clone(),
            k: REASONS,
        };
        async move {
            rank.explain(timeout(request, backend::READ_TIMEOUT * 3))
                .await
                .map(|e| e.into_inner())
        }
    }))
    .await;
    let items = r
        .items
        .into_iter()
        .zip(explained)
        .map(|(i, e)| {
            let (reasons, explain_error) = match e {
                Ok(e) => (
                    e.contributions
                        .into_iter()
                        .map(|c| Reason {
                            item_id: c.item_id,
                            title: c.title,
                            score: c.score,
                        })
                        .collect(),
                    None,
                ),
                // No history to explain from (a text or fold-in user without one).
                Err(st) if st.code() == tonic::Code::NotFound => (Vec::new(), None),
                Err(st) => (Vec::new(), Some(format!("explain: {}", st.message()))),
            };
            Recommended {
                item_id: i.item_id,
                title: i.title,
                score: i.score,
                reasons,
                explain_error,
            }
        })
        .collect();
    Ok(Recommendations {
        user_id: r.user_id,
        source: state::source_name(r.source),
        model_version: r.model_version,
        items,
    })
}

#[derive(Serialize)]
struct Similar {
    item_id: String,
    by_text: bool,
    items: Vec<Reason>,
}

async fn similar(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let run = async {
        let q = api::query(q.as_deref());
        let item = api::required(&q, "item")?;
        let k = api::k(&q, 5)?;
        let by_text = api::flag(&q, "by_text")?;
        let mut rank = s.clients.rank.clone();
        let r = rank
            .similar_items(timeout(
                SimilarItemsRequest {
                    item_id: item.clone(),
                    k,
                    by_text,
                },
                backend::READ_TIMEOUT * 3,
            ))
            .await
            .map_err(|st| ApiError::upstream("rank", "item", &st))?
            .into_inner();
        Ok::<_, ApiError>(Similar {
            item_id: item,
            by_text,
            items: r
                .items
                .into_iter()
                .map(|i| Reason {
                    item_id: i.item_id,
                    title: i.title,
                    score: i.score,
                })
                .collect(),
        })
    };
    match run.await {
        Ok(r) => ok(&r),
        Err(e) => error(e),
    }
}

#[derive(Serialize)]
struct PolicyFigures {
    policy: &'static str,
    slack: f64,
    under_provisioned_seconds: f64,
    unmet_demand: f64,
    scaling_actions: u32,
    mean_replicas: f64,
}

#[derive(Serialize)]
struct Simulated {
    source: String,
    points: usize,
    step_seconds: u64,
    capacity_per_pod: f64,
    startup_seconds: u32,
    results: Vec<PolicyFigures>,
    chart: Option<SimulationChart>,
}

/// Runs the scheduler's Simulate on a bundled or uploaded trace, with the chart's series.
async fn simulate(State(s): State<AppState>, body: Bytes) -> Response {
    let run = async {
        let sim = api::simulation(&body)?;
        let trace = sim
            .trace
            .timestamps()
            .iter()
            .zip(sim.trace.values())
            .map(|(ts, value)| TracePoint {
                ts: *ts,
                value: *value,
            })
            .collect();
        let mut scheduler = s.clients.scheduler.clone();
        let r = scheduler
            .simulate(timeout(
                SimulateRequest {
                    trace,
                    capacity_per_pod: sim.capacity_per_pod,
                    startup_seconds: sim.startup_seconds,
                    include_series: true,
                    ..Default::default()
                },
                SIMULATE_TIMEOUT,
            ))
            .await
            .map_err(|st| ApiError::upstream("scheduler", "csv", &st))?
            .into_inner();
        Ok::<_, ApiError>(Simulated {
            source: sim.source,
            points: sim.trace.len(),
            step_seconds: sim.trace.step_seconds(),
            capacity_per_pod: sim.capacity_per_pod,
            startup_seconds: sim.startup_seconds,
            results: r
                .results
                .iter()
                .map(|p| PolicyFigures {
                    policy: charts::policy_name(p.policy),
                    slack: p.slack,
                    under_provisioned_seconds: p.under_provisioned_seconds,
                    unmet_demand: p.unmet_demand,
                    scaling_actions: p.scaling_actions,
                    mean_replicas: p.mean_replicas,
                })
                .collect(),
            chart: r
                .series
                .as_ref()
                .map(|series| charts::simulation_chart(series, CHART_POINTS)),
        })
    };
    match run.await {
        Ok(r) => ok(&r),
        Err(e) => error(e),
    }
}
