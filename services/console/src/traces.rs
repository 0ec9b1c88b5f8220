//! The load traces of `data/traces`, built into the binary so that the simulator panel works
//! wherever the console runs (a container has no clone). Capacities per pod are those of
//! `make bench` and the README's table; every trace replays with a 60 s start-up.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BundledTrace {
    /// What the page and the API call it: its path under `data/traces`, without `.csv`.
    pub name: &'static str,
    pub description: &'static str,
    pub capacity_per_pod: f64,
    pub startup_seconds: u32,
    #[serde(skip)]
    pub csv: &'static str,
}

pub const BUNDLED: [BundledTrace; 3] = [
    BundledTrace {
        name: "crane/input0",
        description: "Crane input0: one application's load, 8 days of 1-minute points, daily cycle",
        capacity_per_pod: 15.0,
        startup_seconds: 60,
        csv: include_str!("../../../data/traces/crane/input0.csv"),
    },
    BundledTrace {
        name: "crane/input6",
        description: "Crane input6: 16 days of 1-minute points, spiky, no period",
        capacity_per_pod: 5.0,
        startup_seconds: 60,
        csv: include_str!("../../../data/traces/crane/input6.csv"),
    },
    BundledTrace {
        name: "wikipedia/example_wp_log_peyton_manning",
        description: "Wikipedia page views (log), daily points over 8 years, weekly and yearly seasonality",
        capacity_per_pod: 1.0,
        startup_seconds: 60,
        csv: include_str!("../../../data/traces/wikipedia/example_wp_log_peyton_manning.csv"),
    },
];

pub fn bundled(name: &str) -> Option<&'static BundledTrace> {
    BUNDLED.iter().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_trace_parses() {
        for t in &BUNDLED {
            let trace = recalloc_alloc::trace::Trace::parse(t.csv).unwrap();
            assert!(trace.len() > 1000, "{}", t.name);
        }
        assert!(bundled("crane/input0").is_some());
        assert!(bundled("crane/input0.csv").is_none());
    }
}
