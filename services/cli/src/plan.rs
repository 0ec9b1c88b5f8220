//! `recalloc plan`: the live plan of the running scheduler (GetPlan), as a table or JSON.

use anyhow::Result;
use recalloc_common::config::SecurityConfig;
use recalloc_proto::v1::GetPlanRequest;
use recalloc_proto::v1::scheduler_client::SchedulerClient;

pub async fn show(
    addr: &str,
    security: &SecurityConfig,
    deployment: Option<&str>,
    json: bool,
) -> Result<()> {
    let channel = crate::connect("the scheduler", addr, security).await?;
    let plan = SchedulerClient::new(channel)
        .get_plan(GetPlanRequest {
            deployment: deployment.unwrap_or_default().to_owned(),
        })
        .await
        .map_err(|s| crate::status_error("plan", &s))?
        .into_inner();
    if json {
        let deployments: Vec<_> = plan
            .deployments
            .iter()
            .map(|d| {
                serde_json::json!({
                    "deployment": d.deployment, "current_replicas": d.current_replicas,
                    "replicas": d.replicas, "demand": d.demand,
                    "capacity_per_replica": d.capacity_per_replica, "applied": d.applied,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "created_at_ms": plan.created_at_ms, "step_seconds": plan.step_seconds,
                "dry_run": plan.dry_run, "solver": plan.solver, "solve_ms": plan.solve_ms,
                "deployments": deployments,
            })
        );
        return Ok(());
    }
    println!(
        "plan every {} s, {} ({}, solved in {:.1} ms)",
        plan.step_seconds,
        if plan.dry_run {
            "dry run: not applied"
        } else {
            "applied by the lease holder"
        },
        plan.solver,
        plan.solve_ms
    );
    println!(
        "{:<24} {:>8} {:>8} {:>10} {:>10}  next steps",
        "deployment", "now", "request", "demand", "capacity"
    );
    for d in &plan.deployments {
        let next: Vec<String> = d.replicas.iter().take(12).map(u32::to_string).collect();
        println!(
            "{:<24} {:>8} {:>8} {:>10.1} {:>10.1}  {}",
            d.deployment,
            d.current_replicas,
            d.replicas
                .iter()
                .skip(1)
                .copied()
                .next()
                .unwrap_or(d.current_replicas),
            d.demand.first().copied().unwrap_or(0.0),
            d.current_replicas as f64 * d.capacity_per_replica,
            next.join(" ")
        );
    }
    Ok(())
}
