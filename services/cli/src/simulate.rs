//! `recalloc simulate`: replays a load trace under the autoscaling policies (the allocation
//! library does the work), prints the comparison as a table or one JSON object, and draws
//! demand, forecast band and each policy's ready capacity into an SVG chart.
//!
//! With `--policy all` the three policies share one forecast pass ([`simulate::run_all`]);
//! a single policy runs alone ([`simulate::run`]) and keeps no series, so it draws no chart.
//! In `--json` mode stdout carries the JSON object alone; progress goes to stderr.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use recalloc_alloc::simulate::{self, Policy, PolicyReport, SimParams};
use recalloc_alloc::trace::Trace;
use serde::Serialize;
use serde::ser::SerializeMap;

use crate::chart;

/// Where the chart goes when `--chart` is not given.
pub const DEFAULT_CHART: &str = "simulate.svg";

/// `60s`, `5m`, `1h`, `1d` or plain seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86_400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("invalid duration {s:?}: want e.g. 60s, 5m, 1h, 1d"))
}

/// The command's flags, as parsed (`None`: keep the library default).
#[derive(Debug, Clone)]
pub struct Options {
    pub trace: PathBuf,
    pub capacity_per_pod: f64,
    pub startup_seconds: u64,
    /// hpa, seed, recalloc or all.
    pub policy: String,
    pub json: bool,
    /// `--chart FILE`; `None` writes [`DEFAULT_CHART`], `none` writes nothing.
    pub chart: Option<PathBuf>,
    pub no_chart: bool,
    pub service_level: Option<f64>,
    pub min_replicas: Option<u32>,
    pub max_replicas: Option<u32>,
    pub warmup_seconds: Option<u64>,
    pub target_utilisation: Option<f64>,
}

impl Options {
    /// Defaults for everything but the trace and the two required settings.
    #[cfg(test)]
    fn new(trace: PathBuf, capacity_per_pod: f64, startup_seconds: u64) -> Self {
        Self {
            trace,
            capacity_per_pod,
            startup_seconds,
            policy: "all".into(),
            json: false,
            chart: None,
            no_chart: false,
            service_level: None,
            min_replicas: None,
            max_replicas: None,
            warmup_seconds: None,
            target_utilisation: None,
        }
    }
}

/// Runs the command: prints the report on stdout (and only that).
pub fn run(opts: &Options) -> Result<()> {
    let stdout = execute(opts)?;
    print!("{stdout}");
    Ok(())
}

/// Everything but the printing: returns what goes to stdout. Writes the chart, and progress to
/// stderr.
fn execute(opts: &Options) -> Result<String> {
    // Flags first, so that a typo fails before a long simulation.
    let policies = parse_policy(&opts.policy)?;
    let params = sim_params(opts)?;
    let chart_path = chart_target(opts.chart.as_deref(), opts.no_chart)?;
    let chart_path = match (chart_path, policies.len()) {
        (Some(_), 1) if opts.chart.is_some() => bail!(
            "--chart needs --policy all: a single policy's run keeps no series to draw \
             (use --no-chart, or --policy all)"
        ),
        (Some(_), 1) => None,
        (path, _) => path,
    };

    let trace = load_trace(&opts.trace)?;
    let ts = trace.timestamps();
    let span = trace.end() - ts[0];
    eprintln!(
        "trace {}: {} points, {} s apart, {} s in all",
        opts.trace.display(),
        trace.len(),
        trace.step_seconds(),
        span
    );
    if params.warmup_seconds >= span.max(0) as u64 {
        bail!(
            "--warmup {} s covers the whole trace ({} s): nothing would be scored",
            params.warmup_seconds,
            span
        );
    }
    let names: Vec<&str> = policies.iter().map(Policy::name).collect();
    eprintln!(
        "simulating {} (capacity {} per pod, start-up {} s, service level {})…",
        names.join(", "),
        params.capacity_per_pod,
        params.startup_seconds,
        params.recalloc.service_level
    );
    let started = Instant::now();
    let (reports, oracle, series) = if policies.len() > 1 {
        let c = simulate::run_all(&trace, &params).context("simulation failed")?;
        let mut all = c.policies;
        let mut reports: Vec<(String, PolicyReport)> = Policy::ALL
            .iter()
            .filter_map(|p| all.remove_entry(p.name()))
            .collect();
        reports.extend(all); // any policy the library adds later
        (reports, Some(c.oracle_slack_over_demand), Some(c.series))
    } else {
        let p = policies[0];
        let r = simulate::run(&trace, &params, p).context("simulation failed")?;
        (vec![(p.name().to_string(), r)], None, None)
    };
    eprintln!("simulated in {:.1} s", started.elapsed().as_secs_f64());

    let chart_written = match (&chart_path, &series) {
        (Some(path), Some(series)) => {
            let title = format!(
                "{}: capacity {} per pod, start-up {} s, service level {}",
                opts.trace.file_name().map_or_else(
                    || opts.trace.display().to_string(),
                    |f| f.to_string_lossy().into_owned()
                ),
                params.capacity_per_pod,
                params.startup_seconds,
                params.recalloc.service_level
            );
            let svg = chart::svg(series, &title);
            std::fs::write(path, &svg)
                .with_context(|| format!("cannot write the chart to {}", path.display()))?;
            eprintln!(
                "chart: {} ({} KiB)",
                path.display(),
                svg.len().div_ceil(1024)
            );
            Some(path.clone())
        }
        _ => None,
    };

    Ok(if opts.json {
        let out = JsonReport {
            trace: opts.trace.display().to_string(),
            capacity_per_pod: params.capacity_per_pod,
            startup_seconds: params.startup_seconds,
            params: &params,
            policies: Reports(&reports),
            oracle_slack_over_demand: oracle,
            chart: chart_written.as_ref().map(|p| p.display().to_string()),
        };
        format!("{}\n", serde_json::to_string(&out)?)
    } else {
        table(&reports, oracle, chart_written.as_deref())
    })
}

/// The `--json` object. Fields serialise in this order, each report in `PolicyReport`'s
/// (`slack` first).
#[derive(Serialize)]
struct JsonReport<'a> {
    trace: String,
    capacity_per_pod: f64,
    startup_seconds: u64,
    /// Every simulation setting, defaults included, so that a run can be repeated.
    params: &'a SimParams,
    policies: Reports<'a>,
    /// Only when every policy ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    oracle_slack_over_demand: Option<f64>,
    chart: Option<String>,
}

/// Reports keyed by policy name, in run order.
struct Reports<'a>(&'a [(String, PolicyReport)]);

impl Serialize for Reports<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, report) in self.0 {
            map.serialize_entry(name, report)?;
        }
        map.end()
    }
}

fn table(reports: &[(String, PolicyReport)], oracle: Option<f64>, chart: Option<&Path>) -> String {
    let mut out = format!(
        "{:<10} {:>8} {:>13} {:>10} {:>12} {:>8} {:>14}\n",
        "policy", "slack", "slack/demand", "under (s)", "unmet", "actions", "mean replicas"
    );
    for (name, r) in reports {
        out += &format!(
            "{:<10} {:>8.3} {:>13.3} {:>10.0} {:>12.1} {:>8} {:>14.2}\n",
            name,
            r.slack,
            r.slack_over_demand,
            r.under_provisioned_seconds,
            r.unmet_demand,
            r.scaling_actions,
            r.mean_replicas
        );
    }
    if let Some(o) = oracle {
        out +=
            &format!("oracle slack over demand: {o:.3} (floor of a policy that is never short)\n");
    }
    out += &format!(
        "chart: {}\n",
        chart.map_or_else(|| "none".to_string(), |p| p.display().to_string())
    );
    out
}

/// `all` or one policy name (any case).
fn parse_policy(s: &str) -> Result<Vec<Policy>> {
    if s.eq_ignore_ascii_case("all") {
        return Ok(Policy::ALL.to_vec());
    }
    match s.parse::<Policy>() {
        Ok(p) => Ok(vec![p]),
        Err(_) => bail!("--policy: unknown policy `{s}` (expected hpa, seed, recalloc or all)"),
    }
}

/// The simulation settings: the library's defaults with the flags laid over them, each
/// checked here so that the message names the flag.
fn sim_params(opts: &Options) -> Result<SimParams> {
    if !(opts.capacity_per_pod.is_finite() && opts.capacity_per_pod > 0.0) {
        bail!(
            "--capacity-per-pod must be a positive number, got {}",
            opts.capacity_per_pod
        );
    }
    let mut p = SimParams::new(opts.capacity_per_pod, opts.startup_seconds);
    if let Some(s) = opts.service_level {
        if !(s > 0.0 && s < 1.0) {
            bail!("--service-level must be in (0, 1) (e.g. 0.99), got {s}");
        }
        p.recalloc.service_level = s;
    }
    if let Some(t) = opts.target_utilisation {
        if !(t.is_finite() && t > 0.0) {
            bail!("--target-utilisation must be a positive number (e.g. 0.8), got {t}");
        }
        p.hpa.target_utilisation = t;
    }
    if let Some(w) = opts.warmup_seconds {
        p.warmup_seconds = w;
    }
    if let Some(min) = opts.min_replicas {
        if min == 0 {
            bail!("--min-replicas must be at least 1");
        }
        p.min_replicas = min;
    }
    if let Some(max) = opts.max_replicas {
        if max == 0 {
            bail!("--max-replicas must be at least 1");
        }
        p.max_replicas = max;
    }
    if p.min_replicas > p.max_replicas {
        let which = |given: Option<u32>| if given.is_some() { "" } else { " (default)" };
        bail!(
            "--min-replicas {}{} exceeds --max-replicas {}{}",
            p.min_replicas,
            which(opts.min_replicas),
            p.max_replicas,
            which(opts.max_replicas)
        );
    }
    Ok(p)
}

/// Where to write the chart: `None` when charts are off (`--no-chart`, `--chart none`).
fn chart_target(chart: Option<&Path>, no_chart: bool) -> Result<Option<PathBuf>> {
    if no_chart {
        return Ok(None);
    }
    let path = match chart {
        None => PathBuf::from(DEFAULT_CHART),
        Some(p) if p.as_os_str().eq_ignore_ascii_case("none") => return Ok(None),
        Some(p) => p.to_path_buf(),
    };
    let svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if !svg {
        bail!(
            "--chart {}: only SVG charts are written; give a file name ending in .svg \
             (or --chart none)",
            path.display()
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!(
            "--chart {}: directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    Ok(Some(path))
}

fn load_trace(path: &Path) -> Result<Trace> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read trace {}", path.display()))?;
    Trace::parse(&text).map_err(|e| anyhow::anyhow!("bad trace {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_trace(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// An hour of minutes: flat, then a jump.
    fn small_trace(dir: &Path) -> PathBuf {
        let mut text = String::from("ts,value\n");
        for i in 0..60 {
            let v = if i < 30 { 20.0 } else { 55.0 };
            text += &format!("{},{v}\n", 1_628_640_000 + 60 * i);
        }
        write_trace(dir, "small.csv", &text)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(60));
        assert_eq!(parse_duration("5m"), Ok(300));
        assert_eq!(parse_duration(" 2h "), Ok(7200));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("90"), Ok(90));
        assert!(parse_duration("1.5h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration(&format!("{}d", u64::MAX / 1000)).is_err());
    }

    #[test]
    fn chart_targets() {
        let t = |c: Option<&str>, no: bool| chart_target(c.map(Path::new), no);
        assert_eq!(t(None, false).unwrap(), Some(PathBuf::from("simulate.svg")));
        assert_eq!(t(None, true).unwrap(), None);
        assert_eq!(t(Some("none"), false).unwrap(), None);
        assert_eq!(
            t(Some("a.SVG"), false).unwrap(),
            Some(PathBuf::from("a.SVG"))
        );
        let e = t(Some("out.png"), false).unwrap_err().to_string();
        assert!(e.contains("only SVG") && e.contains("out.png"), "{e}");
        assert!(t(Some("svg"), false).is_err());
        let e = t(Some("/no/such/dir/c.svg"), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/no/such/dir"), "{e}");
    }

    #[test]
    fn flags_lay_over_the_defaults_and_are_checked() {
        let base = Options::new("t.csv".into(), 10.0, 60);
        let p = sim_params(&base).unwrap();
        assert_eq!(p, SimParams::new(10.0, 60));

        let mut o = base.clone();
        o.service_level = Some(0.95);
        o.min_replicas = Some(2);
        o.max_replicas = Some(50);
        o.warmup_seconds = Some(3600);
        o.target_utilisation = Some(0.6);
        let p = sim_params(&o).unwrap();
        assert_eq!(p.recalloc.service_level, 0.95);
        assert_eq!((p.min_replicas, p.max_replicas), (2, 50));
        assert_eq!(p.warmup_seconds, 3600);
        assert_eq!(p.hpa.target_utilisation, 0.6);

        let err = |f: &dyn Fn(&mut Options)| {
            let mut o = base.clone();
            f(&mut o);
            sim_params(&o).unwrap_err().to_string()
        };
        for s in [0.0, 1.0, 1.5, -0.1, f64::NAN] {
            assert!(err(&|o| o.service_level = Some(s)).contains("--service-level"));
        }
        for t in [0.0, -1.0, f64::INFINITY] {
            assert!(err(&|o| o.target_utilisation = Some(t)).contains("--target-utilisation"));
        }
        assert!(err(&|o| o.min_replicas = Some(0)).contains("--min-replicas"));
        assert!(err(&|o| o.max_replicas = Some(0)).contains("--max-replicas"));
        let e = err(&|o| o.min_replicas = Some(2000));
        assert!(e.contains("exceeds --max-replicas 1000 (default)"), "{e}");
        assert!(err(&|o| o.capacity_per_pod = 0.0).contains("--capacity-per-pod"));
        assert!(
            parse_policy("nope")
                .unwrap_err()
                .to_string()
                .contains("or all")
        );
        assert_eq!(parse_policy("ALL").unwrap().len(), 3);
        assert_eq!(parse_policy("Hpa").unwrap(), vec![Policy::Hpa]);
    }

    #[test]
    fn json_report_and_chart_for_all_policies() {
        let dir = tempfile::tempdir().unwrap();
        let chart = dir.path().join("c.svg");
        let mut o = Options::new(small_trace(dir.path()), 10.0, 60);
        o.json = true;
        o.chart = Some(chart.clone());
        let out = execute(&o).unwrap();
        assert_eq!(out.lines().count(), 1, "one JSON line: {out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["trace"], o.trace.display().to_string());
        assert_eq!(v["capacity_per_pod"], 10.0);
        assert_eq!(v["startup_seconds"], 60);
        assert_eq!(v["chart"], chart.display().to_string());
        assert!(v["oracle_slack_over_demand"].is_f64());
        let policies = v["policies"].as_object().unwrap();
        assert_eq!(policies.len(), 3);
        for name in ["hpa", "seed", "recalloc"] {
            let r = &policies[name];
            assert!(
                r["slack"].is_f64() && r["under_provisioned_seconds"].is_f64(),
                "{r}"
            );
        }
        // `slack` leads each report, policies in run order.
        let reports = &out[out.find("\"policies\":").unwrap()..];
        assert!(
            reports.starts_with("\"policies\":{\"hpa\":{\"slack\":"),
            "{out}"
        );
        let at = |name: &str| reports.find(&format!("\"{name}\":{{\"slack\":")).unwrap();
        assert!(
            at("hpa") < at("seed") && at("seed") < at("recalloc"),
            "{out}"
        );
        let svg = std::fs::read_to_string(&chart).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("small.csv"));
        assert_eq!(svg.matches("class=\"capacity\"").count(), 3);
    }

    #[test]
    fn single_policy_table_without_chart() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Options::new(small_trace(dir.path()), 10.0, 60);
        o.policy = "hpa".into();
        o.chart = None; // the default chart is skipped for one policy
        let out = execute(&o).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("policy") && lines[0].contains("mean replicas"));
        assert!(lines[1].starts_with("hpa "), "{out}");
        assert_eq!(lines.len(), 3, "{out}");
        assert_eq!(lines[2], "chart: none");
        assert!(!out.contains("oracle"));

        o.json = true;
        let v: serde_json::Value = serde_json::from_str(&execute(&o).unwrap()).unwrap();
        assert!(v["chart"].is_null());
        assert!(v.get("oracle_slack_over_demand").is_none());
        assert_eq!(v["policies"].as_object().unwrap().len(), 1);

        o.chart = Some(dir.path().join("x.svg"));
        let e = execute(&o).unwrap_err().to_string();
        assert!(e.contains("--chart needs --policy all"), "{e}");
    }

    #[test]
    fn table_for_all_policies() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Options::new(small_trace(dir.path()), 10.0, 60);
        o.chart = Some(dir.path().join("t.svg"));
        o.warmup_seconds = Some(600);
        let out = execute(&o).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6, "{out}");
        assert!(lines[1].starts_with("hpa ") && lines[3].starts_with("recalloc "));
        assert!(lines[4].starts_with("oracle slack over demand: "));
        assert_eq!(
            lines[5],
            format!("chart: {}", dir.path().join("t.svg").display())
        );
    }

    #[test]
    fn errors_name_the_file_or_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.csv");
        let mut o = Options::new(missing.clone(), 10.0, 60);
        o.no_chart = true;
        let e = format!("{:#}", execute(&o).unwrap_err());
        assert!(
            e.contains("cannot read trace") && e.contains("missing.csv"),
            "{e}"
        );

        o.trace = write_trace(dir.path(), "bad.csv", "ts,value\n1,2\n2,oops\n");
        let e = format!("{:#}", execute(&o).unwrap_err());
        assert!(e.contains("bad.csv") && e.contains("line 3"), "{e}");

        o.trace = write_trace(dir.path(), "empty.csv", "ts,value\n");
        let e = format!("{:#}", execute(&o).unwrap_err());
        assert!(e.contains("empty.csv") && e.contains("empty"), "{e}");

        o.trace = small_trace(dir.path());
        o.warmup_seconds = Some(3600);
        let e = format!("{:#}", execute(&o).unwrap_err());
        assert!(e.contains("--warmup"), "{e}");

        o.warmup_seconds = None;
        o.no_chart = false;
        o.chart = Some("chart.png".into());
        let e = format!("{:#}", execute(&o).unwrap_err());
        assert!(e.contains("only SVG"), "{e}");
    }
}
