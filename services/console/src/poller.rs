//! The one writer of the [`Snapshot`]: every `console.refresh_ms` it reads each service's
//! `/readyz` and `/metrics`, the scheduler's plan and a forecast per planned Deployment, the
//! current model, the embed model and the ingest stats, all at once, and then swaps what it
//! read into the snapshot in one step, so that a view never mixes two rounds.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use recalloc_common::{Metrics, Readiness};
use recalloc_proto::v1::{
    GetEmbedModelInfoRequest, GetForecastRequest, GetModelInfoRequest, GetPlanRequest,
    GetStatsRequest,
};

use crate::backend::{Clients, Http, READ_TIMEOUT};
use crate::state::{Health, Read, Snapshot, Target};
use crate::window::Scrape;

const ROUNDS: &str = "recalloc_console_poll_rounds_total";
const READ_ERRORS: &str = "recalloc_console_read_errors_total";

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn timed<T>(r: tonic::Request<T>) -> tonic::Request<T> {
    let mut r = r;
    r.set_timeout(READ_TIMEOUT);
    r
}

fn status_text(service: &str, s: tonic::Status) -> String {
    let cause = std::error::Error::source(&s)
        .map(|e| format!(": {}", recalloc_common::tls::error_chain(e)))
        .unwrap_or_default();
    format!("{service}: {} ({:?}){cause}", s.message(), s.code())
}

/// One service's `/readyz` and `/metrics`.
async fn read_service(http: &Http, t: &Target) -> (Health, Result<Scrape, String>) {
    let (readyz, metrics_url) = (format!("{}/readyz", t.url), format!("{}/metrics", t.url));
    let (ready, metrics) = futures::join!(http.get(&readyz), http.get(&metrics_url));
    let health = match ready {
        Ok((200, _)) => Health::Ready,
        Ok((status, body)) => {
            let reasons: Vec<&str> = body
                .lines()
                .filter(|l| !l.trim().is_empty() && l.trim() != "not ready")
                .collect();
            Health::NotReady(if reasons.is_empty() {
                format!("/readyz answered {status}")
            } else {
                reasons.join("; ")
            })
        }
        Err(e) => Health::Down(e),
    };
    let at_ms = now_ms();
    let scrape = metrics.and_then(|(status, body)| {
        if status != 200 {
            return Err(format!("/metrics answered {status}"));
        }
        crate::prom::parse(&body)
            .map(|exposition| Scrape { at_ms, exposition })
            .map_err(|e| format!("/metrics: {e}"))
    });
    (health, scrape)
}

/// One round of reads, applied to `snapshot` at the end.
pub async fn round(clients: &Clients, http: &Http, snapshot: &RwLock<Snapshot>, metrics: &Metrics) {
    let targets: Vec<Target> = snapshot
        .read()
        .expect("snapshot lock")
        .services
        .iter()
        .map(|s| s.target.clone())
        .collect();
    let (mut ingest, mut embed, mut rank, mut scheduler) = (
        clients.ingest.clone(),
        clients.embed.clone(),
        clients.rank.clone(),
        clients.scheduler.clone(),
    );
    let (services, plan, model, embed_model, stats) = futures::join!(
        join_all(targets.iter().map(|t| read_service(http, t))),
        async {
            scheduler
                .get_plan(timed(tonic::Request::new(GetPlanRequest::default())))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| status_text("scheduler", s))
        },
        async {
            rank.get_model_info(timed(tonic::Request::new(GetModelInfoRequest {})))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| status_text("rank", s))
        },
        async {
            embed
                .get_model_info(timed(tonic::Request::new(GetEmbedModelInfoRequest {})))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| status_text("embed", s))
        },
        async {
            ingest
                .get_stats(timed(tonic::Request::new(GetStatsRequest {})))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| status_text("ingest", s))
        },
    );
    // Forecasts of the Deployments the plan has (the scheduler answers NOT_FOUND for others).
    let names: Vec<String> = plan
        .as_ref()
        .map(|p| p.deployments.iter().map(|d| d.deployment.clone()).collect())
        .unwrap_or_default();
    let forecasts: Vec<(String, Read<_>)> = join_all(names.into_iter().map(|name| {
        let mut scheduler = clients.scheduler.clone();
        async move {
            let f = scheduler
                .get_forecast(timed(tonic::Request::new(GetForecastRequest {
                    deployment: name.clone(),
                    ..Default::default()
                })))
                .await
                .map(|r| r.into_inner())
                .map_err(|s| status_text("scheduler", s));
            (name, f)
        }
    }))
    .await;

    for (what, failed) in [
        ("plan", plan.is_err()),
        ("model", model.is_err()),
        ("stats", stats.is_err()),
    ] {
        if failed {
            metrics.inc_counter(
                READ_ERRORS,
                "reads of the services that failed",
                &[("read", what)],
                1,
            );
        }
    }
    let now = now_ms();
    let mut s = snapshot.write().expect("snapshot lock");
    for (state, (health, scrape)) in s.services.iter_mut().zip(services) {
        if scrape.is_err() {
            metrics.inc_counter(
                READ_ERRORS,
                "reads of the services that failed",
                &[("read", state.target.name)],
                1,
            );
        }
        state.health = health;
        state.scraped(scrape);
    }
    s.planned(plan);
    s.forecasts = forecasts.into_iter().collect();
    s.modelled(model, now);
    s.embed_model = embed_model;
    s.stats = stats;
    s.at_ms = now;
    s.rounds += 1;
    metrics.inc_counter(ROUNDS, "rounds of reads of every service", &[], 1);
}

/// Reads every `every` until `stop` resolves. The console turns ready after the first round:
/// from then on the page has something to show, whatever the services' state (a console that
/// went unready with the cluster would hide the cluster's trouble from its operators).
pub async fn run(
    clients: Clients,
    http: Http,
    snapshot: Arc<RwLock<Snapshot>>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticker.tick() => {}
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = round(&clients, &http, &snapshot, &metrics) => {}
        }
        readiness.record("first read of the services", Ok(())).await;
    }
}
