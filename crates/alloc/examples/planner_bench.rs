//! Times the planner on the benchmark instance: 10 deployments × 288 steps, shared GPU budget.
//! `cargo run --release -p recalloc-alloc --example planner_bench [runs]`

use std::time::Instant;

use recalloc_alloc::planner;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let problem = planner::benchmark_problem(10, 288, 42);
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let plan = planner::solve(&problem).expect("benchmark problem is feasible");
        times.push(start.elapsed().as_secs_f64() * 1e3);
        last = Some(plan);
    }
    times.sort_by(f64::total_cmp);
    let plan = last.expect("at least one run");
    println!(
        "{{\"deployments\": 10, \"steps\": 288, \"runs\": {}, \"median_ms\": {:.2}, \"min_ms\": {:.2}, \
         \"rounds\": {}, \"cost\": {:.1}, \"lower_bound\": {:.1}, \"gap\": {:.5}}}",
        times.len(),
        times[times.len() / 2],
        times[0],
        plan.iterations,
        plan.cost,
        plan.lower_bound,
        plan.gap()
    );
}
