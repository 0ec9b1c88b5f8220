//! Actuation: reads and sets a Deployment's replicas through its `scale` subresource, and
//! records the plan that led to the decision in an annotation on the Deployment.
//!
//! Every write is a JSON merge patch (`application/merge-patch+json`) sent with the field
//! manager [`FIELD_MANAGER`], so `kubectl get deploy -o yaml --show-managed-fields` tells who
//! set `spec.replicas`.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// Annotation on each managed Deployment holding the JSON of the last plan applied to it.
pub const PLAN_ANNOTATION: &str = "recalloc.io/plan";

/// The field manager named in every write this crate makes to the API server.
pub const FIELD_MANAGER: &str = "recalloc-scheduler";

/// Why reading or scaling a Deployment failed.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    /// The Deployment (or its namespace) does not exist: the API server answered 404.
    #[error("deployment {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    /// Any other API or transport error.
    #[error("deployment {namespace}/{name}: {source}")]
    Kube {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// `min > max`: no replica count satisfies the bounds. Nothing was sent.
    #[error("deployment {namespace}/{name}: replica bounds min {min} > max {max}")]
    InvalidBounds {
        namespace: String,
        name: String,
        min: u32,
        max: u32,
    },
}

/// What [`Scaler::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// `spec.replicas` read from the scale subresource before acting.
    pub previous: u32,
    /// The replica count now requested (the target clamped into `[min, max]`).
    pub replicas: u32,
    /// Whether the scale subresource was patched (`replicas != previous`).
    pub changed: bool,
}

/// Reads and scales the Deployments of one namespace.
#[derive(Clone)]
pub struct Scaler {
    api: Api<Deployment>,
    namespace: String,
}

impl Scaler {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `spec.replicas` from `GET .../deployments/{name}/scale`.
    ///
    /// The API server omits `spec.replicas` when it is 0 (`omitempty`), so a missing value
    /// reads as 0.
    pub async fn current_replicas(&self, name: &str) -> Result<u32, ScaleError> {
        let scale = self
            .api
            .get_scale(name)
            .await
            .map_err(|e| self.error(name, e))?;
        let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        Ok(u32::try_from(replicas).unwrap_or(0))
    }

    /// Clamps `replicas` into `[min, max]`; when that differs from the current `spec.replicas`,
    /// patches the scale subresource with `{"spec":{"replicas":n}}`; then, given a plan,
    /// patches the Deployment's `metadata.annotations[PLAN_ANNOTATION] = plan_json`.
    pub async fn apply(
        &self,
        name: &str,
        replicas: u32,
        min: u32,
        max: u32,
        plan_json: Option<&str>,
    ) -> Result<Applied, ScaleError> {
        if min > max {
            return Err(ScaleError::InvalidBounds {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
                min,
                max,
            });
        }
        let target = replicas.clamp(min, max);
        let previous = self.current_replicas(name).await?;
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let changed = target != previous;
        if changed {
            let patch = json!({ "spec": { "replicas": target } });
            self.api
                .patch_scale(name, &params, &Patch::Merge(&patch))
                .await
                .map_err(|e| self.error(name, e))?;
            tracing::info!(
                namespace = %self.namespace, deployment = name, previous, replicas = target,
                "scaled deployment"
            );
        }
        if let Some(plan_json) = plan_json {
            let patch = json!({ "metadata": { "annotations": { PLAN_ANNOTATION: plan_json } } });
            self.api
                .patch(name, &params, &Patch::Merge(&patch))
                .await
                .map_err(|e| self.error(name, e))?;
        }
        Ok(Applied {
            previous,
            replicas: target,
            changed,
        })
    }

    fn error(&self, name: &str, source: kube::Error) -> ScaleError {
        let namespace = self.namespace.clone();
        let name = name.to_owned();
        match &source {
            kube::Error::Api(status) if status.is_not_found() => {
                ScaleError::NotFound { namespace, name }
            }
            _ => ScaleError::Kube {
                namespace,
                name,
                source,
            },
        }
    }
}

/// A scripted Kubernetes API server for tests: a `tower_test` mock pair behind a real
/// [`kube::Client`], and a checker that asserts each request exactly and answers it.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_api::{Exchange, client, converse, status};

    const SCALE: &str = "/apis/apps/v1/namespaces/ns/deployments/web/scale";
    const SCALE_PATCH: &str =
        "/apis/apps/v1/namespaces/ns/deployments/web/scale?fieldManager=recalloc-scheduler";
    const DEPLOYMENT_PATCH: &str =
        "/apis/apps/v1/namespaces/ns/deployments/web?fieldManager=recalloc-scheduler";
    const PLAN: &str = r#"{"replicas":5,"forecast":42.5}"#;

    /// An `autoscaling/v1` Scale as the API server returns it; `spec.replicas` is omitted at 0.
    fn scale(spec: u32, status: u32) -> serde_json::Value {
        let mut scale = json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": "web",
                "namespace": "ns",
                "uid": "5d0e5c5a-6f0b-4b8a-9d43-1f1b4f4f8c11",
                "resourceVersion": "1042",
                "creationTimestamp": "2025-05-01T08:00:00Z"
            },
            "spec": { "replicas": spec },
            "status": { "replicas": status, "selector": "app=web" }
        });
        if spec == 0 {
            scale["spec"] = json!({});
        }
        scale
    }

    fn deployment(replicas: u32, plan: &str) -> serde_json::Value {
        json!({
            "kind": "Deployment",
            "apiVersion": "apps/v1",
            "metadata": {
                "name": "web",
                "namespace": "ns",
                "uid": "5d0e5c5a-6f0b-4b8a-9d43-1f1b4f4f8c11",
                "resourceVersion": "1043",
                "generation": 7,
                "creationTimestamp": "2025-05-01T08:00:00Z",
                "annotations": {
                    "deployment.kubernetes.io/revision": "3",
                    PLAN_ANNOTATION: plan
                }
            },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web" } },
                    "spec": { "containers": [{ "name": "web", "image": "web:1.4.2" }] }
                },
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": { "maxUnavailable": "25%", "maxSurge": "25%" }
                }
            },
            "status": {
                "observedGeneration": 6,
                "replicas": 2,
                "readyReplicas": 2,
                "availableReplicas": 2,
                "updatedReplicas": 2
            }
        })
    }

    fn annotation_patch() -> Exchange {
        Exchange::merge_patch(
            DEPLOYMENT_PATCH,
            json!({ "metadata": { "annotations": { "recalloc.io/plan": PLAN } } }),
        )
    }

    #[tokio::test]
    async fn current_replicas_reads_scale_spec() {
        let (client, handle) = client();
        let scaler = Scaler::new(client, "ns");
        let got = converse(
            handle,
            vec![Exchange::get(SCALE).respond(200, scale(3, 2))],
            scaler.current_replicas("web"),
        )
        .await;
        assert_eq!(got.unwrap(), 3);
    }

    #[tokio::test]
    async fn current_replicas_reads_omitted_spec_as_zero() {
        let (client, handle) = client();
        let scaler = Scaler::new(client, "ns");
        let got = converse(
            handle,
            vec![Exchange::get(SCALE).respond(200, scale(0, 0))],
            scaler.current_replicas("web"),
        )
        .await;
        assert_eq!(got.unwrap(), 0);
    }

    #[tokio::test]
    async fn apply_scales_up_then_annotates() {
        let (client, handle) = client();
        let scaler = Scaler::new(client, "ns");
        let applied = converse(
            handle,
            vec![
                Exchange::get(SCALE).respond(200, scale(2, 2)),
                Exchange::merge_patch(SCALE_PATCH, json!({ "spec": { "replicas": 5 } }))
                    .respond(200, scale(5, 2)),
                annotation_patch().respond(200, deployment(5, PLAN)),
            ],
            scaler.apply("web", 5, 1, 10, Some(PLAN)),
        )
        .await
        .unwrap();
        assert_eq!(
            applied,
            Applied {
                previous: 2,
                replicas: 5,
                changed: true
            }
        );
    }

    #[tokio::test]
    async fn apply_without_a_plan_to_record_touches_only_the_scale() {
        // record_plan = false: the Role then needs no `patch` on deployments.
        let (client, handle) = client();
        let scaler = Scaler::new(client, "ns");
        let applied = converse(
            handle,
            vec![
                Exchange::get(SCALE).respond(200, scale(2, 2)),
                Exchange::merge_patch(SCALE_PATCH, json!({ "spec": { "replicas": 5 } }))
                    .respond(200, scale(5, 2)),
            ],
            scaler.apply("web", 5, 1, 10, None),
        )
        .await
        .unwrap();
        assert_eq!(applied.replicas, 5);
    }

    #[tokio::test]
    async fn apply_without_change_only_annotates() {
        let (client, handle) = client();
        let scaler = Scaler::new(client, "ns");
        let applied = converse(
            handle,
            vec![
                Exchange::get(SCALE).respond(200, scale(5, 5)),
                annotation_patch().respond(200, deployment(5, PLAN)),
            ],
            scaler.apply("web", 5, 1, 10, Some(PLAN)),
        )
        .await
        .unwrap();
        assert_eq!(
            applied,
            Applied {
                previous: 5,
                replicas: 5,
                changed: false
            }
        );
    }

    #[tokio::test]
    async fn apply_clamps_to_max() {
        let (client, handle) = client();
        let scaler = Scaler::new(client, "ns");
        let applied = converse(
            handle,
            vec![
                Exchange::get(SCALE).respond(200, scale(4, 4)),
                Exchange::merge_patch(SCALE_PATCH, json!({ "spec": { "replicas": 8 } }))
                    .respond(200, scale(8, 4)),
                annotation_patch().respond(200, deployment(8, PLAN)),
            ],
            scaler.apply("web", 50, 2, 8, Some(PLAN)),
        )
        .await
        .unwrap();
        assert_eq!(
            applied,
            Applied {
                previous: 4,
                replicas: 8,
                changed: true
            }
        );
    }

    #[tokio::test]
    async fn apply_clamps_to_min_from_zero() {
        let (client, handle) = client();
        let scaler = Scaler::new(client, "ns");
        let applied = converse(
            handle,
            vec![
                Exchange::get(SCALE).respond(200, scale(0, 0)),
                Exchange::merge_patch(SCALE_PATCH, json!({ "spec": { "replicas": 2 } }))
                    .respond(200, scale(2, 0)),
                annotation_patch().respond(200, deployment(2, PLAN)),
            ],
            scaler.apply("web", 0, 2, 8, Some(PLAN)),
        )
        .await
        .unwrap();
        assert_eq!(
            applied,
            Applied {
                previous: 0,
                replicas: 2,
                changed: true
            }
        );
    }

    #[tokio::test]
    async fn apply_to_missing_deployment_is_not_found() {
        let (client, handle) = client();
        let scaler = Scaler::new(client, "ns");
        let err = converse(
            handle,
            vec![Exchange::get(SCALE).respond(
                404,
                status(
                    404,
                    "NotFound",
                    r#"deployments.apps "web" not found"#,
                    "deployments",
                    "web",
                ),
            )],
            scaler.apply("web", 5, 1, 10, Some(PLAN)),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, ScaleError::NotFound { namespace, name } if namespace == "ns" && name == "web"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "deployment ns/web not found");
    }

    #[tokio::test]
    async fn apply_reports_other_api_errors() {
        let (client, handle) = client();
        let scaler = Scaler::new(client, "ns");
        let err = converse(
            handle,
            vec![
                Exchange::get(SCALE).respond(200, scale(2, 2)),
                Exchange::merge_patch(SCALE_PATCH, json!({ "spec": { "replicas": 5 } })).respond(
                    403,
                    status(
                        403,
                        "Forbidden",
                        "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:ns:recalloc\" cannot patch resource \"deployments/scale\"",
                        "deployments",
                        "web",
                    ),
                ),
            ],
            scaler.apply("web", 5, 1, 10, Some(PLAN)),
        )
        .await
        .unwrap_err();
        match &err {
            ScaleError::Kube {
                source: kube::Error::Api(s),
                ..
            } => assert_eq!(s.code, 403),
            other => panic!("expected a Kube error, got {other:?}"),
        }
        assert!(err.to_string().starts_with("deployment ns/web: "), "{err}");
    }

    #[tokio::test]
    async fn apply_rejects_inverted_bounds_without_requests() {
        let (client, handle) = client();
        let scaler = Scaler::new(client, "ns");
        let err = converse(handle, vec![], scaler.apply("web", 5, 9, 3, Some(PLAN)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ScaleError::InvalidBounds { min: 9, max: 3, .. }),
            "{err:?}"
        );
    }
}
