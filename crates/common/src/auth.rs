//! A bearer token guarding the calls that change state (ingest writes, training): servers
//! refuse them UNAUTHENTICATED without `authorization: Bearer <token>`; reads stay open. The
//! token comes from `security.token` (`RECALLOC_SECURITY_TOKEN`) or the file named by
//! `security.token_file` (a mounted Secret), and is never logged: [`Secret`]'s Debug and
//! Display print a placeholder. No token configured means no guard (the local cluster).

pub use crate::secret::Secret;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The configured token: `security.token`, else the first line of `security.token_file`;
/// `None` when neither is set.
pub fn token(cfg: &crate::config::SecurityConfig) -> Result<Option<Secret>, String> {
    if !cfg.token.is_empty() {
        return Ok(Some(cfg.token.clone()));
    }
    if cfg.token_file.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&cfg.token_file).map_err(|e| {
        format!(
            "invalid config key security.token_file: cannot read {}: {e}",
            cfg.token_file
        )
    })?;
    let t = text.lines().next().unwrap_or("").trim();
    if t.is_empty() {
        return Err(format!(
            "invalid config key security.token_file: {} is empty",
            cfg.token_file
        ));
    }
    Ok(Some(Secret::new(t)))
}

/// Equal-time comparison, so the time a refusal takes does not tell how much of a guess was
/// right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks an `authorization` header value against the token: `Err` says why it is refused
/// (missing, or not the token). Shared by the gRPC guard and the console's HTTP API.
pub fn check_bearer(authorization: Option<&str>, token: &Secret) -> Result<(), &'static str> {
    match authorization.and_then(|v| v.strip_prefix("Bearer ")) {
        None => Err("this call needs `authorization: Bearer <token>`"),
        Some(g) if !same(g.as_bytes(), token.expose().as_bytes()) => {
            Err("the bearer token is not valid")
        }
        Some(_) => Ok(()),
    }
}

/// Tower layer for tonic servers: the gRPC methods in `protected` (full paths such as
/// `/recalloc.v1.Ingest/RecordEvents`) need the bearer token.
#[derive(Clone)]
pub struct RequireToken {
    token: Option<Arc<Secret>>,
    protected: &'static [&'static str],
}

impl RequireToken {
    pub fn new(token: Option<Secret>, protected: &'static [&'static str]) -> Self {
        Self {
            token: token.map(Arc::new),
            protected,
        }
    }
}

impl<S> tower::Layer<S> for RequireToken {
    type Service = TokenGuard<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TokenGuard {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct TokenGuard<S> {
    inner: S,
    layer: RequireToken,
}

impl<S, B, RB> tower::Service<http::Request<B>> for TokenGuard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(token) = &self.layer.token
            && self.layer.protected.contains(&req.uri().path())
        {
            let given = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if let Err(msg) = check_bearer(given, token) {
                let response = tonic::Status::unauthenticated(msg).into_http::<RB>();
                return Box::pin(async move { Ok(response) });
            }
        }
        Box::pin(self.inner.call(req))
    }
}

/// Client side: adds the bearer token (when one is configured) to every call.
#[derive(Clone, Default)]
pub struct BearerToken(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl BearerToken {
    pub fn new(token: Option<&Secret>) -> Result<Self, String> {
        token
            .map(|t| {
                format!("Bearer {}", t.expose())
                    .parse()
                    .map_err(|_| "the token has characters a header cannot carry".to_string())
            })
            .transpose()
            .map(Self)
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print_and_files_are_read() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"<redacted>\"");
        let cfg = crate::config::SecurityConfig {
            token: s.clone(),
            token_file: String::new(),
            ..Default::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
        assert_eq!(token(&cfg).unwrap(), Some(s));
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, b"from-file\n").unwrap();
        let cfg = crate::config::SecurityConfig {
            token: Secret::default(),
            token_file: f.path().display().to_string(),
            ..Default::default()
        };
        assert_eq!(token(&cfg).unwrap(), Some(Secret::new("from-file")));
        let cfg = crate::config::SecurityConfig {
            token: Secret::default(),
            token_file: "/nonexistent/token".into(),
            ..Default::default()
        };
        assert!(token(&cfg).unwrap_err().contains("security.token_file"));
        assert_eq!(token(&Default::default()).unwrap(), None);
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
        let t = Secret::new("abc");
        assert_eq!(check_bearer(Some("Bearer abc"), &t), Ok(()));
        assert!(check_bearer(Some("Bearer abd"), &t).is_err());
        assert!(check_bearer(Some("abc"), &t).is_err());
        assert!(check_bearer(None, &t).is_err());
    }
}
