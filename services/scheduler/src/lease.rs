//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several scheduler replicas
//! only one scales Deployments.
//!
//! Each round ([`LeaderElector::try_acquire_or_renew`]) reads the Lease and then, with an
//! optimistic-concurrency write (`resourceVersion` from the read, or a create), either renews
//! our hold, takes over an expired one, or leaves it to the live holder. A lost race (409)
//! makes us a follower for this round, never an error.
//!
//! Expiry is judged from the Lease's own `renewTime + leaseDurationSeconds` against our clock,
//! so replicas' clocks should agree to well within the lease duration.
//!
//! [`run_election`] holds rounds for as long as the process acts, keeping the leader flag the
//! control loop reads and the `kubernetes` readiness dependency current.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use recalloc_common::{Metrics, Readiness};

use crate::scale::FIELD_MANAGER;

const LEADER: &str = "recalloc_scheduler_leader";

/// Our part in the election after a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// We hold the Lease until `renewTime + leaseDurationSeconds`.
    Leader,
    /// Someone else holds it. `holder` is `None` when we lost a write race and did not learn
    /// the winner (it will be known on the next round).
    Follower { holder: Option<String> },
}

impl Role {
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader)
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease_seconds: u32,
}

impl LeaderElector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_seconds: u32,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_seconds,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn lease_seconds(&self) -> u32 {
        self.lease_seconds
    }

    /// One election round at the current time; see [`Self::try_acquire_or_renew_at`].
    pub async fn try_acquire_or_renew(&self) -> Result<Role, kube::Error> {
        self.try_acquire_or_renew_at(Timestamp::now()).await
    }

    /// One election round, taking `now` as the current time:
    /// * no Lease: create it held by us -> [`Role::Leader`];
    /// * held by us: renew `renewTime` -> Leader;
    /// * no holder, no `renewTime`, or `renewTime + leaseDurationSeconds <= now`: take it over
    ///   (`acquireTime = now`, `leaseTransitions + 1`) -> Leader;
    /// * otherwise -> [`Role::Follower`] with the holder.
    ///
    /// A 409 on the create or replace (another replica wrote first) -> Follower, not an error.
    pub async fn try_acquire_or_renew_at(&self, now: Timestamp) -> Result<Role, kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return self.create(now).await;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() == Some(self.identity.as_str()) {
            let spec = LeaseSpec {
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(self.lease_duration()),
                ..spec
            };
            return self.replace(lease, spec, "renew").await;
        }
        if holder.is_some() && !expired(&spec, now) {
            return Ok(Role::Follower { holder });
        }
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0).saturating_add(1)),
            ..spec
        };
        let role = self.replace(lease, spec, "take over").await?;
        if role.is_leader() {
            tracing::info!(lease = %self.name, identity = %self.identity, previous = ?holder, "took over the lease");
        }
        Ok(role)
    }

    /// On shutdown: if we hold the Lease, clear its `holderIdentity` so another replica takes
    /// over at its next round instead of waiting out the lease. Conflicts (someone else wrote
    /// it meanwhile) and a missing Lease are ignored.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        let spec = LeaseSpec {
            holder_identity: None,
            ..spec
        };
        self.replace(lease, spec, "release").await?;
        tracing::info!(lease = %self.name, identity = %self.identity, "released the lease");
        Ok(())
    }

    async fn create(&self, now: Timestamp) -> Result<Role, kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.lease_duration()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&post_params(), &lease).await {
            Ok(_) => {
                tracing::info!(lease = %self.name, identity = %self.identity, "created the lease");
                Ok(Role::Leader)
            }
            Err(e) if is_conflict(&e) => {
                tracing::debug!(lease = %self.name, "lost the race to create the lease");
                Ok(Role::Follower { holder: None })
            }
            Err(e) => Err(e),
        }
    }

    /// PUTs `lease` (keeping the `resourceVersion` it was read with) with `spec`.
    async fn replace(
        &self,
        lease: Lease,
        spec: LeaseSpec,
        what: &str,
    ) -> Result<Role, kube::Error> {
        let lease = Lease {
            spec: Some(spec),
            ..lease
        };
        match self.api.replace(&self.name, &post_params(), &lease).await {
            Ok(_) => Ok(Role::Leader),
            Err(e) if is_conflict(&e) => {
                tracing::debug!(lease = %self.name, "lost the race to {what} the lease");
                Ok(Role::Follower { holder: None })
            }
            Err(e) => Err(e),
        }
    }

    fn lease_duration(&self) -> i32 {
        i32::try_from(self.lease_seconds).unwrap_or(i32::MAX)
    }
}

/// How often [`run_election`] holds a round: three times per lease period (at least every
/// 0.2 s), so a hold is renewed well before it lapses.
pub fn round_interval(lease_seconds: u32) -> Duration {
    Duration::from_secs_f64((lease_seconds as f64 / 3.0).max(0.2))
}

/// Holds an election `round` every `every` until `stop` resolves (a round in progress then
/// stops where it is). After each round `leader` says whether this replica may act, the
/// `recalloc_scheduler_leader` gauge follows it, and `readiness` records whether the API
/// server answered. (The round is the cluster's: `Cluster::election_round`.)
pub async fn run_election<Round, Fut>(
    mut round: Round,
    leader: Arc<AtomicBool>,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
    every: Duration,
    stop: impl Future<Output = ()>,
) where
    Round: FnMut() -> Fut,
    Fut: Future<Output = Result<Role, String>>,
{
    let rounds = async {
        loop {
            let result = round().await;
            let is_leader = matches!(result, Ok(Role::Leader));
            if leader.swap(is_leader, Ordering::SeqCst) != is_leader {
                match &result {
                    Ok(Role::Follower { holder }) => {
                        tracing::info!(holder = ?holder, "following")
                    }
                    _ => tracing::info!(leader = is_leader, "leadership changed"),
                }
            }
            metrics.set_gauge(
                LEADER,
                "1 while this replica holds the lease",
                &[],
                f64::from(u8::from(is_leader)),
            );
            readiness.record("kubernetes", result.map(|_| ())).await;
            tokio::time::sleep(every).await;
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = rounds => {}
    }
}

/// Whether the hold recorded in `spec` has lapsed at `now`: no `renewTime`, or
/// `renewTime + leaseDurationSeconds <= now` (a missing duration counts as 0).
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(MicroTime(renewed)) = spec.renew_time else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    match renewed.checked_add(duration) {
        Ok(until) => until <= now,
        Err(_) => duration.is_negative(),
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

/// 409: `Conflict` (stale `resourceVersion` on a replace) or `AlreadyExists` (create).
fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 409 || s.is_conflict() || s.is_already_exists())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::mock_api::{Exchange, client, converse, status};

    const LEASES: &str =
        "/apis/coordination.k8s.io/v1/namespaces/ns/leases?fieldManager=recalloc-scheduler";
    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/recalloc-scheduler";
    const LEASE_PUT: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/recalloc-scheduler?fieldManager=recalloc-scheduler";
    const ME: &str = "scheduler-7f9c-abcde";
    const OTHER: &str = "scheduler-7f9c-xyz12";

    fn now() -> Timestamp {
        "2025-06-01T12:00:30Z".parse().unwrap()
    }

    fn elector(client: kube::Client) -> LeaderElector {
        LeaderElector::new(client, "ns", "recalloc-scheduler", ME, 15)
    }

    /// The Lease as the API server returns it, at `resource_version`, with `spec`.
    fn lease(resource_version: &str, spec: Value) -> Value {
        json!({
            "kind": "Lease",
            "apiVersion": "coordination.k8s.io/v1",
            "metadata": {
                "name": "recalloc-scheduler",
                "namespace": "ns",
                "uid": "0b6f7c1e-2f55-4d2e-9a1c-7c1c3f0d9e21",
                "resourceVersion": resource_version,
                "creationTimestamp": "2025-06-01T09:00:00Z"
            },
            "spec": spec
        })
    }

    /// The PUT body we send back: the read Lease (its metadata and resourceVersion) with `spec`.
    fn put_body(resource_version: &str, spec: Value) -> Value {
        lease(resource_version, spec)
    }

    fn not_found() -> Value {
        status(
            404,
            "NotFound",
            r#"leases.coordination.k8s.io "recalloc-scheduler" not found"#,
            "leases",
            "recalloc-scheduler",
        )
    }

    fn conflict() -> Value {
        status(
            409,
            "Conflict",
            r#"Operation cannot be fulfilled on leases.coordination.k8s.io "recalloc-scheduler": the object has been modified; please apply your changes to the latest version and try again"#,
            "leases",
            "recalloc-scheduler",
        )
    }

    fn other_live() -> Value {
        json!({
            "holderIdentity": OTHER,
            "leaseDurationSeconds": 15,
            "acquireTime": "2025-06-01T11:00:00.000000Z",
            "renewTime": "2025-06-01T12:00:20.000000Z",
            "leaseTransitions": 3
        })
    }

    /// Renewed 16 s before [`now`], for 15 s.
    fn other_expired() -> Value {
        json!({
            "holderIdentity": OTHER,
            "leaseDurationSeconds": 15,
            "acquireTime": "2025-06-01T11:00:00.000000Z",
            "renewTime": "2025-06-01T12:00:14.000000Z",
            "leaseTransitions": 3
        })
    }

    fn taken_over() -> Value {
        json!({
            "holderIdentity": ME,
            "leaseDurationSeconds": 15,
            "acquireTime": "2025-06-01T12:00:30.000000Z",
            "renewTime": "2025-06-01T12:00:30.000000Z",
            "leaseTransitions": 4
        })
    }

    #[tokio::test]
    async fn creates_missing_lease_and_leads() {
        let (client, handle) = client();
        let elector = elector(client);
        let spec = json!({
            "holderIdentity": ME,
            "leaseDurationSeconds": 15,
            "acquireTime": "2025-06-01T12:00:30.000000Z",
            "renewTime": "2025-06-01T12:00:30.000000Z",
            "leaseTransitions": 0
        });
        let role = converse(
            handle,
            vec![
                Exchange::get(LEASE).respond(404, not_found()),
                Exchange::post(
                    LEASES,
                    json!({
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": { "name": "recalloc-scheduler" },
                        "spec": spec
                    }),
                )
                .respond(201, lease("5001", spec.clone())),
            ],
            elector.try_acquire_or_renew_at(now()),
        )
        .await
        .unwrap();
        assert_eq!(role, Role::Leader);
    }

    #[tokio::test]
    async fn lost_create_race_follows() {
        let (client, handle) = client();
        let elector = elector(client);
        let role = converse(
            handle,
            vec![
                Exchange::get(LEASE).respond(404, not_found()),
                Exchange::post(
                    LEASES,
                    json!({
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": { "name": "recalloc-scheduler" },
                        "spec": {
                            "holderIdentity": ME,
                            "leaseDurationSeconds": 15,
                            "acquireTime": "2025-06-01T12:00:30.000000Z",
                            "renewTime": "2025-06-01T12:00:30.000000Z",
                            "leaseTransitions": 0
                        }
                    }),
                )
                .respond(
                    409,
                    status(
                        409,
                        "AlreadyExists",
                        r#"leases.coordination.k8s.io "recalloc-scheduler" already exists"#,
                        "leases",
                        "recalloc-scheduler",
                    ),
                ),
            ],
            elector.try_acquire_or_renew_at(now()),
        )
        .await
        .unwrap();
        assert_eq!(role, Role::Follower { holder: None });
    }

    #[tokio::test]
    async fn renews_own_lease() {
        let (client, handle) = client();
        let elector = elector(client);
        let held = json!({
            "holderIdentity": ME,
            "leaseDurationSeconds": 15,
            "acquireTime": "2025-06-01T11:30:00.000000Z",
            "renewTime": "2025-06-01T12:00:25.000000Z",
            "leaseTransitions": 2
        });
        let renewed = json!({
            "holderIdentity": ME,
            "leaseDurationSeconds": 15,
            "acquireTime": "2025-06-01T11:30:00.000000Z",
            "renewTime": "2025-06-01T12:00:30.000000Z",
            "leaseTransitions": 2
        });
        let role = converse(
            handle,
            vec![
                Exchange::get(LEASE).respond(200, lease("5001", held)),
                Exchange::put(LEASE_PUT, put_body("5001", renewed.clone()))
                    .respond(200, lease("5002", renewed)),
            ],
            elector.try_acquire_or_renew_at(now()),
        )
        .await
        .unwrap();
        assert_eq!(role, Role::Leader);
    }

    #[tokio::test]
    async fn takes_over_expired_lease() {
        let (client, handle) = client();
        let elector = elector(client);
        let role = converse(
            handle,
            vec![
                Exchange::get(LEASE).respond(200, lease("5001", other_expired())),
                Exchange::put(LEASE_PUT, put_body("5001", taken_over()))
                    .respond(200, lease("5002", taken_over())),
            ],
            elector.try_acquire_or_renew_at(now()),
        )
        .await
        .unwrap();
        assert_eq!(role, Role::Leader);
    }

    #[tokio::test]
    async fn takes_over_released_lease() {
        let (client, handle) = client();
        let elector = elector(client);
        let released = json!({
            "leaseDurationSeconds": 15,
            "acquireTime": "2025-06-01T11:00:00.000000Z",
            "renewTime": "2025-06-01T12:00:28.000000Z",
            "leaseTransitions": 3
        });
        let role = converse(
            handle,
            vec![
                Exchange::get(LEASE).respond(200, lease("5001", released)),
                Exchange::put(LEASE_PUT, put_body("5001", taken_over()))
                    .respond(200, lease("5002", taken_over())),
            ],
            elector.try_acquire_or_renew_at(now()),
        )
        .await
        .unwrap();
        assert_eq!(role, Role::Leader);
    }

    #[tokio::test]
    async fn follows_live_holder() {
        let (client, handle) = client();
        let elector = elector(client);
        let role = converse(
            handle,
            vec![Exchange::get(LEASE).respond(200, lease("5001", other_live()))],
            elector.try_acquire_or_renew_at(now()),
        )
        .await
        .unwrap();
        assert_eq!(
            role,
            Role::Follower {
                holder: Some(OTHER.to_owned())
            }
        );
    }

    #[tokio::test]
    async fn lost_take_over_race_follows() {
        let (client, handle) = client();
        let elector = elector(client);
        let role = converse(
            handle,
            vec![
                Exchange::get(LEASE).respond(200, lease("5001", other_expired())),
                Exchange::put(LEASE_PUT, put_body("5001", taken_over())).respond(409, conflict()),
            ],
            elector.try_acquire_or_renew_at(now()),
        )
        .await
        .unwrap();
        assert_eq!(role, Role::Follower { holder: None });
    }

    #[tokio::test]
    async fn other_api_errors_are_errors() {
        let (client, handle) = client();
        let elector = elector(client);
        let err = converse(
            handle,
            vec![Exchange::get(LEASE).respond(
                403,
                status(
                    403,
                    "Forbidden",
                    r#"leases.coordination.k8s.io "recalloc-scheduler" is forbidden: User "system:serviceaccount:ns:recalloc" cannot get resource "leases""#,
                    "leases",
                    "recalloc-scheduler",
                ),
            )],
            elector.try_acquire_or_renew_at(now()),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, kube::Error::Api(s) if s.code == 403),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn release_clears_holder() {
        let (client, handle) = client();
        let elector = elector(client);
        let held = json!({
            "holderIdentity": ME,
            "leaseDurationSeconds": 15,
            "acquireTime": "2025-06-01T11:30:00.000000Z",
            "renewTime": "2025-06-01T12:00:25.000000Z",
            "leaseTransitions": 2
        });
        let released = json!({
            "leaseDurationSeconds": 15,
            "acquireTime": "2025-06-01T11:30:00.000000Z",
            "renewTime": "2025-06-01T12:00:25.000000Z",
            "leaseTransitions": 2
        });
        converse(
            handle,
            vec![
                Exchange::get(LEASE).respond(200, lease("5001", held)),
                Exchange::put(LEASE_PUT, put_body("5001", released.clone()))
                    .respond(200, lease("5002", released)),
            ],
            elector.release(),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn release_ignores_conflict() {
        let (client, handle) = client();
        let elector = elector(client);
        let held = json!({
            "holderIdentity": ME,
            "leaseDurationSeconds": 15,
            "renewTime": "2025-06-01T12:00:25.000000Z",
            "leaseTransitions": 2
        });
        let released = json!({
            "leaseDurationSeconds": 15,
            "renewTime": "2025-06-01T12:00:25.000000Z",
            "leaseTransitions": 2
        });
        converse(
            handle,
            vec![
                Exchange::get(LEASE).respond(200, lease("5001", held)),
                Exchange::put(LEASE_PUT, put_body("5001", released)).respond(409, conflict()),
            ],
            elector.release(),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn release_leaves_others_lease_alone() {
        let (client, handle) = client();
        let elector = elector(client);
        converse(
            handle,
            vec![Exchange::get(LEASE).respond(200, lease("5001", other_live()))],
            elector.release(),
        )
        .await
        .unwrap();
    }

    #[test]
    fn expiry_boundary() {
        let spec: LeaseSpec = serde_json::from_value(other_live()).unwrap();
        let renewed: Timestamp = "2025-06-01T12:00:20Z".parse().unwrap();
        let at = |secs: i64| {
            renewed
                .checked_add(SignedDuration::from_secs(secs))
                .unwrap()
        };
        assert!(!expired(&spec, at(14)));
        assert!(expired(&spec, at(15)));
        assert!(expired(&LeaseSpec::default(), now()));
    }
}
