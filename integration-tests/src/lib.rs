//! Starts the cluster's real parts on loopback for the integration tests: a private
//! `redis-server` and broker per test on free ports, then the service binaries configured
//! through `RECALLOC_*` variables. Nothing is mocked.
//!
//! The broker is Apache Kafka (KRaft, one broker+controller, `deploy/local/kafka.sh run`). Needs
//! `redis-server` on PATH, Java 17+ and Kafka's jars (`make test`'s `deploy/local/install.sh`
//! installs them), and the release binaries built.

pub mod pki;

use anyhow::{Context, Result, bail};
use recalloc_common::redis_conn::RedisConnection;
use recalloc_store::derived;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOPICS: [&str; 3] = [
    "recalloc.events.v1",
    "recalloc.items.v1",
    "recalloc.users.v1",
];

/// A port nobody listens on right now.
/// A loopback port nothing listens on, for a process to bind next.
///
/// Chosen below the kernel's ephemeral range (`ip_local_port_range`), never from it: the
/// source ports of outgoing connections come from that range, so a port picked there (what
/// binding port 0 gives) can be taken by some client's connection — the brokers' and services'
/// own — before the process binds it. No port is handed out twice in one test process.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<std::collections::HashSet<u16>>> = Mutex::new(None);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (start, end) = (10_000u16, low.max(10_500));
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(Default::default);
    // Start somewhere that depends on the process, so concurrent test processes spread out.
    let span = u32::from(end - start);
    let mut candidate = (std::process::id().wrapping_mul(7919) % span) as u16;
    for _ in 0..span {
        candidate = (candidate + 1) % (end - start);
        let port = start + candidate;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port between {start} and {end}")
}

/// The directory of the binaries of this build (`target/release` next to `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("deps dir");
    if dir.ends_with("deps") {
        dir.parent().expect("profile dir").to_owned()
    } else {
        dir.to_owned()
    }
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} missing: run `cargo build --release --bins` first (make test does)",
        p.display()
    );
    p
}

/// `deploy/local/kafka.sh`: fetches (once, cached) and runs the Apache Kafka broker.
pub fn kafka_script() -> PathBuf {
    repo_root().join("deploy/local/kafka.sh")
}

/// Waits until the broker at `brokers` answers a metadata request with itself in it (in KRaft
/// the port opens before the broker has registered with its controller).
pub fn wait_broker(brokers: &str, within: Duration) -> Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", "2000")
        .create()?;
    let end = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < end {
        match consumer.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(md) if !md.brokers().is_empty() => return Ok(()),
            Ok(_) => last = "no broker in the metadata yet".into(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the broker at {brokers} did not answer within {within:?}: {last}")
}

/// Creates `topics` with `partitions` each (replication 1) through the admin API; one that
/// exists is fine.
pub fn create_topics(brokers: &str, topics: &[&str], partitions: i32) -> Result<()> {
    create_replicated_topics(brokers, topics, partitions, 1)
}

/// [`create_topics`] with `replicas` copies of each partition.
pub fn create_replicated_topics(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
    replicas: i32,
) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replicas)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    // The admin client's futures are driven by librdkafka's own thread: any executor will do,
    // and a thread keeps this callable from inside a test's Tokio runtime.
    let results = std::thread::scope(|s| {
        s.spawn(|| futures::executor::block_on(admin.create_topics(&new, &opts)))
            .join()
            .expect("topic creation thread")
    })?;
    for r in results {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("creating topic {t}: {e}"),
        }
    }
    Ok(())
}

/// The model directory `make model` fills.
pub fn model_dir() -> PathBuf {
    let p = repo_root().join("models/all-MiniLM-L6-v2");
    assert!(
        p.join("model.safetensors").is_file(),
        "{} missing: run `make model` (make test does)",
        p.display()
    );
    p
}

/// The repository root (for the bundled data).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn wait_port(port: u16, within: Duration) -> Result<()> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {port} after {within:?}")
}

/// A child process killed when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Runs `cmd` with its stdout and stderr in `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Self> {
        let out = std::fs::File::create(&log)?;
        let child = cmd
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {name}"))?;
        Ok(Self {
            name: name.into(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: no chance to commit or flush.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the graceful path.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// How a test's Redis is set up: a single server or a Redis Cluster of `cluster_primaries`
/// primaries, with or without an ACL user and TLS.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// 0 = a single server; else a cluster of this many primaries (no replicas).
    pub cluster_primaries: usize,
    /// An ACL user the services log in as, with its password (passed to them in a file); the
    /// `default` user then needs [`ADMIN_PASSWORD`].
    pub acl: Option<(String, String)>,
    /// TLS only (no plain port), with a CA and server certificate made for the test.
    pub tls: bool,
}

/// The `default` user's password when a test runs Redis with an ACL user.
pub const ADMIN_PASSWORD: &str = "admin-only-pw";

/// A CA and a server certificate for 127.0.0.1 in `dir` (openssl): (ca, cert, key).
fn make_certs(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let (cert, key, csr) = (
        dir.join("server.pem"),
        dir.join("server-key.pem"),
        dir.join("server.csr"),
    );
    let ext = dir.join("server.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")?;
    let steps: [Vec<&std::ffi::OsStr>; 3] = [
        vec![
            "req".as_ref(),
            "-x509".as_ref(),
            "-newkey".as_ref(),
            "rsa:2048".as_ref(),
            "-nodes".as_ref(),
            "-days".as_ref(),
            "2".as_ref(),
            "-subj".as_ref(),
            "/CN=recalloc test CA".as_ref(),
            "-keyout".as_ref(),
            ca_key.as_os_str(),
            "-out".as_ref(),
            ca.as_os_str(),
        ],
        vec![
            "req".as_ref(),
            "-newkey".as_ref(),
            "rsa:2048".as_ref(),
            "-nodes".as_ref(),
            "-subj".as_ref(),
            "/CN=127.0.0.1".as_ref(),
            "-keyout".as_ref(),
            key.as_os_str(),
            "-out".as_ref(),
            csr.as_os_str(),
        ],
        vec![
            "x509".as_ref(),
            "-req".as_ref(),
            "-in".as_ref(),
            csr.as_os_str(),
            "-CA".as_ref(),
            ca.as_os_str(),
            "-CAkey".as_ref(),
            ca_key.as_os_str(),
            "-CAcreateserial".as_ref(),
            "-days".as_ref(),
            "2".as_ref(),
            "-extfile".as_ref(),
            ext.as_os_str(),
            "-out".as_ref(),
            cert.as_os_str(),
        ],
    ];
    for args in steps {
        let out = Command::new("openssl").args(&args).output()?;
        if !out.status.success() {
            bail!(
                "openssl {:?}: {}",
                args[0],
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok((ca, cert, key))
}

/// A Redis without persistence on `port` (so a restart starts empty), ready.
fn spawn_redis(dir: &Path, port: u16, opts: &RedisOptions) -> Result<Proc> {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir);
    if opts.tls {
        let (ca, cert, key) = (
            dir.join("ca.pem"),
            dir.join("server.pem"),
            dir.join("server-key.pem"),
        );
        if !ca.is_file() {
            make_certs(dir)?;
        }
        cmd.args(["--port", "0", "--tls-port", &port.to_string()])
            .arg("--tls-cert-file")
            .arg(cert)
            .arg("--tls-key-file")
            .arg(key)
            .arg("--tls-ca-cert-file")
            .arg(ca)
            .args(["--tls-auth-clients", "no"]);
        if opts.cluster_primaries > 0 {
            cmd.args(["--tls-cluster", "yes"]);
        }
    } else {
        cmd.args(["--port", &port.to_string()]);
    }
    if let Some((user, password)) = &opts.acl {
        cmd.args(["--requirepass", ADMIN_PASSWORD]);
        cmd.args([
            "--user",
            user,
            "on",
            &format!(">{password}"),
            "~*",
            "&*",
            "+@all",
        ]);
        if opts.cluster_primaries > 0 {
            cmd.args(["--masterauth", ADMIN_PASSWORD]);
        }
    }
    if opts.cluster_primaries > 0 {
        cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
            .arg("--cluster-config-file")
            .arg(dir.join(format!("nodes-{port}.conf")));
    }
    let n = std::fs::read_dir(dir)?.count();
    let redis = Proc::spawn("redis", cmd, dir.join(format!("redis-{n}.log")))?;
    wait_port(port, Duration::from_secs(10))?;
    Ok(redis)
}

/// `redis-cli` arguments that reach a node of this setup as the admin.
fn redis_cli_auth(dir: &Path, opts: &RedisOptions) -> Vec<String> {
    let mut args = Vec::new();
    if opts.tls {
        args.push("--tls".into());
        args.push("--cacert".into());
        args.push(dir.join("ca.pem").display().to_string());
    }
    if opts.acl.is_some() {
        args.extend([
            "--no-auth-warning".into(),
            "-a".into(),
            ADMIN_PASSWORD.into(),
        ]);
    }
    args
}

/// Joins the nodes into a cluster (`redis-cli --cluster create`) and waits for `cluster_state:ok`
/// on every node.
fn create_cluster(dir: &Path, ports: &[u16], opts: &RedisOptions) -> Result<()> {
    let auth = redis_cli_auth(dir, opts);
    let out = Command::new("redis-cli")
        .args(&auth)
        .arg("--cluster")
        .arg("create")
        .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()?;
    if !out.status.success() {
        bail!(
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let end = Instant::now() + Duration::from_secs(30);
    for port in ports {
        loop {
            let out = Command::new("redis-cli")
                .args(&auth)
                .args(["-p", &port.to_string(), "cluster", "info"])
                .output()?;
            if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                break;
            }
            if Instant::now() > end {
                bail!(
                    "redis cluster node {port} not ok: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// OpenTelemetry settings of the test's own environment (e.g. a developer's collector), which
/// services only get through [`Cluster::extra_env`].
fn is_otel_setting(name: &str) -> bool {
    name.starts_with("OTEL_")
}

/// A Kafka node besides the first (whose ports and process are [`Cluster`]'s own fields).
pub struct KafkaNode {
    pub port: u16,
    pub controller_port: u16,
    pub proc: Option<Proc>,
}

/// Redis, the broker and the services of one test.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// The single server's port, or the first cluster node's.
    pub redis_port: u16,
    pub kafka_port: u16,
    /// The broker's KRaft controller listener.
    pub kafka_controller_port: u16,
    pub redis: Proc,
    pub redis_options: RedisOptions,
    /// The other cluster nodes (port, process).
    pub redis_nodes: Vec<(u16, Proc)>,
    pub broker: Option<Proc>,
    /// The other nodes of a Kafka cluster ([`Cluster::infra_with_kafka_nodes`]); empty for the
    /// usual single broker.
    pub kafka_nodes: Vec<KafkaNode>,
    pub ingest: Option<Proc>,
    pub featurizer: Option<Proc>,
    pub embed: Option<Proc>,
    pub rank: Option<Proc>,
    pub ingest_grpc: SocketAddr,
    pub ingest_http: SocketAddr,
    pub featurizer_http: SocketAddr,
    pub embed_grpc: SocketAddr,
    pub embed_http: SocketAddr,
    pub rank_grpc: SocketAddr,
    pub rank_http: SocketAddr,
    /// Extra settings for every service: `RECALLOC_*` config keys, `OTEL_*` variables.
    pub extra_env: Vec<(String, String)>,
}

impl Cluster {
    /// Redis and the broker with the topics; no services yet.
    pub fn infra() -> Result<Self> {
        Self::infra_with(RedisOptions::default())
    }

    /// Like [`Cluster::infra`] with Redis set up as `redis_options` says; the services get the
    /// matching `RECALLOC_REDIS_*` settings (the password through a file).
    pub fn infra_with(redis_options: RedisOptions) -> Result<Self> {
        Self::infra_inner(redis_options, 1)
    }

    /// Like [`Cluster::infra`] with a Kafka cluster of `nodes` combined broker+controller
    /// nodes (a quorum of `nodes` controllers) whose topics have `nodes` replicas and, from
    /// three nodes on, `min.insync.replicas` 2: a node may die and every write still reaches
    /// two.
    pub fn infra_with_kafka_nodes(nodes: u16) -> Result<Self> {
        Self::infra_inner(RedisOptions::default(), nodes)
    }

    fn infra_inner(redis_options: RedisOptions, kafka_nodes: u16) -> Result<Self> {
        // RECALLOC_TEST_KEEP=1 keeps each test's folder (every process's log) for a post-mortem.
        let dir = tempfile::Builder::new()
            .disable_cleanup(std::env::var_os("RECALLOC_TEST_KEEP").is_some())
            .tempdir()?;
        let redis_port = free_port();
        let redis = spawn_redis(dir.path(), redis_port, &redis_options)?;
        let mut redis_nodes = Vec::new();
        for _ in 1..redis_options.cluster_primaries {
            let port = free_port();
            redis_nodes.push((port, spawn_redis(dir.path(), port, &redis_options)?));
        }
        if redis_options.cluster_primaries > 0 {
            let ports: Vec<u16> = std::iter::once(redis_port)
                .chain(redis_nodes.iter().map(|(p, _)| *p))
                .collect();
            create_cluster(dir.path(), &ports, &redis_options)?;
        }
        let mut extra_env = Vec::new();
        if redis_options.cluster_primaries > 0 {
            extra_env.push(("RECALLOC_REDIS_MODE".to_string(), "cluster".to_string()));
        }
        if let Some((user, password)) = &redis_options.acl {
            let file = dir.path().join("redis-password");
            std::fs::write(&file, format!("{password}\n"))?;
            extra_env.push(("RECALLOC_REDIS_USERNAME".into(), user.clone()));
            extra_env.push((
                "RECALLOC_REDIS_PASSWORD_FILE".into(),
                file.display().to_string(),
            ));
        }
        if redis_options.tls {
            extra_env.push(("RECALLOC_REDIS_TLS".into(), "true".into()));
            extra_env.push((
                "RECALLOC_REDIS_TLS_CA_FILE".into(),
                dir.path().join("ca.pem").display().to_string(),
            ));
        }
        let mut c = Self {
            redis_port,
            kafka_port: free_port(),
            kafka_controller_port: free_port(),
            redis,
            redis_options,
            redis_nodes,
            broker: None,
            kafka_nodes: (1..kafka_nodes.max(1))
                .map(|_| KafkaNode {
                    port: free_port(),
                    controller_port: free_port(),
                    proc: None,
                })
                .collect(),
            ingest: None,
            featurizer: None,
            embed: None,
            rank: None,
            ingest_grpc: SocketAddr::from(([127, 0, 0, 1], free_port())),
            ingest_http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            featurizer_http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            embed_grpc: SocketAddr::from(([127, 0, 0, 1], free_port())),
            embed_http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            rank_grpc: SocketAddr::from(([127, 0, 0, 1], free_port())),
            rank_http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            extra_env,
            dir,
        };
        if c.kafka_nodes.is_empty() {
            c.start_broker()?;
            create_topics(&c.brokers(), &TOPICS, 4)?;
        } else {
            // A quorum answers only once a majority of controllers is up: start them together.
            let n = c.kafka_nodes.len() + 1;
            c.broker = Some(c.spawn_kafka_node(1)?);
            for i in 2..=n {
                let p = c.spawn_kafka_node(i)?;
                c.kafka_nodes[i - 2].proc = Some(p);
            }
            wait_broker(&c.brokers(), Duration::from_secs(120))?;
            create_replicated_topics(&c.brokers(), &TOPICS, 4, n as i32)?;
        }
        Ok(c)
    }

    /// Starts Kafka node `node` (1-based) of a cluster over its own log directory, without
    /// waiting: a restart keeps what the node had.
    pub fn spawn_kafka_node(&self, node: usize) -> Result<Proc> {
        let ports: Vec<(u16, u16)> = std::iter::once((self.kafka_port, self.kafka_controller_port))
            .chain(self.kafka_nodes.iter().map(|k| (k.port, k.controller_port)))
            .collect();
        let voters: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect();
        let n = ports.len();
        let min_isr = if n >= 3 { 2 } else { 1 };
        let properties = format!(
            "node.id={node}\ncontroller.quorum.voters={}\ndefault.replication.factor={n}\n\
             min.insync.replicas={min_isr}\noffsets.topic.replication.factor={n}\n\
             transaction.state.log.replication.factor={n}\ntransaction.state.log.min.isr={min_isr}\n\
             share.coordinator.state.topic.replication.factor={n}\n\
             share.coordinator.state.topic.min.isr={min_isr}",
            voters.join(",")
        );
        let (port, cport) = ports[node - 1];
        let dir = self.dir.path().join(format!("kafka-node{node}"));
        let mut cmd = Command::new("bash");
        cmd.arg(kafka_script())
            .arg("run")
            .arg(&dir)
            .arg(port.to_string())
            .arg(cport.to_string())
            .env("RECALLOC_KAFKA_PROPERTIES", properties)
            // Fixed per test: every node of one cluster is formatted with the same id.
            .env("RECALLOC_KAFKA_CLUSTER_ID", "cmVjYWxsb2MtdGVzdHMtMQ")
            .env("RECALLOC_KAFKA_HEAP", "-Xms128m -Xmx384m");
        let k = std::fs::read_dir(self.dir.path())?.count();
        Proc::spawn(
            &format!("kafka-node{node}"),
            cmd,
            self.dir.path().join(format!("kafka-node{node}-{k}.log")),
        )
    }

    /// Infra plus ingest and featurizer, both ready.
    pub fn start() -> Result<Self> {
        let mut c = Self::infra()?;
        c.start_ingest()?;
        c.start_featurizer()?;
        Ok(c)
    }

    /// Kills Redis (SIGKILL) and starts an empty one on the same port: a lost Redis.
    pub fn restart_redis_empty(&mut self) -> Result<()> {
        assert!(
            self.redis_options.cluster_primaries == 0,
            "restart_redis_empty is for a single server"
        );
        self.redis.kill9();
        self.redis = spawn_redis(self.dir.path(), self.redis_port, &self.redis_options)?;
        Ok(())
    }

    /// The bootstrap list: every Kafka node.
    pub fn brokers(&self) -> String {
        std::iter::once(self.kafka_port)
            .chain(self.kafka_nodes.iter().map(|k| k.port))
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.redis_port)
    }

    /// (Re)starts the broker on the same ports over the same log directory (a restart keeps
    /// what it had), and waits until it answers.
    pub fn start_broker(&mut self) -> Result<()> {
        let mut cmd = Command::new("bash");
        cmd.arg(kafka_script())
            .arg("run")
            .arg(self.dir.path().join("kafka"))
            .arg(self.kafka_port.to_string())
            .arg(self.kafka_controller_port.to_string());
        let n = std::fs::read_dir(self.dir.path())?.count();
        let mut broker = Proc::spawn("kafka", cmd, self.dir.path().join(format!("kafka-{n}.log")))?;
        if let Err(e) = wait_broker(&self.brokers(), Duration::from_secs(90)) {
            let log = std::fs::read_to_string(self.dir.path().join("kafka/kafka.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            broker.kill9();
            bail!(
                "{e}; running: {}; kafka.log ends: {tail:?}; output: {}",
                broker.is_running(),
                broker.log()
            );
        }
        self.broker = Some(broker);
        Ok(())
    }

    /// Environment every service gets.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("RECALLOC_REDIS_URL".into(), self.redis_url()),
            ("RECALLOC_KAFKA_BROKERS".into(), self.brokers()),
            (
                "RECALLOC_INGEST_GRPC_ADDR".into(),
                self.ingest_grpc.to_string(),
            ),
            (
                "RECALLOC_INGEST_METRICS_ADDR".into(),
                self.ingest_http.to_string(),
            ),
            (
                "RECALLOC_FEATURIZER_METRICS_ADDR".into(),
                self.featurizer_http.to_string(),
            ),
            (
                "RECALLOC_EMBED_GRPC_ADDR".into(),
                self.embed_grpc.to_string(),
            ),
            (
                "RECALLOC_EMBED_METRICS_ADDR".into(),
                self.embed_http.to_string(),
            ),
            (
                "RECALLOC_EMBED_MODEL_DIR".into(),
                model_dir().display().to_string(),
            ),
            ("RECALLOC_RANK_GRPC_ADDR".into(), self.rank_grpc.to_string()),
            (
                "RECALLOC_RANK_METRICS_ADDR".into(),
                self.rank_http.to_string(),
            ),
            ("RUST_LOG".into(), "info".into()),
        ];
        env.extend(self.extra_env.iter().cloned());
        env
    }

    fn spawn_service(&self, name: &str, binary: &str) -> Result<Proc> {
        let mut cmd = Command::new(bin(binary));
        cmd.env_remove("RECALLOC_CONFIG");
        for (k, _) in std::env::vars() {
            if (k.starts_with("RECALLOC_") && k != "RECALLOC_CACHE") || is_otel_setting(&k) {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env());
        let n = std::fs::read_dir(self.dir.path())?.count();
        Proc::spawn(name, cmd, self.dir.path().join(format!("{name}-{n}.log")))
    }

    pub fn start_ingest(&mut self) -> Result<()> {
        let p = self.spawn_service("ingest", "recalloc-ingest")?;
        self.ingest = Some(p);
        wait_ready(
            self.ingest_http,
            self.ingest.as_mut().unwrap(),
            Duration::from_secs(60),
        )
    }

    pub fn start_featurizer(&mut self) -> Result<()> {
        let p = self.spawn_service("featurizer", "recalloc-featurizer")?;
        self.featurizer = Some(p);
        wait_ready(
            self.featurizer_http,
            self.featurizer.as_mut().unwrap(),
            Duration::from_secs(60),
        )
    }

    /// Another featurizer, a member of the same consumer group, with its own metrics port;
    /// returns it once ready, with that port.
    pub fn spawn_featurizer_replica(&self) -> Result<(Proc, SocketAddr)> {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let addr = http.to_string();
        let mut p = self.spawn_with(
            "featurizer-replica",
            "recalloc-featurizer",
            &[("RECALLOC_FEATURIZER_METRICS_ADDR", addr.as_str())],
        )?;
        wait_ready(http, &mut p, Duration::from_secs(60))?;
        Ok((p, http))
    }

    /// Starts the rank service (Redis reachable; a model is loaded if one is current).
    pub fn start_rank(&mut self) -> Result<()> {
        let p = self.spawn_service("rank", "recalloc-rank")?;
        self.rank = Some(p);
        wait_ready(
            self.rank_http,
            self.rank.as_mut().unwrap(),
            Duration::from_secs(60),
        )
    }

    /// Another rank replica on its own ports; returns it and its gRPC address.
    pub fn spawn_rank_replica(&self) -> Result<(Proc, SocketAddr)> {
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = Command::new(bin("recalloc-rank"));
        for (k, _) in std::env::vars() {
            if k.starts_with("RECALLOC_") || is_otel_setting(&k) {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env())
            .env("RECALLOC_RANK_GRPC_ADDR", grpc.to_string())
            .env("RECALLOC_RANK_METRICS_ADDR", http.to_string());
        let n = std::fs::read_dir(self.dir.path())?.count();
        let mut p = Proc::spawn(
            "rank-replica",
            cmd,
            self.dir.path().join(format!("rank-{n}.log")),
        )?;
        wait_ready(http, &mut p, Duration::from_secs(60))?;
        Ok((p, grpc))
    }

    pub async fn rank_client(
        &self,
    ) -> Result<recalloc_proto::v1::ranker_client::RankerClient<tonic::transport::Channel>> {
        Ok(recalloc_proto::v1::ranker_client::RankerClient::new(
            self.channel(self.rank_grpc).await?,
        )
        .max_decoding_message_size(64 << 20))
    }

    /// The `security` settings the services and the CLI get from [`Cluster::env`]: clients
    /// here connect the way the CLI does (TLS and a client certificate when configured).
    pub fn security(&self) -> Result<recalloc_common::config::SecurityConfig> {
        let env = self
            .env()
            .into_iter()
            .filter(|(k, _)| k.starts_with("RECALLOC_SECURITY_"))
            .collect();
        Ok(recalloc_common::Config::load_from(None, &env)?.security)
    }

    /// A connected channel to one of the cluster's gRPC servers, with the cluster's client
    /// settings.
    pub async fn channel(&self, addr: SocketAddr) -> Result<tonic::transport::Channel> {
        let endpoint = recalloc_common::tls::endpoint(&addr.to_string(), &self.security()?)?;
        endpoint
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("{}", recalloc_common::tls::error_chain(&e)))
    }

    /// Starts the embed service (model loaded, Redis and broker reachable).
    pub fn start_embed(&mut self) -> Result<()> {
        let p = self.spawn_service("embed", "recalloc-embed")?;
        self.embed = Some(p);
        wait_ready(
            self.embed_http,
            self.embed.as_mut().unwrap(),
            Duration::from_secs(60),
        )
    }

    /// Starts the embed service with extra settings and returns it without waiting (for tests
    /// of startup failures).
    pub fn spawn_embed_with(&self, env: &[(&str, &str)]) -> Result<Proc> {
        self.spawn_with("embed", "recalloc-embed", env)
    }

    /// Starts `binary` with the cluster's environment plus `env`, without waiting.
    pub fn spawn_with(&self, name: &str, binary: &str, env: &[(&str, &str)]) -> Result<Proc> {
        let mut c = self.env();
        c.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut cmd = Command::new(bin(binary));
        for (k, _) in std::env::vars() {
            if k.starts_with("RECALLOC_") || is_otel_setting(&k) {
                cmd.env_remove(k);
            }
        }
        cmd.envs(c);
        let n = std::fs::read_dir(self.dir.path())?.count();
        Proc::spawn(name, cmd, self.dir.path().join(format!("{name}-{n}.log")))
    }

    pub async fn embed_client(
        &self,
    ) -> Result<recalloc_proto::v1::embedder_client::EmbedderClient<tonic::transport::Channel>>
    {
        Ok(recalloc_proto::v1::embedder_client::EmbedderClient::new(
            self.channel(self.embed_grpc).await?,
        )
        .max_decoding_message_size(64 << 20))
    }

    /// Runs `body` in the tests' Python (`RECALLOC_TEST_PYTHON`, which `make test` sets) as a
    /// foreign producer: `pb` is `records_pb2` generated from `proto/` by `grpc_tools`, and `p`
    /// a confluent-kafka `Producer` on this cluster (acks=all, idempotent). The script flushes
    /// `p` after `body`; panics with Python's stderr when it fails.
    pub fn python_producer(&self, body: &str) {
        let python = std::env::var("RECALLOC_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let out_dir = self.dir.path().join("py");
        std::fs::create_dir_all(&out_dir).expect("python output folder");
        let script = format!(
            r#"
import sys, time
from grpc_tools import protoc
rc = protoc.main(["protoc", "-I{proto}", "--python_out={out}", "{proto}/recalloc/v1/records.proto"])
assert rc == 0, rc
sys.path.insert(0, "{out}")
from recalloc.v1 import records_pb2 as pb
from confluent_kafka import Producer
p = Producer({{"bootstrap.servers": "{brokers}", "acks": "all", "enable.idempotence": True}})
{body}
assert p.flush(30) == 0
"#,
            proto = repo_root().join("proto").display(),
            out = out_dir.display(),
            brokers = self.brokers(),
        );
        let out = Command::new(&python)
            .arg("-c")
            .arg(script)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "python producer failed (run the tests through `make test`, which sets RECALLOC_TEST_PYTHON): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs the CLI against this cluster.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(self.cli_command(args).output()?)
    }

    /// `recalloc load goodbooks DIR`; panics with the CLI's message when it fails.
    pub fn load_goodbooks(&self, dir: &Path) {
        let out = self
            .cli(&["load", "goodbooks", dir.to_str().expect("a UTF-8 path")])
            .expect("the CLI runs");
        assert!(
            out.status.success(),
            "recalloc load goodbooks failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `recalloc rebuild` with the featurizer stopped first (the CLI replays the topics
    /// itself); panics with the CLI's message when it fails.
    pub fn rebuild(&mut self) {
        if let Some(f) = self.featurizer.as_mut() {
            f.terminate();
        }
        let out = self.cli(&["rebuild"]).expect("the CLI runs");
        assert!(
            out.status.success(),
            "recalloc rebuild failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The CLI command against this cluster, to spawn.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("recalloc"));
        for (k, _) in std::env::vars() {
            if k.starts_with("RECALLOC_") || is_otel_setting(&k) {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env()).args(args);
        cmd
    }

    /// The `[redis]` config the services get (as config rather than variables, for the test's
    /// own connection).
    pub fn redis_config(&self) -> recalloc_common::config::RedisConfig {
        let env: BTreeMap<String, String> = self
            .env()
            .into_iter()
            .filter(|(k, _)| k.starts_with("RECALLOC_REDIS_"))
            .collect();
        recalloc_common::Config::load_from(None, &env)
            .expect("the harness's redis settings are valid")
            .redis
    }

    /// A connection like the services' (same user, TLS and mode).
    pub async fn redis_con(&self) -> Result<RedisConnection> {
        recalloc_common::redis_conn::connect(&self.redis_config())
            .await
            .map_err(anyhow::Error::msg)
    }

    pub async fn grpc(
        &self,
    ) -> Result<recalloc_proto::v1::ingest_client::IngestClient<tonic::transport::Channel>> {
        Ok(recalloc_proto::v1::ingest_client::IngestClient::new(
            self.channel(self.ingest_grpc).await?,
        ))
    }
}

/// The services a gRPC server lists through server reflection, sorted.
pub async fn reflected_services(addr: SocketAddr) -> Result<Vec<String>> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    reflected_services_on(channel).await
}

/// [`reflected_services`] over a given channel (e.g. a TLS one).
pub async fn reflected_services_on(channel: tonic::transport::Channel) -> Result<Vec<String>> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await?
        .into_inner();
    let resp = stream
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("reflection stream ended"))?;
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        bail!("unexpected reflection answer {resp:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    Ok(names)
}

/// Polls `/readyz` until 200, failing early if the process exits.
pub fn wait_ready(http: SocketAddr, proc: &mut Proc, within: Duration) -> Result<()> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if !proc.is_running() {
            bail!("{} exited: {}", proc.name, proc.log());
        }
        if let Ok((200, _)) = http_get(http, "/readyz") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{} not ready after {within:?}: {}", proc.name, proc.log())
}

/// A minimal HTTP/1.1 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("bad http response")?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Every key in the `{rc}` slot (the derived state and the model bookkeeping, not the model
/// chunks) and its content, for comparing whole states. Hash fields named in `skip` are left out,
/// and so are the log positions (`{rc}:offsets`, `{rc}:log`): they say where in which log the
/// state is, which differs between a live run and a replay of the same records.
/// Pipelined, so a state of 100k keys takes seconds, not minutes.
pub async fn snapshot(
    con: &mut RedisConnection,
    skip: &[&str],
) -> Result<BTreeMap<String, String>> {
    use recalloc_store::log_position::{LOG, OFFSETS};
    let mut keys: Vec<String> = con
        .scan_match(&format!("{}*", recalloc_store::PREFIX))
        .await?;
    keys.retain(|k| k != OFFSETS && k != LOG);
    keys.sort();
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(2000) {
        let mut p = redis::pipe();
        for k in chunk {
            p.cmd("TYPE").arg(k);
        }
        let types: Vec<String> = p.query_async(con).await?;
        let mut p = redis::pipe();
        for (k, t) in chunk.iter().zip(&types) {
            match t.as_str() {
                "hash" => p.cmd("HGETALL").arg(k),
                "set" => p.cmd("SMEMBERS").arg(k),
                "list" => p.cmd("LRANGE").arg(k).arg(0).arg(-1),
                "zset" => p.cmd("ZRANGE").arg(k).arg(0).arg(-1).arg("WITHSCORES"),
                _ => p.cmd("GET").arg(k),
            };
        }
        let values: Vec<redis::Value> = p.query_async(con).await?;
        for ((k, t), v) in chunk.iter().zip(&types).zip(values) {
            let text = match t.as_str() {
                "hash" => {
                    // Values may be binary (stored vectors): compare them as hex then.
                    let mut h: BTreeMap<String, Vec<u8>> = redis::from_redis_value(&v)?;
                    h.retain(|f, _| !skip.contains(&f.as_str()));
                    let h: BTreeMap<String, String> = h
                        .into_iter()
                        .map(|(f, v)| {
                            let text = String::from_utf8(v).unwrap_or_else(|e| {
                                e.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
                            });
                            (f, text)
                        })
                        .collect();
                    format!("{h:?}")
                }
                "set" => {
                    let mut m: Vec<String> = redis::from_redis_value(&v)?;
                    m.sort();
                    format!("{m:?}")
                }
                _ => format!("{v:?}"),
            };
            out.insert(k.clone(), text);
        }
    }
    Ok(out)
}

/// Asserts two snapshots are equal, naming a few differing keys instead of printing them whole.
pub fn assert_same_state(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, what: &str) {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let differing: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .take(3)
        .map(|k| format!("{k}: {:?} vs {:?}", a.get(k), b.get(k)))
        .collect();
    assert!(
        differing.is_empty(),
        "{what}: {} keys vs {}; first differences: {differing:#?}",
        a.len(),
        b.len()
    );
}

/// A cheap fingerprint of the state: the stats hash, set sizes and the key count.
pub async fn fingerprint(con: &mut RedisConnection) -> Result<String> {
    // DBSIZE counts the node that holds the `{rc}` slot.
    let (stats, users, items, keys): (BTreeMap<String, String>, u64, u64, u64) = redis::pipe()
        .hgetall(derived::STATS)
        .scard(derived::USERS)
        .scard(derived::ITEMS)
        .cmd("DBSIZE")
        .query_async(con)
        .await?;
    Ok(format!("{stats:?} users={users} items={items} keys={keys}"))
}

/// `{rc}:stats` events, waiting until it reaches `want` (or times out with what it saw).
pub async fn wait_events(con: &mut RedisConnection, want: u64, within: Duration) -> Result<u64> {
    let end = Instant::now() + within;
    let mut last = 0;
    while Instant::now() < end {
        let n: Option<u64> = redis::cmd("HGET")
            .arg(derived::STATS)
            .arg("events")
            .query_async(con)
            .await?;
        last = n.unwrap_or(0);
        if last >= want {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("featurizer applied {last} events, want {want}, after {within:?}")
}

/// Waits until `want` events are applied and the state is quiet, then returns `{rc}:stats`.
pub async fn settled_stats(con: &mut RedisConnection, want: u64) -> Result<BTreeMap<String, u64>> {
    wait_events(con, want, Duration::from_secs(60)).await?;
    wait_quiet(con, Duration::from_secs(60)).await?;
    Ok(redis::cmd("HGETALL")
        .arg(derived::STATS)
        .query_async(con)
        .await?)
}

/// Waits until the state stops changing (the featurizer has consumed everything there is).
pub async fn wait_quiet(con: &mut RedisConnection, within: Duration) -> Result<String> {
    let end = Instant::now() + within;
    let mut prev = fingerprint(con).await?;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cur = fingerprint(con).await?;
        if cur == prev {
            return Ok(cur);
        }
        if Instant::now() > end {
            bail!("state still changing after {within:?}: {cur}");
        }
        prev = cur;
    }
}

/// Two taste groups of six users over ten items each (`u0`–`u5` on `a0`–`a9`, `u6`–`u11` on
/// `b0`–`b9`), where `u0` has not seen `a9`: a model that learned anything recommends `a9` to
/// `u0` first. Event ids are `<prefix>-<user>-<item>`; `kind(i)` gives item `i`'s kind and value.
pub fn two_taste_groups(
    prefix: &str,
    kind: impl Fn(u32) -> (recalloc_proto::v1::EventKind, Option<f64>),
) -> Vec<recalloc_proto::v1::Event> {
    let mut events = Vec::new();
    for u in 0..12u32 {
        for i in (0..10u32).filter(|i| !(u == 0 && *i == 9)) {
            let (k, value) = kind(i);
            events.push(recalloc_proto::v1::Event {
                event_id: format!("{prefix}-{u}-{i}"),
                user_id: format!("u{u}"),
                item_id: format!("{}{i}", if u < 6 { "a" } else { "b" }),
                kind: k as i32,
                value,
                ..Default::default()
            });
        }
    }
    events
}
