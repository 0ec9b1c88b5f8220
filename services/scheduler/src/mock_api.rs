//! A mock Kubernetes API server for tests: a tower-test pair behind a real `kube::Client`,
//! answering a script of expected requests (method, path and query, content type, JSON body
//! all checked exactly), as kube-rs/controller-rs tests its reconcilers.

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
