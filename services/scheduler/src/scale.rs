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
    /// patches the scale subresource with `{"spec":{"replicas":n}}`; then always patches the
    /// Deployment's `metadata.annotations[PLAN_ANNOTATION] = plan_json`.
    pub async fn apply(
        &self,
        name: &str,
        replicas: u32,
        min: u32,
        max: u32,
        plan_json: &str,
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
        let patch = json!({ "metadata": { "annotations": { PLAN_ANNOTATION: plan_json } } });
        self.api
            .patch(name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| self.error(name, e))?;
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
pub(crate) mod mock_api {
    use std::cell::Cell;
    use std::future::Future;
    use std::time::Duration;

    use http::{Method, Request, Response, StatusCode, header};
    use kube::client::Body;
    use serde_json::Value;

    pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    pub const MERGE_PATCH: &str = "application/merge-patch+json";
    pub const JSON: &str = "application/json";

    /// How long the checker waits for each expected request before failing.
    const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

    /// A client whose default namespace is `ns`, talking to the returned handle.
    pub fn client() -> (kube::Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, "ns"), handle)
    }

    /// One expected request and the answer to it.
    #[derive(Debug)]
    pub struct Exchange {
        pub method: Method,
        /// Path and query, exactly as sent.
        pub uri: String,
        /// `None`: no content-type header and an empty body.
        pub content_type: Option<&'static str>,
        pub body: Option<Value>,
        pub status: StatusCode,
        pub response: Value,
    }

    impl Exchange {
        pub fn get(uri: &str) -> Self {
            Self::new(Method::GET, uri, None, None)
        }
        pub fn merge_patch(uri: &str, body: Value) -> Self {
            Self::new(Method::PATCH, uri, Some(MERGE_PATCH), Some(body))
        }
        pub fn post(uri: &str, body: Value) -> Self {
            Self::new(Method::POST, uri, Some(JSON), Some(body))
        }
        pub fn put(uri: &str, body: Value) -> Self {
            Self::new(Method::PUT, uri, Some(JSON), Some(body))
        }
        fn new(
            method: Method,
            uri: &str,
            content_type: Option<&'static str>,
            body: Option<Value>,
        ) -> Self {
            Self {
                method,
                uri: uri.to_owned(),
                content_type,
                body,
                status: StatusCode::OK,
                response: Value::Null,
            }
        }
        pub fn respond(mut self, status: u16, response: Value) -> Self {
            self.status = StatusCode::from_u16(status).unwrap();
            self.response = response;
            self
        }

        async fn serve(self, handle: &mut Handle, step: usize) {
            let expected = format!("step {step}: {} {}", self.method, self.uri);
            let (request, send) = tokio::time::timeout(REQUEST_TIMEOUT, handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("{expected}: no request came"))
                .unwrap_or_else(|| panic!("{expected}: client gone"));
            assert_eq!(request.method(), self.method, "{expected}: method");
            assert_eq!(
                split_uri(&request.uri().to_string()),
                split_uri(&self.uri),
                "{expected}: path and query (sent {})",
                request.uri()
            );
            let content_type = request
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(
                content_type.as_deref(),
                self.content_type,
                "{expected}: content-type"
            );
            let bytes = request.into_body().collect_bytes().await.unwrap();
            match &self.body {
                None => assert!(bytes.is_empty(), "{expected}: unexpected body {bytes:?}"),
                Some(body) => {
                    let sent: Value = serde_json::from_slice(&bytes)
                        .unwrap_or_else(|e| panic!("{expected}: body is not JSON: {e}"));
                    assert_eq!(&sent, body, "{expected}: body");
                }
            }
            let response = Response::builder()
                .status(self.status)
                .header(header::CONTENT_TYPE, JSON)
                .body(Body::from(serde_json::to_vec(&self.response).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    }

    /// The path, and the query's parameters in order. kube builds queries with
    /// `form_urlencoded::Serializer::new("...?")`, which puts a `&` right after the `?`
    /// (`.../scale?&fieldManager=recalloc-scheduler`); empty parameters are dropped so the
    /// scripts read naturally. A missing, extra, reordered or different parameter still fails.
    fn split_uri(uri: &str) -> (&str, Option<Vec<&str>>) {
        match uri.split_once('?') {
            None => (uri, None),
            Some((path, query)) => (
                path,
                Some(query.split('&').filter(|p| !p.is_empty()).collect()),
            ),
        }
    }

    /// Runs `code` while answering `script` in order. Fails when a request differs from the
    /// script, when an expected request does not come (within [`REQUEST_TIMEOUT`]), when `code`
    /// finishes before the script is done, or when `code` sends a request beyond it.
    pub async fn converse<T>(
        mut handle: Handle,
        script: Vec<Exchange>,
        code: impl Future<Output = T>,
    ) -> T {
        let expected = script.len();
        let served = Cell::new(0);
        let server = async {
            for (step, exchange) in script.into_iter().enumerate() {
                exchange.serve(&mut handle, step).await;
                served.set(step + 1);
            }
            if let Some((request, _)) = handle.next_request().await {
                panic!(
                    "unexpected request after the script: {} {}",
                    request.method(),
                    request.uri()
                );
            }
            // All clients dropped: nothing more can come.
            std::future::pending::<()>().await;
        };
        let out = tokio::select! {
            biased;
            () = server => unreachable!(),
            out = code => out,
        };
        assert_eq!(
            served.get(),
            expected,
            "code finished after {} of {expected} requests",
            served.get()
        );
        out
    }

    /// A `metav1.Status` failure as the API server sends it.
    pub fn status(code: u16, reason: &str, message: &str, kind: &str, name: &str) -> Value {
        serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": { "name": name, "group": "", "kind": kind },
            "code": code,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::mock_api::{Exchange, client, converse, status};
    use super::*;

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
            scaler.apply("web", 5, 1, 10, PLAN),
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
    async fn apply_without_change_only_annotates() {
        let (client, handle) = client();
        let scaler = Scaler::new(client, "ns");
        let applied = converse(
            handle,
            vec![
                Exchange::get(SCALE).respond(200, scale(5, 5)),
                annotation_patch().respond(200, deployment(5, PLAN)),
            ],
            scaler.apply("web", 5, 1, 10, PLAN),
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
            scaler.apply("web", 50, 2, 8, PLAN),
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
            scaler.apply("web", 0, 2, 8, PLAN),
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
            scaler.apply("web", 5, 1, 10, PLAN),
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
            scaler.apply("web", 5, 1, 10, PLAN),
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
        let err = converse(handle, vec![], scaler.apply("web", 5, 9, 3, PLAN))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ScaleError::InvalidBounds { min: 9, max: 3, .. }),
            "{err:?}"
        );
    }
}
