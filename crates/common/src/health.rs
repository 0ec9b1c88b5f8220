//! Readiness that follows dependencies. A service starts NOT_SERVING on `grpc.health.v1` and on
//! `/readyz`, and turns SERVING only while every dependency it names answers; a watcher
//! re-checks them so a lost Redis or broker shows as not ready, and shutdown turns it off first
//! so load balancers stop sending before the server drains.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The `grpc.health.v1` service name that answers SERVING whenever the process answers at all:
/// what a liveness probe asks, so a lost dependency makes a pod unready, never restarted.
pub const LIVENESS: &str = "liveness";

pub struct Readiness {
    reporter: Option<HealthReporter>,
    services: Vec<String>,
    ready: AtomicBool,
    /// Last result per dependency: `None` when it answered, else why not.
    deps: Mutex<BTreeMap<String, Option<String>>>,
}

impl Readiness {
    /// `services` are the fully-qualified gRPC service names this process serves; a process
    /// without a gRPC server (the featurizer) passes no reporter and reports over HTTP only.
    pub fn new(reporter: Option<HealthReporter>, services: &[&str]) -> Arc<Self> {
        // Alive from the start, before any dependency is checked.
        if let (Some(r), Ok(runtime)) = (&reporter, tokio::runtime::Handle::try_current()) {
            let r = r.clone();
            runtime
                .spawn(async move { r.set_service_status(LIVENESS, ServingStatus::Serving).await });
        }
        Arc::new(Self {
            reporter,
            services: services.iter().map(|s| s.to_string()).collect(),
            ready: AtomicBool::new(false),
            deps: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Why the service is not ready, one line per failing dependency.
    pub fn report(&self) -> String {
        let deps = self.deps.lock().expect("readiness lock");
        if deps.is_empty() {
            return "no dependency checked yet".into();
        }
        deps.iter()
            .map(|(k, v)| match v {
                None => format!("{k}: ok"),
                Some(e) => format!("{k}: {e}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Records one dependency check and updates the overall status.
    pub async fn record(&self, dependency: &str, result: Result<(), String>) {
        let all_ok = {
            let mut deps = self.deps.lock().expect("readiness lock");
            // Log a failure once, not on every check.
            if let Err(e) = &result
                && deps
                    .get(dependency)
                    .is_none_or(|prev| prev.as_ref() != Some(e))
            {
                tracing::warn!(dependency, error = %e, "dependency not ready");
            }
            deps.insert(dependency.to_owned(), result.err());
            deps.values().all(Option::is_none)
        };
        self.set(all_ok).await;
    }

    /// Forces the status (shutdown sets it false before draining).
    pub async fn set(&self, ready: bool) {
        let was = self.ready.swap(ready, Ordering::SeqCst);
        if was != ready {
            tracing::info!(ready, "readiness changed");
        }
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if let Some(reporter) = &self.reporter {
            reporter
                .set_service_status(LIVENESS, ServingStatus::Serving)
                .await;
            reporter.set_service_status("", status).await;
            for s in &self.services {
                reporter.set_service_status(s, status).await;
            }
        }
    }
}
