//! `recalloc train` and `recalloc recommend`: the rank service from the command line.

use anyhow::Result;
use recalloc_common::auth::BearerToken;
use recalloc_common::config::SecurityConfig;
use recalloc_proto::v1::ranker_client::RankerClient;
use recalloc_proto::v1::{
    Algorithm, ExplainRequest, RecommendRequest, RecommendationSource, TrainRequest,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

type Ranker = RankerClient<InterceptedService<Channel, BearerToken>>;

async fn client(addr: &str, security: &SecurityConfig, bearer: &BearerToken) -> Result<Ranker> {
    let channel = crate::connect("rank", addr, security).await?;
    Ok(RankerClient::with_interceptor(channel, bearer.clone()).max_decoding_message_size(64 << 20))
}

fn status(what: &str, s: tonic::Status) -> anyhow::Error {
    crate::status_error(what, &s)
}

pub async fn train(
    addr: &str,
    security: &SecurityConfig,
    bearer: &BearerToken,
    algorithm: Option<&str>,
    factors: u32,
    iterations: u32,
) -> Result<()> {
    let algorithm = match algorithm {
        None => Algorithm::Unspecified,
        Some("implicit_als" | "implicit" | "als") => Algorithm::ImplicitAls,
        Some("explicit_mf" | "explicit" | "mf") => Algorithm::ExplicitMf,
        Some("hybrid") => Algorithm::Hybrid,
        Some(other) => {
            anyhow::bail!("--algorithm {other:?}: use implicit_als, explicit_mf or hybrid")
        }
    };
    let mut c = client(addr, security, bearer).await?;
    eprintln!("training…");
    let r = c
        .train(TrainRequest {
            algorithm: algorithm as i32,
            factors,
            epochs: iterations,
            ..Default::default()
        })
        .await
        .map_err(|s| status("train", s))?
        .into_inner();
    let m = r.model.unwrap_or_default();
    println!(
        "model {} ({}): {} users × {} items, {} factors, fit {:.2} s",
        m.version,
        Algorithm::try_from(m.algorithm).map_or("?", |a| a.as_str_name()),
        m.users,
        m.items,
        m.factors,
        r.fit_seconds
    );
    Ok(())
}

pub async fn recommend(
    addr: &str,
    security: &SecurityConfig,
    user: &str,
    k: u32,
    explain: bool,
    json: bool,
) -> Result<()> {
    let mut c = client(addr, security, &BearerToken::default()).await?;
    let r = c
        .recommend(RecommendRequest {
            user_id: user.to_owned(),
            k,
            exclude_seen: true,
            filter: None,
        })
        .await
        .map_err(|s| status("recommend", s))?
        .into_inner();
    let source = RecommendationSource::try_from(r.source)
        .map_or("?", |s| s.as_str_name())
        .trim_start_matches("RECOMMENDATION_SOURCE_")
        .to_lowercase();
    if json {
        let items: Vec<_> = r
            .items
            .iter()
            .map(|i| serde_json::json!({"item_id": i.item_id, "title": i.title, "score": i.score, "sources": i.sources}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"user_id": r.user_id, "source": source, "model_version": r.model_version, "items": items})
        );
        return Ok(());
    }
    println!(
        "recommend for user {} (source: {source}, model {}):",
        r.user_id, r.model_version
    );
    for (n, i) in r.items.iter().enumerate() {
        let title = if i.title.is_empty() {
            "(no title)"
        } else {
            &i.title
        };
        let from = if i.sources.is_empty() {
            String::new()
        } else {
            format!(" from {}", i.sources.join("+"))
        };
        println!(
            "{:>3}. {title} [{}] score {:.3}{from}",
            n + 1,
            i.item_id,
            i.score
        );
        if explain {
            match c
                .explain(ExplainRequest {
                    user_id: user.to_owned(),
                    item_id: i.item_id.clone(),
                    k: 3,
                })
                .await
            {
                Ok(e) => {
                    let e = e.into_inner();
                    if !e.sources.is_empty() {
                        // The ranker's three largest shares of the score.
                        let by: Vec<String> = e
                            .features
                            .iter()
                            .take(3)
                            .map(|f| format!("{} {:+.2}", f.name, f.contribution))
                            .collect();
                        println!(
                            "       proposed by {}; ranked by {}",
                            e.sources.join(", "),
                            by.join(", ")
                        );
                    }
                    let because: Vec<String> = e
                        .contributions
                        .iter()
                        .map(|c| {
                            if c.title.is_empty() {
                                c.item_id.clone()
                            } else {
                                c.title.clone()
                            }
                        })
                        .collect();
                    if !because.is_empty() {
                        println!("       because you liked: {}", because.join("; "));
                    }
                }
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(status("explain", s)),
            }
        }
    }
    Ok(())
}
