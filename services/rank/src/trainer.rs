//! Turns what Redis holds into a servable [`Model`]: pure CPU work, run off the async runtime.
//!
//! Training data is each user's recent history as the featurizer keeps it (the newest
//! `featurizer.history_len` events per user). Explicit MF learns from RATING events (the rating
//! itself); implicit ALS and hybrid from every event, with strength = the kind's weight (view 1 …
//! purchase 8; a rating's weight scaled by its place on the rating scale, so one star counts
//! nothing), summed per user and item. Hybrid is ALS plus a ridge map from the items' text
//! vectors to their factors, which gives items with text but no interactions factors too.

use recalloc_factor::als::{self, AlsParams};
use recalloc_factor::data::{Csr, IdMap, Triple};
use recalloc_factor::model::{self, Algorithm, Model, Parts};
use recalloc_factor::pipeline::{self, PipelineSettings};
use recalloc_factor::sgd::{self, SgdParams};
#[cfg(test)]
use recalloc_store::training::CatalogueItem;
use recalloc_store::training::TrainingData;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct TrainParams {
    pub algorithm: Algorithm,
    pub factors: usize,
    pub iterations: usize,
    pub regularization: f32,
    pub alpha: f32,
    pub learning_rate: f32,
    pub threads: usize,
    pub rating_min: f64,
    pub rating_max: f64,
    /// Train the second stage (`rank.two_stage`).
    pub two_stage: bool,
}

impl TrainParams {
    /// The configured training defaults (`rank.*`, and the rating scale of `ingest.*`).
    pub fn from_config(cfg: &recalloc_common::config::Config, algorithm: Algorithm) -> Self {
        let r = &cfg.rank;
        Self {
            algorithm,
            factors: r.factors as usize,
            iterations: r.iterations as usize,
            regularization: r.regularization as f32,
            alpha: r.alpha as f32,
            learning_rate: r.learning_rate as f32,
            threads: r.threads as usize,
            rating_min: cfg.ingest.rating_min,
            rating_max: cfg.ingest.rating_max,
            two_stage: r.two_stage,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TrainError {
    #[error("nothing to train on: {0}")]
    NoData(String),
}

/// The strength of one history entry for implicit training (0 = ignore).
pub fn strength(kind: &str, value: f64, p: &TrainParams) -> f32 {
    recalloc_store::kinds::event_strength(kind, value, p.rating_min, p.rating_max) as f32
}

/// Trains a model. `version` and `now_ms` name it.
pub fn train(
    data: &TrainingData,
    p: &TrainParams,
    version: String,
    now_ms: i64,
) -> Result<(Model, f64), TrainError> {
    let mut items = IdMap::default();
    for c in &data.items {
        items.get_or_insert(&c.id);
    }
    let mut users = IdMap::default();
    let mut triples = Vec::new();
    let explicit = p.algorithm == Algorithm::ExplicitMf;
    for (user, history) in &data.histories {
        for h in history {
            let value = if explicit {
                if h.kind != "rating" {
                    continue;
                }
                h.value as f32
            } else {
                strength(&h.kind, h.value, p)
            };
            if value <= 0.0 && !explicit {
                continue;
            }
            let item = items.get_or_insert(&h.item);
            let u = users.get_or_insert(user);
            triples.push(Triple {
                user: u,
                item,
                value,
                ts: h.ts,
            });
        }
    }
    if triples.is_empty() {
        return Err(TrainError::NoData(if explicit {
            "no RATING events in Redis (explicit_mf learns from ratings)".into()
        } else {
            "no events in Redis".into()
        }));
    }
    let (n_users, n_items) = (users.len(), items.len());
    let seen = Csr::build(&triples, n_users, false);
    let by_item = Csr::build(&triples, n_items, true);
    let trained: Vec<bool> = (0..n_items).map(|i| !by_item.row(i).0.is_empty()).collect();
    // Catalogue details in id order; items only seen in events have no title.
    let mut titles = vec![String::new(); n_items];
    let mut tags = vec![Vec::new(); n_items];
    let text_dim = data
        .items
        .iter()
        .find_map(|c| c.vector.as_ref().map(Vec::len))
        .unwrap_or(0);
    let mut item_text = vec![0f32; n_items * text_dim];
    for c in &data.items {
        let i = items.get(&c.id).expect("inserted above") as usize;
        titles[i] = c.title.clone();
        tags[i] = c.tags.clone();
        if let Some(v) = c.vector.as_ref().filter(|v| v.len() == text_dim) {
            item_text[i * text_dim..(i + 1) * text_dim].copy_from_slice(v);
        }
    }
    let mut popular: Vec<u32> = data.popular.iter().filter_map(|i| items.get(i)).collect();
    let listed: std::collections::HashSet<u32> = popular.iter().copied().collect();
    popular.extend((0..n_items as u32).filter(|i| !listed.contains(i)));
    let parts = Parts {
        version,
        trained_at_ms: now_ms,
        user_ids: users.ids().to_vec(),
        item_ids: items.ids().to_vec(),
        titles,
        tags,
        seen: seen.clone(),
        popular,
        regularization: p.regularization,
        text_dim,
        item_text,
    };
    let t0 = Instant::now();
    let m = if explicit {
        let sp = SgdParams {
            factors: p.factors,
            epochs: p.iterations,
            learning_rate: p.learning_rate,
            regularization: p.regularization,
            threads: p.threads,
            ..SgdParams::default()
        };
        Model::from_explicit(sgd::fit(&triples, n_users, n_items, &sp), parts)
    } else {
        let ap = AlsParams {
            factors: p.factors,
            iterations: p.iterations,
            regularization: p.regularization,
            alpha: p.alpha,
            threads: p.threads,
            ..AlsParams::default()
        };
        if !p.two_stage {
            let fitted = als::fit(&seen, &by_item, &ap);
            let m = Model::from_implicit(fitted, p.algorithm, parts);
            return Ok(finish(m, p, &trained, &seen, t0));
        }
        // ALS and the second stage over it (candidates, ranker, and what to serve, chosen on
        // a time split of these interactions).
        let tag_ids = model::tag_ids(&parts.tags);
        let trained = pipeline::train(
            &triples,
            n_users,
            n_items,
            &ap,
            (&parts.item_text, text_dim),
            &tag_ids,
            &PipelineSettings::default(),
        );
        let mut m = Model::from_implicit(trained.model, p.algorithm, parts);
        for (name, v) in &trained.pipeline.validation {
            m.metrics.insert(name.clone(), *v);
        }
        let v = &trained.pipeline.validation;
        if let Some(served) = v.get(&format!(
            "validation_ndcg_{}",
            trained.pipeline.choice.name()
        )) {
            m.metrics.insert("validation_ndcg_served".into(), *served);
        }
        m.pipeline = Some(trained.pipeline);
        m
    };
    Ok(finish(m, p, &trained, &seen, t0))
}

/// What every trained model gets after its fit: no leftover factors for items without
/// interactions, hybrid's text map, and the training figures.
fn finish(
    mut m: Model,
    p: &TrainParams,
    trained: &[bool],
    seen: &Csr,
    t0: Instant,
) -> (Model, f64) {
    // Items without interactions keep no leftover random factors (score 0 until hybrid maps
    // them from text).
    for (i, t) in trained.iter().enumerate() {
        if !t {
            m.item_factors[i * m.factors..(i + 1) * m.factors].fill(0.0);
        }
    }
    if p.algorithm == Algorithm::Hybrid {
        let mapped = model::map_text_to_factors(&mut m, trained, 1.0);
        m.metrics.insert("cold_items_mapped".into(), mapped as f64);
    }
    let fit_seconds = t0.elapsed().as_secs_f64();
    m.metrics.insert("fit_seconds".into(), fit_seconds);
    m.metrics.insert("interactions".into(), seen.nnz() as f64);
    (m, fit_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use recalloc_store::history::HistoryEntry;

    fn params(algorithm: Algorithm) -> TrainParams {
        TrainParams {
            factors: 4,
            iterations: 5,
            threads: 1,
            ..TrainParams::from_config(&Default::default(), algorithm)
        }
    }

    fn h(item: &str, kind: &str, value: f64) -> HistoryEntry {
        HistoryEntry {
            item: item.into(),
            kind: kind.into(),
            value,
            ts: 0,
        }
    }

    #[test]
    fn strengths_follow_kind_and_rating() {
        let p = params(Algorithm::ImplicitAls);
        assert_eq!(strength("purchase", 0.0, &p), 8.0);
        assert_eq!(strength("rating", 1.0, &p), 0.0);
        assert_eq!(strength("rating", 5.0, &p), 5.0);
        assert_eq!(strength("nonsense", 1.0, &p), 0.0);
    }

    #[test]
    fn no_data_is_a_clear_error_and_items_without_events_are_in_the_catalogue() {
        let mut d = TrainingData {
            items: vec![
                CatalogueItem {
                    id: "a".into(),
                    title: "A".into(),
                    ..Default::default()
                },
                CatalogueItem {
                    id: "b".into(),
                    title: "B".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let e = train(&d, &params(Algorithm::ExplicitMf), "v".into(), 0).unwrap_err();
        assert!(e.to_string().contains("RATING"), "{e}");
        d.histories = vec![("u".into(), vec![h("a", "view", 0.0), h("c", "click", 0.0)])];
        let (m, _) = train(&d, &params(Algorithm::ImplicitAls), "v".into(), 0).unwrap();
        assert_eq!(m.item_ids, vec!["a", "b", "c"]);
        assert_eq!(m.titles, vec!["A", "B", ""]);
        assert_eq!(m.users(), 1);
        assert!(train(&d, &params(Algorithm::ExplicitMf), "v".into(), 0).is_err());
    }

    #[test]
    fn two_stage_adds_the_pipeline_to_implicit_models_only_when_asked() {
        let d = TrainingData {
            histories: (0..6)
                .map(|u| {
                    (
                        format!("u{u}"),
                        vec![
                            h(&format!("i{}", u % 3), "purchase", 0.0),
                            h("i9", "view", 0.0),
                        ],
                    )
                })
                .collect(),
            ..Default::default()
        };
        let mut p = params(Algorithm::ImplicitAls);
        assert!(p.two_stage, "on by default");
        let (m, _) = train(&d, &p, "v".into(), 0).unwrap();
        assert!(m.pipeline.is_some());
        p.two_stage = false;
        let (m, _) = train(&d, &p, "v".into(), 0).unwrap();
        assert!(m.pipeline.is_none());
        let mut e = params(Algorithm::ExplicitMf);
        e.two_stage = true;
        let ratings = TrainingData {
            histories: vec![(
                "u".into(),
                vec![h("a", "rating", 4.0), h("b", "rating", 2.0)],
            )],
            ..Default::default()
        };
        assert!(
            train(&ratings, &e, "v".into(), 0)
                .unwrap()
                .0
                .pipeline
                .is_none()
        );
    }

    #[test]
    fn hybrid_maps_cold_items_from_text() {
        // Items 0-3 have events and text; item 4 only text, close to item 0's.
        let text = |x: f32| Some(vec![x, 1.0 - x, 0.5]);
        let d = TrainingData {
            items: (0..5)
                .map(|i| CatalogueItem {
                    id: format!("i{i}"),
                    vector: text(if i == 4 { 0.05 } else { i as f32 * 0.3 }),
                    ..Default::default()
                })
                .collect(),
            histories: (0..8)
                .map(|u| {
                    (
                        format!("u{u}"),
                        vec![
                            h(&format!("i{}", u % 4), "purchase", 0.0),
                            h(&format!("i{}", (u + 1) % 4), "view", 0.0),
                        ],
                    )
                })
                .collect(),
            ..Default::default()
        };
        let (m, _) = train(&d, &params(Algorithm::Hybrid), "v".into(), 0).unwrap();
        assert_eq!(m.cold_items, vec![4]);
        assert!(m.item_factors[16..20].iter().any(|v| *v != 0.0));
        let (m, _) = train(&d, &params(Algorithm::ImplicitAls), "v".into(), 0).unwrap();
        assert!(m.cold_items.is_empty());
        assert!(m.item_factors[16..20].iter().all(|v| *v == 0.0));
    }
}
