//! `recalloc simulate`: replays a load trace under the autoscaling policies (the allocation
//! library does the work) and prints the comparison as a table or one JSON object.

use anyhow::{Context, Result, bail};
use recalloc_alloc::simulate::{self, Policy, SimParams};
use recalloc_alloc::trace::Trace;
use std::path::Path;

/// `60s`, `5m`, `1h` or plain seconds.
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
        .map(|n| n * mult)
        .map_err(|_| format!("invalid duration {s:?}: want e.g. 60s, 5m, 1h"))
}

pub fn run(
    trace: &Path,
    capacity_per_pod: f64,
    startup_seconds: u64,
    policy: &str,
    json: bool,
) -> Result<()> {
    let text = std::fs::read_to_string(trace)
        .with_context(|| format!("cannot read {}", trace.display()))?;
    let trace_data =
        Trace::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", trace.display()))?;
    let params = SimParams::new(capacity_per_pod, startup_seconds);
    let policies: Vec<Policy> = if policy == "all" {
        Policy::ALL.to_vec()
    } else {
        vec![
            policy
                .parse()
                .map_err(|e| anyhow::anyhow!("--policy: {e} or all"))?,
        ]
    };
    if !(capacity_per_pod.is_finite() && capacity_per_pod > 0.0) {
        bail!("--capacity-per-pod must be a positive number, got {capacity_per_pod}");
    }
    let mut reports = serde_json::Map::new();
    for p in &policies {
        let r = simulate::run(&trace_data, &params, *p)?;
        reports.insert(p.name().to_owned(), serde_json::to_value(&r)?);
    }
    if json {
        println!("{}", serde_json::json!({ "policies": reports }));
        return Ok(());
    }
    println!(
        "{:<10} {:>8} {:>12} {:>12} {:>8} {:>9}",
        "policy", "slack", "under (s)", "unmet", "actions", "replicas"
    );
    for (name, r) in &reports {
        let f = |k: &str| r.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
        println!(
            "{:<10} {:>8.3} {:>12.0} {:>12.1} {:>8.0} {:>9.2}",
            name,
            f("slack"),
            f("under_provisioned_seconds"),
            f("unmet_demand"),
            f("scaling_actions"),
            f("mean_replicas")
        );
    }
    Ok(())
}
