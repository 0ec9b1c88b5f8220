//! The one place that turns `[redis]` config into a connection, so every service and the CLI
//! reach Redis the same way: a single server or a Redis Cluster, with an ACL user and password,
//! over TLS when asked.
//!
//! - `redis.url` names the server (`redis://` or `rediss://`); it may still carry
//!   `user:password@` for backwards compatibility, but `redis.username`, `redis.password` and
//!   `redis.password_file` win when set.
//! - `redis.mode = "cluster"` connects to a Redis Cluster through the seed nodes in
//!   `redis.nodes` (comma-separated `host:port`; empty = the url's host and port). Commands are
//!   routed by key slot; every multi-key command, script, pipeline and MULTI recalloc sends keeps
//!   its keys in one slot (see the ingest crate's `state` module for the key layout).
//! - `redis.tls = true` (or a `rediss://` url) encrypts every connection; `redis.tls_ca_file`
//!   trusts a private CA instead of the system roots.
//!
//! The password is a [`Secret`]: it is never printed, and connection errors never contain it
//! (they come from the server or the socket, which do not echo credentials).

use crate::auth::Secret;
use crate::config::RedisConfig;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value,
};
use std::time::Duration;

/// A config problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid config key redis.{key}: {message}")]
pub struct RedisConfigError {
    pub key: &'static str,
    pub message: String,
}

fn invalid(key: &'static str, message: impl Into<String>) -> RedisConfigError {
    RedisConfigError {
        key,
        message: message.into(),
    }
}

/// Where and how to connect, validated and with the secrets read; connecting is a separate step
/// so services can retry it while they report "redis" not ready.
#[derive(Clone)]
pub enum RedisTarget {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The clients' own Debug would print the password.
        f.write_str(match self {
            RedisTarget::Single(_) => "RedisTarget::Single",
            RedisTarget::Cluster(_) => "RedisTarget::Cluster",
        })
    }
}

/// The password: `redis.password`, else the first line of `redis.password_file`, else none.
pub fn password(cfg: &RedisConfig) -> Result<Option<Secret>, RedisConfigError> {
    if !cfg.password.is_empty() {
        return Ok(Some(cfg.password.clone()));
    }
    if cfg.password_file.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&cfg.password_file).map_err(|e| {
        invalid(
            "password_file",
            format!("cannot read {}: {e}", cfg.password_file),
        )
    })?;
    let p = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if p.is_empty() {
        return Err(invalid(
            "password_file",
            format!("{} is empty", cfg.password_file),
        ));
    }
    Ok(Some(Secret::new(p)))
}

fn read_ca(cfg: &RedisConfig) -> Result<Option<Vec<u8>>, RedisConfigError> {
    if cfg.tls_ca_file.is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read(&cfg.tls_ca_file).map_err(|e| {
        invalid(
            "tls_ca_file",
            format!("cannot read {}: {e}", cfg.tls_ca_file),
        )
    })?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(invalid(
            "tls_ca_file",
            format!("{} holds no PEM certificate", cfg.tls_ca_file),
        ));
    }
    Ok(Some(pem))
}

/// Parses `redis.url` (or a cluster seed), applies TLS and the explicit credentials.
fn connection_info(
    key: &'static str,
    url: &str,
    tls: bool,
    username: &str,
    password: Option<&Secret>,
) -> Result<ConnectionInfo, RedisConfigError> {
    // The url may hold a password: name the key, never echo the value.
    let mut info = url.into_connection_info().map_err(|e| {
        invalid(
            key,
            format!("not a redis:// or rediss:// url ({})", describe(&e)),
        )
    })?;
    if tls {
        info.addr = match info.addr {
            ConnectionAddr::Tcp(host, port) => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: false,
                tls_params: None,
            },
            ConnectionAddr::Unix(_) => {
                return Err(invalid("tls", "TLS needs a TCP address, not a unix socket"));
            }
            tls_addr => tls_addr,
        };
    }
    if !username.is_empty() {
        info.redis.username = Some(username.to_owned());
    }
    if let Some(p) = password {
        info.redis.password = Some(p.expose().to_owned());
    }
    Ok(info)
}

/// A client-side error as kind and detail (these never contain the url or credentials).
fn describe(e: &redis::RedisError) -> String {
    match e.detail() {
        Some(d) => format!("{:?}: {d}", e.kind()),
        None => format!("{:?}", e.kind()),
    }
}

impl RedisTarget {
    /// Validates `[redis]` and reads the password and CA files. Errors name the key.
    pub fn from_config(cfg: &RedisConfig) -> Result<Self, RedisConfigError> {
        install_crypto_provider();
        let password = password(cfg)?;
        let tls = cfg.tls || cfg.url.starts_with("rediss://");
        let ca = read_ca(cfg)?;
        if ca.is_some() && !tls {
            return Err(invalid(
                "tls_ca_file",
                "set, but TLS is off: set redis.tls = true or use a rediss:// url",
            ));
        }
        let certs = ca.map(|root| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root),
        });
        let info = connection_info("url", &cfg.url, tls, &cfg.username, password.as_ref())?;
        match cfg.mode.as_str() {
            "single" => {
                let client = match certs {
                    Some(c) => redis::Client::build_with_tls(info, c),
                    None => redis::Client::open(info),
                }
                .map_err(|e| invalid("url", describe(&e)))?;
                Ok(RedisTarget::Single(client))
            }
            "cluster" => {
                let scheme = if tls { "rediss" } else { "redis" };
                let seeds: Vec<ConnectionInfo> = if cfg.nodes.trim().is_empty() {
                    vec![info]
                } else {
                    cfg.nodes
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(|n| {
                            connection_info(
                                "nodes",
                                &format!("{scheme}://{n}"),
                                tls,
                                &cfg.username,
                                password.as_ref(),
                            )
                        })
                        .collect::<Result<_, _>>()?
                };
                let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
                    .retries(3)
                    .connection_timeout(CONNECT_TIMEOUT);
                // The seeds carry the credentials, but the builder applies its own to the nodes
                // it discovers.
                let url_user = cfg
                    .url
                    .as_str()
                    .into_connection_info()
                    .ok()
                    .map(|i| i.redis)
                    .unwrap_or_default();
                let user = Some(cfg.username.clone())
                    .filter(|u| !u.is_empty())
                    .or(url_user.username);
                let pass = password
                    .map(|p| p.expose().to_owned())
                    .or(url_user.password);
                if let Some(u) = user {
                    builder = builder.username(u);
                }
                if let Some(p) = pass {
                    builder = builder.password(p);
                }
                if tls {
                    builder = builder.tls(redis::TlsMode::Secure);
                }
                if let Some(c) = certs {
                    builder = builder.certs(c);
                }
                let client = builder
                    .build()
                    .map_err(|e| invalid("nodes", describe(&e)))?;
                Ok(RedisTarget::Cluster(client))
            }
            other => Err(invalid(
                "mode",
                format!("{other:?} is neither \"single\" nor \"cluster\""),
            )),
        }
    }

    /// Opens the connection: a reconnecting manager for one server, a slot-routing connection
    /// (which follows MOVED/ASK and reconnects nodes) for a cluster.
    pub async fn connect(&self) -> redis::RedisResult<RedisConnection> {
        Ok(match self {
            RedisTarget::Single(c) => RedisConnection::Single(
                ConnectionManager::new_with_config(c.clone(), manager_config()).await?,
            ),
            RedisTarget::Cluster(c) => RedisConnection::Cluster(c.get_async_connection().await?),
        })
    }
}

/// How long one attempt to reach a server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Reconnection after a lost connection: a few quick tries, then the error goes to the caller
/// (services report it as "redis" not ready and try again). The client's default waits one second,
/// then a minute between tries, so a wrong password surfaced only after minutes.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(3)
        .set_factor(2)
        .set_max_delay(2_000)
        .set_connection_timeout(CONNECT_TIMEOUT)
}

/// Connects from config in one step (the CLI and tools; services retry [`RedisTarget::connect`]).
pub async fn connect(cfg: &RedisConfig) -> Result<RedisConnection, String> {
    let target = RedisTarget::from_config(cfg).map_err(|e| e.to_string())?;
    target
        .connect()
        .await
        .map_err(|e| format!("redis: cannot connect: {e}"))
}

/// rustls needs a process-wide crypto provider when more than one could be compiled in.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A connection to a single server or to a cluster; cheap to clone (both share one multiplexed
/// connection per node).
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(cmd, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

impl RedisConnection {
    /// Every key matching `pattern` (a SCAN MATCH glob). On a cluster SCAN only sees the node it
    /// is sent to, so this walks every primary in turn.
    pub async fn scan_match(&mut self, pattern: &str) -> redis::RedisResult<Vec<String>> {
        let nodes: Vec<Option<(String, u16)>> = match self {
            RedisConnection::Single(_) => vec![None],
            RedisConnection::Cluster(c) => primaries(c).await?.into_iter().map(Some).collect(),
        };
        let mut keys = Vec::new();
        for node in nodes {
            keys.extend(self.scan_node(node, pattern).await?);
        }
        Ok(keys)
    }

    /// The cluster's primaries as `(host, port)`; empty for a single server.
    pub async fn primaries(&mut self) -> redis::RedisResult<Vec<(String, u16)>> {
        match self {
            RedisConnection::Single(_) => Ok(vec![]),
            RedisConnection::Cluster(c) => primaries(c).await,
        }
    }

    /// Sends one command to one cluster node (on a single server: to the server).
    pub async fn on_node<T: redis::FromRedisValue>(
        &mut self,
        node: Option<&(String, u16)>,
        cmd: &Cmd,
    ) -> redis::RedisResult<T> {
        match (self, node) {
            (RedisConnection::Cluster(c), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                redis::from_owned_redis_value(c.route_command(cmd, routing).await?)
            }
            (con, _) => cmd.query_async(con).await,
        }
    }

    async fn scan_node(
        &mut self,
        node: Option<(String, u16)>,
        pattern: &str,
    ) -> redis::RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, batch): (u64, Vec<String>) = self.on_node(node.as_ref(), &cmd).await?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

/// The primaries' addresses, from CLUSTER SLOTS (each row: start, end, [host, port, id], …).
async fn primaries(con: &mut ClusterConnection) -> redis::RedisResult<Vec<(String, u16)>> {
    let rows: Vec<Vec<Value>> = redis::cmd("CLUSTER").arg("SLOTS").query_async(con).await?;
    let mut out: Vec<(String, u16)> = Vec::new();
    for row in rows {
        let Some(primary) = row.get(2) else { continue };
        let (host, port): (String, u16) =
            match redis::from_redis_value::<Vec<Value>>(primary)?.as_slice() {
                [h, p, ..] => (redis::from_redis_value(h)?, redis::from_redis_value(p)?),
                _ => continue,
            };
        if !out.contains(&(host.clone(), port)) {
            out.push((host, port));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn cfg() -> RedisConfig {
        RedisConfig::default()
    }

    #[test]
    fn explicit_credentials_win_over_the_url_and_do_not_print() {
        let mut c = cfg();
        c.url = "redis://old:oldpass@127.0.0.1:6379".into();
        c.username = "svc".into();
        c.password = Secret::new("s3cr3t-pw");
        let info = connection_info("url", &c.url, false, &c.username, Some(&c.password)).unwrap();
        assert_eq!(info.redis.username.as_deref(), Some("svc"));
        assert_eq!(info.redis.password.as_deref(), Some("s3cr3t-pw"));
        let target = RedisTarget::from_config(&c).unwrap();
        assert!(!format!("{target:?} {c:?}").contains("s3cr3t-pw"));
        // Without explicit fields the url's credentials stay.
        let info = connection_info("url", &c.url, false, "", None).unwrap();
        assert_eq!(info.redis.username.as_deref(), Some("old"));
    }

    #[test]
    fn password_file_and_tls_and_mode_errors_name_the_key() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "from-file").unwrap();
        let mut c = cfg();
        c.password_file = f.path().display().to_string();
        assert_eq!(password(&c).unwrap(), Some(Secret::new("from-file")));
        c.password_file = "/no/such/pw".into();
        let e = RedisTarget::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("redis.password_file"), "{e}");

        let mut c = cfg();
        c.tls_ca_file = f.path().display().to_string();
        let e = RedisTarget::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("redis.tls_ca_file"), "{e}");
        c.tls = true;
        let e = RedisTarget::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");

        let mut c = cfg();
        c.mode = "sharded".into();
        let e = RedisTarget::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("redis.mode"), "{e}");
        c.mode = "cluster".into();
        c.nodes = "127.0.0.1:7000, 127.0.0.1:7001".into();
        assert!(matches!(
            RedisTarget::from_config(&c).unwrap(),
            RedisTarget::Cluster(_)
        ));

        let mut c = cfg();
        c.url = "http://user:hunter2@example".into();
        let e = RedisTarget::from_config(&c).unwrap_err().to_string();
        assert!(e.contains("redis.url") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn tls_turns_a_redis_url_into_tls() {
        let info = connection_info("url", "redis://127.0.0.1:6380", true, "", None).unwrap();
        assert!(matches!(
            info.addr,
            ConnectionAddr::TcpTls { port: 6380, .. }
        ));
    }
}
