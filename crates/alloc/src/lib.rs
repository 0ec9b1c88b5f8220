//! Allocation: forecast, plan, simulate.
//!
//! Pure logic behind the scheduler: the design's seed model ([`seed`]), load traces
//! ([`trace`]), demand forecasts with quantiles ([`forecast`]), the replica planner
//! ([`planner`]) and the autoscaling simulator that compares policies on real traces
//! ([`simulate`]). No I/O beyond reading a trace from a reader.

pub mod forecast;
pub mod planner;
pub mod seed;
pub mod simulate;
pub mod trace;
