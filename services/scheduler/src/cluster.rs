//! The Kubernetes side of the scheduler, when there is one: the client, the namespace it acts
//! in, the [`Scaler`] that reads and patches Deployments' scale, and the [`LeaderElector`]
//! that decides whether this replica may. Shared by the control loop (which scales), the
//! election (which leads) and the shutdown (which gives the Lease back).

use recalloc_common::config::Config;

use crate::lease::{LeaderElector, Role};
use crate::scale::Scaler;
use recalloc_common::serve::ServeError;

/// The cluster side, when there is one.
pub struct Cluster {
    pub scaler: Scaler,
    /// `None` when `scheduler.lease_name` is empty: this replica acts without an election.
    pub elector: Option<LeaderElector>,
    pub namespace: String,
    client: kube::Client,
}

impl Cluster {
    /// Connects as `scheduler.mode` says: `None` means dry run.
    pub async fn connect(cfg: &Config) -> Result<Option<Self>, ServeError> {
        let s = &cfg.scheduler;
        if s.mode == "dry_run" {
            return Ok(None);
        }
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) if s.mode == "auto" => {
                tracing::warn!(error = %e, "no Kubernetes cluster reachable: running dry (plans are served, not applied)");
                return Ok(None);
            }
            Err(e) => {
                return Err(ServeError::dependency(
                    "scheduler.mode is kube but no cluster is reachable",
                    e.to_string(),
                ));
            }
        };
        Ok(Some(Self::with_client(client, cfg)))
    }

    /// The cluster side over a given client (tests pass a mock API server).
    pub fn with_client(client: kube::Client, cfg: &Config) -> Self {
        let s = &cfg.scheduler;
        let namespace = if s.namespace.is_empty() {
            client.default_namespace().to_string()
        } else {
            s.namespace.clone()
        };
        let elector = if s.lease_name.is_empty() {
            tracing::info!(%namespace, "no lease configured: acting on the cluster without an election (run one replica)");
            None
        } else {
            let identity = identity(&s.identity);
            tracing::info!(%namespace, %identity, lease = %s.lease_name, "acting on the cluster when holding the lease");
            Some(LeaderElector::new(
                client.clone(),
                &namespace,
                &s.lease_name,
                &identity,
                s.lease_seconds,
            ))
        };
        Self {
            scaler: Scaler::new(client.clone(), &namespace),
            elector,
            namespace,
            client,
        }
    }

    /// One election round: the Lease's when there is one, else whether the API server
    /// answers (without a Lease this replica leads whenever it does).
    pub async fn election_round(&self) -> Result<Role, String> {
        match &self.elector {
            Some(elector) => elector
                .try_acquire_or_renew()
                .await
                .map_err(|e| e.to_string()),
            None => self
                .client
                .apiserver_version()
                .await
                .map(|_| Role::Leader)
                .map_err(|e| e.to_string()),
        }
    }
}

/// This replica's name in the Lease: configured, else `$POD_NAME`, else the host name.
fn identity(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("recalloc-scheduler-{}", std::process::id()))
}
