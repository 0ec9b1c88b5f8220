//! What the console knows after its last round of reads ([`Snapshot`], written only by the
//! poller) and the views the API serves from it. Building a view does no I/O: every page, however
//! many are open, reads the same snapshot, so the console's load on the services does not grow
//! with its audience.

use std::collections::BTreeMap;

use recalloc_proto::v1::{
    Algorithm, EmbedModelInfo, Forecast, ModelInfo, Plan, RecommendationSource, Stats,
};
use serde::Serialize;

use crate::charts::{self, DeploymentChart};
use crate::history::History;
use crate::window::{self, Latency, Scrape};

/// One service the console watches: its HTTP endpoint, and what is special about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Target {
    /// Short name: `ingest`, `featurizer`, `embed`, `rank`, `scheduler`.
    pub name: &'static str,
    /// Its binary, also the name of its Deployment in the scheduler's default config.
    pub process: &'static str,
    /// Base URL of its `/metrics` and `/readyz`.
    pub url: String,
    /// The gauge of its consumer lag, for the Kafka consumers.
    #[serde(skip)]
    pub lag_gauge: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum Health {
    /// Not read yet.
    Unknown,
    Ready,
    /// `/readyz` answered 503: the reasons it gave.
    NotReady(String),
    /// No answer (connection refused, timeout): why.
    Down(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    pub target: Target,
    pub health: Health,
    /// The two latest scrapes of `/metrics`, older first.
    pub previous: Option<Scrape>,
    pub latest: Option<Scrape>,
    pub metrics_error: Option<String>,
}

impl ServiceState {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            health: Health::Unknown,
            previous: None,
            latest: None,
            metrics_error: None,
        }
    }

    /// Records a scrape (or why there is none: the older ones stay, so a blip keeps the rate).
    pub fn scraped(&mut self, scrape: Result<Scrape, String>) {
        match scrape {
            Ok(s) => {
                self.previous = self.latest.take();
                self.latest = Some(s);
                self.metrics_error = None;
            }
            Err(e) => self.metrics_error = Some(e),
        }
    }
}

/// A model version the console saw current.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSeen {
    pub version: String,
    pub algorithm: String,
    pub trained_at_ms: i64,
    pub first_seen_ms: i64,
}

/// Most model versions remembered.
pub const MAX_MODELS_SEEN: usize = 20;

/// A read that may have failed: the value or the error message.
pub type Read<T> = Result<T, String>;

#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the last round finished (unix ms); 0 before the first.
    pub at_ms: i64,
    pub rounds: u64,
    pub refresh_ms: u32,
    pub services: Vec<ServiceState>,
    pub plan: Read<Plan>,
    pub forecasts: BTreeMap<String, Read<Forecast>>,
    pub model: Read<ModelInfo>,
    pub embed_model: Read<EmbedModelInfo>,
    pub stats: Read<Stats>,
    pub history: History,
    /// Newest last.
    pub models_seen: Vec<ModelSeen>,
}

const NOT_READ: &str = "not read yet";

impl Snapshot {
    pub fn new(targets: Vec<Target>, refresh_ms: u32) -> Self {
        Self {
            at_ms: 0,
            rounds: 0,
            refresh_ms,
            services: targets.into_iter().map(ServiceState::new).collect(),
            plan: Err(NOT_READ.into()),
            forecasts: BTreeMap::new(),
            model: Err(NOT_READ.into()),
            embed_model: Err(NOT_READ.into()),
            stats: Err(NOT_READ.into()),
            history: History::default(),
            models_seen: Vec::new(),
        }
    }

    /// Takes in a plan read: a new plan goes into the history.
    pub fn planned(&mut self, plan: Read<Plan>) {
        if let Ok(p) = &plan {
            self.history.record(p);
        }
        self.plan = plan;
    }

    /// Takes in a model read: a version not seen before is remembered.
    pub fn modelled(&mut self, model: Read<ModelInfo>, now_ms: i64) {
        if let Ok(m) = &model
            && !m.version.is_empty()
            && self
                .models_seen
                .last()
                .is_none_or(|s| s.version != m.version)
        {
            if self.models_seen.len() == MAX_MODELS_SEEN {
                self.models_seen.remove(0);
            }
            self.models_seen.push(ModelSeen {
                version: m.version.clone(),
                algorithm: algorithm_name(m.algorithm).to_owned(),
                trained_at_ms: m.trained_at_ms,
                first_seen_ms: now_ms,
            });
        }
        self.model = model;
    }

    /// The plan of `process`'s Deployment: the one of that name, else one whose name ends in
    /// `-<name>` (a release prefix), else `-<name>-cpu` (the Helm chart's embed API runs as
    /// `<release>-embed-cpu`, beside an optional `-gpu` variant).
    fn deployment_of(&self, t: &Target) -> Option<&recalloc_proto::v1::DeploymentPlan> {
        let plan = self.plan.as_ref().ok()?;
        let suffix = format!("-{}", t.name);
        let cpu_variant = format!("-{}-cpu", t.name);
        let named =
            |want: &dyn Fn(&str) -> bool| plan.deployments.iter().find(|d| want(&d.deployment));
        named(&|d| d == t.process)
            .or_else(|| named(&|d| d.ends_with(&suffix)))
            .or_else(|| named(&|d| d.ends_with(&cpu_variant)))
    }
}

/// `implicit_als`, `explicit_mf`, `hybrid` (the names `rank.algorithm` and `recalloc train`
/// take).
pub fn algorithm_name(a: i32) -> &'static str {
    match Algorithm::try_from(a) {
        Ok(Algorithm::ImplicitAls) => "implicit_als",
        Ok(Algorithm::ExplicitMf) => "explicit_mf",
        Ok(Algorithm::Hybrid) => "hybrid",
        _ => "unspecified",
    }
}

/// `model`, `fold_in`, `text`, `popular` (as `recalloc recommend --json` prints them).
pub fn source_name(s: i32) -> String {
    RecommendationSource::try_from(s)
        .map_or("unspecified", |s| s.as_str_name())
        .trim_start_matches("RECOMMENDATION_SOURCE_")
        .to_lowercase()
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Replicas {
    pub current: u32,
    /// What the plan requests now.
    pub planned: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceView {
    pub name: &'static str,
    pub process: &'static str,
    pub url: String,
    pub health: Health,
    pub deployment: Option<String>,
    pub replicas: Option<Replicas>,
    /// gRPC requests per second over the last two scrapes.
    pub request_rate: Option<f64>,
    pub latency: Option<Latency>,
    pub lag: Option<f64>,
    pub metrics_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsView {
    pub events: u64,
    pub users: u64,
    pub items: u64,
    pub ratings: u64,
    pub embedded_items: u64,
    pub embedded_users: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanSummary {
    pub created_at_ms: i64,
    pub step_seconds: u32,
    pub dry_run: bool,
    pub solver: String,
    pub solve_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub at_ms: i64,
    pub rounds: u64,
    pub refresh_ms: u32,
    pub services: Vec<ServiceView>,
    pub stats: Option<StatsView>,
    pub stats_error: Option<String>,
    pub plan: Option<PlanSummary>,
    pub plan_error: Option<String>,
}

fn split<T, U>(r: &Read<T>, f: impl FnOnce(&T) -> U) -> (Option<U>, Option<String>) {
    match r {
        Ok(v) => (Some(f(v)), None),
        Err(e) => (None, Some(e.clone())),
    }
}

pub fn overview(s: &Snapshot) -> Overview {
    let services = s
        .services
        .iter()
        .map(|svc| {
            let plan = s.deployment_of(&svc.target);
            let latest = svc.latest.as_ref();
            ServiceView {
                name: svc.target.name,
                process: svc.target.process,
                url: svc.target.url.clone(),
                health: svc.health.clone(),
                deployment: plan.map(|p| p.deployment.clone()),
                replicas: plan.map(|p| Replicas {
                    current: p.current_replicas,
                    planned: charts::requested(p),
                }),
                request_rate: svc
                    .previous
                    .as_ref()
                    .zip(latest)
                    .and_then(|(a, b)| window::request_rate(a, b)),
                latency: latest.and_then(|b| window::p99(svc.previous.as_ref(), b)),
                lag: svc
                    .target
                    .lag_gauge
                    .zip(latest)
                    .and_then(|(g, b)| window::lag(b, g)),
                metrics_error: svc.metrics_error.clone(),
            }
        })
        .collect();
    let (stats, stats_error) = split(&s.stats, |st| StatsView {
        events: st.events,
        users: st.users,
        items: st.items,
        ratings: st.ratings,
        embedded_items: st.embedded_items,
        embedded_users: st.embedded_users,
    });
    let (plan, plan_error) = split(&s.plan, plan_summary);
    Overview {
        at_ms: s.at_ms,
        rounds: s.rounds,
        refresh_ms: s.refresh_ms,
        services,
        stats,
        stats_error,
        plan,
        plan_error,
    }
}

fn plan_summary(p: &Plan) -> PlanSummary {
    PlanSummary {
        created_at_ms: p.created_at_ms,
        step_seconds: p.step_seconds,
        dry_run: p.dry_run,
        solver: p.solver.clone(),
        solve_ms: p.solve_ms,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentsView {
    pub plan: Option<PlanSummary>,
    pub plan_error: Option<String>,
    pub deployments: Vec<DeploymentChart>,
}

pub fn deployments(s: &Snapshot) -> DeploymentsView {
    let (plan, plan_error) = split(&s.plan, plan_summary);
    let deployments = s
        .plan
        .as_ref()
        .map(|p| {
            p.deployments
                .iter()
                .map(|d| {
                    let forecast = match s.forecasts.get(&d.deployment) {
                        Some(Ok(f)) => Ok(f),
                        Some(Err(e)) => Err(e.as_str()),
                        None => Err(NOT_READ),
                    };
                    charts::deployment_chart(
                        d,
                        p.created_at_ms,
                        p.step_seconds,
                        s.history.deployments.get(&d.deployment),
                        forecast,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    DeploymentsView {
        plan,
        plan_error,
        deployments,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelView {
    pub version: String,
    pub algorithm: &'static str,
    pub factors: u32,
    pub users: u64,
    pub items: u64,
    pub trained_at_ms: i64,
    /// What training reported (fit seconds, interactions, validation figures).
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbedModelView {
    pub model: String,
    pub dimension: u32,
    pub max_seq_length: u32,
    pub device: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelsView {
    pub current: Option<ModelView>,
    pub error: Option<String>,
    /// Versions seen current since the console started, newest first.
    pub seen: Vec<ModelSeen>,
    pub embed: Option<EmbedModelView>,
    pub embed_error: Option<String>,
}

pub fn models(s: &Snapshot) -> ModelsView {
    let (current, error) = split(&s.model, |m| ModelView {
        version: m.version.clone(),
        algorithm: algorithm_name(m.algorithm),
        factors: m.factors,
        users: m.users,
        items: m.items,
        trained_at_ms: m.trained_at_ms,
        metrics: m.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    });
    let (embed, embed_error) = split(&s.embed_model, |m| EmbedModelView {
        model: m.model.clone(),
        dimension: m.dimension,
        max_seq_length: m.max_seq_length,
        device: m.device.clone(),
    });
    ModelsView {
        current,
        error,
        seen: s.models_seen.iter().rev().cloned().collect(),
        embed,
        embed_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recalloc_proto::v1::DeploymentPlan;

    fn targets() -> Vec<Target> {
        vec![
            Target {
                name: "featurizer",
                process: "recalloc-featurizer",
                url: "http://127.0.0.1:9105".into(),
                lag_gauge: Some("recalloc_featurizer_consumer_lag"),
            },
            Target {
                name: "rank",
                process: "recalloc-rank",
                url: "http://127.0.0.1:9103".into(),
                lag_gauge: None,
            },
        ]
    }

    fn scrape(at_ms: i64, text: &str) -> Scrape {
        Scrape {
            at_ms,
            exposition: crate::prom::parse(text).unwrap(),
        }
    }

    #[test]
    fn overview_joins_health_metrics_and_the_plan() {
        let mut s = Snapshot::new(targets(), 1000);
        let o = overview(&s);
        assert_eq!(o.services[0].health, Health::Unknown);
        assert_eq!(o.stats_error.as_deref(), Some(NOT_READ));

        s.services[0].health = Health::Ready;
        s.services[0].scraped(Ok(scrape(
            0,
            "recalloc_featurizer_consumer_lag{partition=\"0\"} 5\n",
        )));
        s.services[1].health = Health::Down("connection refused".into());
        s.services[1].scraped(Ok(scrape(
            0,
            "recalloc_grpc_requests_total{method=\"/r\",code=\"0\"} 10\n",
        )));
        s.services[1].scraped(Ok(scrape(
            2000,
            "recalloc_grpc_requests_total{method=\"/r\",code=\"0\"} 30\n",
        )));
        s.services[1].scraped(Err("timed out".into()));
        s.planned(Ok(Plan {
            created_at_ms: 5,
            step_seconds: 10,
            dry_run: true,
            solver: "dp".into(),
            deployments: vec![DeploymentPlan {
                deployment: "recalloc-rank".into(),
                current_replicas: 2,
                replicas: vec![2, 3, 3],
                demand: vec![1.0],
                capacity_per_replica: 1.0,
                applied: false,
            }],
            ..Default::default()
        }));
        let o = overview(&s);
        let (f, r) = (&o.services[0], &o.services[1]);
        assert_eq!((f.lag, f.replicas), (Some(5.0), None));
        assert_eq!(
            r.request_rate,
            Some(10.0),
            "the rate survives a failed scrape"
        );
        assert_eq!(r.metrics_error.as_deref(), Some("timed out"));
        assert_eq!(
            r.replicas,
            Some(Replicas {
                current: 2,
                planned: 3
            })
        );
        assert_eq!(r.deployment.as_deref(), Some("recalloc-rank"));
        assert!(o.plan.unwrap().dry_run);
        let json = serde_json::to_value(&r.health).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"state": "down", "detail": "connection refused"})
        );

        let d = deployments(&s);
        assert_eq!(d.deployments.len(), 1);
        assert_eq!(d.deployments[0].forecast_error.as_deref(), Some(NOT_READ));
    }

    #[test]
    fn a_release_prefix_and_the_charts_cpu_variant_find_the_deployment() {
        let mut s = Snapshot::new(
            vec![Target {
                name: "embed",
                process: "recalloc-embed",
                url: "http://127.0.0.1:9102".into(),
                lag_gauge: None,
            }],
            1000,
        );
        let plan = |names: &[&str]| Plan {
            deployments: names
                .iter()
                .enumerate()
                .map(|(n, d)| DeploymentPlan {
                    deployment: d.to_string(),
                    current_replicas: n as u32 + 1,
                    replicas: vec![n as u32 + 1],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        s.planned(Ok(plan(&["shop-embed-worker", "shop-embed-cpu"])));
        let o = overview(&s);
        assert_eq!(o.services[0].deployment.as_deref(), Some("shop-embed-cpu"));
        assert_eq!(o.services[0].replicas.map(|r| r.current), Some(2));
        s.planned(Ok(plan(&["shop-embed-cpu", "shop-embed"])));
        let o = overview(&s);
        assert_eq!(o.services[0].deployment.as_deref(), Some("shop-embed"));
        s.planned(Ok(plan(&["shop-embed-worker"])));
        assert_eq!(overview(&s).services[0].deployment, None);
    }

    #[test]
    fn models_remember_the_versions_seen() {
        let mut s = Snapshot::new(targets(), 1000);
        let info = |v: &str| ModelInfo {
            version: v.into(),
            algorithm: Algorithm::Hybrid as i32,
            trained_at_ms: 7,
            metrics: [("fit_seconds".to_string(), 1.5)].into(),
            ..Default::default()
        };
        s.modelled(Ok(info("v1")), 100);
        s.modelled(Ok(info("v1")), 200);
        s.modelled(Err("rank: unavailable".into()), 300);
        s.modelled(Ok(info("v2")), 400);
        let m = models(&s);
        let c = m.current.unwrap();
        assert_eq!((c.version.as_str(), c.algorithm), ("v2", "hybrid"));
        assert_eq!(c.metrics["fit_seconds"], 1.5);
        let seen: Vec<(&str, i64)> = m
            .seen
            .iter()
            .map(|s| (s.version.as_str(), s.first_seen_ms))
            .collect();
        assert_eq!(seen, [("v2", 400), ("v1", 100)]);
        assert_eq!(source_name(RecommendationSource::FoldIn as i32), "fold_in");
    }
}
