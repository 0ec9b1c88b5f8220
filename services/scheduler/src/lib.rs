//! The scheduler: reads each managed Deployment's demand every tick, forecasts it, plans
//! replicas with the allocation library, and (when it holds the Lease) scales the Deployments
//! through the Kubernetes `scale` subresource. It serves the forecasts and plans over gRPC
//! (`recalloc.v1.Scheduler`) and as a KEDA external scaler.
//!
//! Pure logic stays in `recalloc-alloc`; this crate holds the I/O around it:
//! * [`scrape`] parses Prometheus text; [`collect`] turns signals into demand readings;
//! * [`scale`] reads and patches Deployments' scale; [`lease`] elects the one replica that acts;
//!   [`cluster`] holds both for the cluster the scheduler acts on;
//! * [`control`] is the tick loop (read → history → forecast → plan → scale) and owns the state
//!   it keeps; [`service`] is the gRPC edge that reads that state; [`server`] wires them up.

pub mod cluster;
pub mod collect;
pub mod control;
pub mod lease;
#[cfg(test)]
pub(crate) mod mock_api;
pub mod planning;
pub mod scale;
pub mod scrape;
pub mod server;
pub mod service;
