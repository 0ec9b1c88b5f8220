//! `recalloc-console`: the operators' web page over a running cluster. One HTML page (script
//! and style built into the binary, no build step, no network beyond the cluster) and the JSON
//! API it calls, which reads the services over their gRPC APIs (the CLI's clients, TLS and
//! token) and their `/metrics` and `/readyz`.
//!
//! Pure logic, tested without a cluster: [`prom`] reads the Prometheus text format, [`window`]
//! turns two scrapes into a request rate, a p99 and a lag, [`history`] remembers plans and
//! scaling actions, [`charts`] shapes the series the page draws, [`state`] builds the views,
//! [`api`] checks the requests and words the errors. I/O: [`backend`] (connections),
//! [`poller`] (the reads), [`server`] (the process).

pub mod api;
pub mod backend;
pub mod charts;
pub mod history;
pub mod poller;
pub mod prom;
pub mod server;
pub mod state;
pub mod traces;
pub mod window;
