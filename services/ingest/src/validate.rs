//! Validation and preprocessing of client records: the design's cleaning step (fill or reject
//! missing values, clip outliers, min-max normalise, derive stable ids for de-duplication).
//! Pure functions over the configured limits, so every rule is unit- and property-tested.
//!
//! Rules, per field (the error names the field):
//! - ids (`user_id`, `item_id`, `event_id`): trimmed; non-empty; at most `max_id_len` bytes; no
//!   control characters.
//! - `kind`: a known `EventKind`, not UNSPECIFIED.
//! - `value`: must be finite. RATING: required and inside `[rating_min, rating_max]`;
//!   normalised as `(v − min) / (max − min)`. Other kinds: optional (missing → 1.0, flagged
//!   `value_filled`), not negative, above `value_cap` clipped to it (flagged `value_clipped`);
//!   normalised as `v / value_cap`.
//! - `timestamp_ms`: 0 → the time ingest received it (flagged `timestamp_filled`); otherwise
//!   not before `min_timestamp_ms` and not more than `max_future_ms` ahead of now.
//! - texts at most `max_text_len` bytes; tags and attributes at most `max_tags` entries.
//! - `event_id` empty → `h-` + 32 hex digits of SHA-256 over the client's fields, so a retried
//!   record without an id still de-duplicates.

use recalloc_common::config::IngestConfig;
use recalloc_proto::v1::{Event, EventKind, EventRecord, Item, ItemRecord, User, UserRecord};
use sha2::{Digest, Sha256};

/// Why one record was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("record {index}: {field}: {reason}")]
pub struct RecordError {
    pub index: u32,
    pub field: &'static str,
    pub reason: String,
}

/// The limits the rules check, taken from the ingest config.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_id_len: usize,
    pub max_text_len: usize,
    pub max_tags: usize,
    pub rating_min: f64,
    pub rating_max: f64,
    pub value_cap: f64,
    pub min_timestamp_ms: i64,
    pub max_future_ms: i64,
}

impl From<&IngestConfig> for Limits {
    fn from(c: &IngestConfig) -> Self {
        Self {
            max_id_len: c.max_id_len as usize,
            max_text_len: c.max_text_len as usize,
            max_tags: c.max_tags as usize,
            rating_min: c.rating_min,
            rating_max: c.rating_max,
            value_cap: c.value_cap,
            min_timestamp_ms: c.min_timestamp_ms,
            max_future_ms: c.max_future_ms,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::from(&IngestConfig::default())
    }
}

/// Checks the limits themselves (a rating scale of zero width would divide by zero).
pub fn check_limits(l: &Limits) -> Result<(), String> {
    if !(l.rating_min.is_finite() && l.rating_max.is_finite() && l.rating_min < l.rating_max) {
        return Err(format!(
            "invalid config key ingest.rating_min/rating_max: need finite min < max, got [{}, {}]",
            l.rating_min, l.rating_max
        ));
    }
    if !(l.value_cap.is_finite() && l.value_cap > 0.0) {
        return Err(format!(
            "invalid config key ingest.value_cap: need a positive number, got {}",
            l.value_cap
        ));
    }
    Ok(())
}

fn err(index: u32, field: &'static str, reason: impl Into<String>) -> RecordError {
    RecordError {
        index,
        field,
        reason: reason.into(),
    }
}

/// Trims and checks an id.
pub fn clean_id(
    index: u32,
    field: &'static str,
    raw: &str,
    l: &Limits,
) -> Result<String, RecordError> {
    let id = raw.trim();
    if id.is_empty() {
        return Err(err(index, field, "must not be empty"));
    }
    if id.len() > l.max_id_len {
        return Err(err(
            index,
            field,
            format!(
                "is {} bytes, longer than the limit of {}",
                id.len(),
                l.max_id_len
            ),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(err(index, field, "must not contain control characters"));
    }
    Ok(id.to_owned())
}

fn check_text(
    index: u32,
    field: &'static str,
    text: &str,
    l: &Limits,
) -> Result<String, RecordError> {
    if text.len() > l.max_text_len {
        return Err(err(
            index,
            field,
            format!(
                "is {} bytes, longer than the limit of {}",
                text.len(),
                l.max_text_len
            ),
        ));
    }
    Ok(text.trim().to_owned())
}

fn check_map(
    index: u32,
    field: &'static str,
    map: &std::collections::HashMap<String, String>,
    l: &Limits,
) -> Result<(), RecordError> {
    if map.len() > l.max_tags {
        return Err(err(
            index,
            field,
            format!(
                "has {} entries, more than the limit of {}",
                map.len(),
                l.max_tags
            ),
        ));
    }
    for (k, v) in map {
        if k.is_empty() || k.len() > l.max_id_len {
            return Err(err(
                index,
                field,
                format!("key {k:?} must be 1..={} bytes", l.max_id_len),
            ));
        }
        if v.len() > l.max_text_len {
            return Err(err(
                index,
                field,
                format!("value of {k:?} is longer than {} bytes", l.max_text_len),
            ));
        }
    }
    Ok(())
}

/// The id ingest gives an event that came without one: a hash of what the client sent.
pub fn stable_event_id(e: &Event) -> String {
    let mut h = Sha256::new();
    for part in [e.user_id.trim(), e.item_id.trim()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(e.kind.to_le_bytes());
    match e.value {
        Some(v) => {
            h.update([1]);
            h.update(v.to_bits().to_le_bytes());
        }
        None => h.update([0]),
    }
    h.update(e.timestamp_ms.to_le_bytes());
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("h-{hex}")
}

/// Validates and preprocesses one event into the record written to Kafka.
pub fn event(
    index: u32,
    e: &Event,
    now_ms: i64,
    ingested_at_ms: i64,
    l: &Limits,
) -> Result<EventRecord, RecordError> {
    let user_id = clean_id(index, "user_id", &e.user_id, l)?;
    let item_id = clean_id(index, "item_id", &e.item_id, l)?;
    let event_id = if e.event_id.trim().is_empty() {
        stable_event_id(e)
    } else {
        clean_id(index, "event_id", &e.event_id, l)?
    };
    let kind = match EventKind::try_from(e.kind) {
        Ok(EventKind::Unspecified) => {
            return Err(err(
                index,
                "kind",
                "must be set (view, click, purchase, rating, …)",
            ));
        }
        Ok(k) => k,
        Err(_) => return Err(err(index, "kind", format!("unknown event kind {}", e.kind))),
    };
    let (value, normalized, filled, clipped) = preprocess_value(index, kind, e.value, l)?;
    let (timestamp_ms, timestamp_filled) = preprocess_timestamp(index, e.timestamp_ms, now_ms, l)?;
    check_map(index, "context", &e.context, l)?;
    Ok(EventRecord {
        event_id,
        user_id,
        item_id,
        kind: kind as i32,
        raw_value: e.value,
        normalized_value: normalized,
        value,
        timestamp_ms,
        value_filled: filled,
        value_clipped: clipped,
        timestamp_filled,
        ingested_at_ms,
        context: e.context.clone(),
    })
}

/// Returns (value, normalised value, filled, clipped).
fn preprocess_value(
    index: u32,
    kind: EventKind,
    value: Option<f64>,
    l: &Limits,
) -> Result<(f64, f64, bool, bool), RecordError> {
    if let Some(v) = value
        && !v.is_finite()
    {
        return Err(err(
            index,
            "value",
            format!("must be a finite number, got {v}"),
        ));
    }
    if kind == EventKind::Rating {
        let Some(v) = value else {
            return Err(err(index, "value", "is required for rating events"));
        };
        if v < l.rating_min || v > l.rating_max {
            return Err(err(
                index,
                "value",
                format!(
                    "rating {v} is outside the scale [{}, {}]",
                    l.rating_min, l.rating_max
                ),
            ));
        }
        let norm = (v - l.rating_min) / (l.rating_max - l.rating_min);
        return Ok((v, norm, false, false));
    }
    match value {
        None => Ok((1.0, (1.0 / l.value_cap).min(1.0), true, false)),
        Some(v) if v < 0.0 => Err(err(
            index,
            "value",
            format!("must not be negative, got {v}"),
        )),
        Some(v) if v > l.value_cap => Ok((l.value_cap, 1.0, false, true)),
        Some(v) => Ok((v, v / l.value_cap, false, false)),
    }
}

fn preprocess_timestamp(
    index: u32,
    ts: i64,
    now_ms: i64,
    l: &Limits,
) -> Result<(i64, bool), RecordError> {
    if ts == 0 {
        return Ok((now_ms, true));
    }
    if ts < 0 {
        return Err(err(
            index,
            "timestamp_ms",
            format!("must not be negative, got {ts}"),
        ));
    }
    if ts < l.min_timestamp_ms {
        let hint = if ts.saturating_mul(1000) >= l.min_timestamp_ms
            && ts.saturating_mul(1000) <= now_ms + l.max_future_ms
        {
            " (it looks like seconds; the field is unix milliseconds)"
        } else {
            ""
        };
        return Err(err(
            index,
            "timestamp_ms",
            format!(
                "{ts} is before the earliest accepted time {}{hint}",
                l.min_timestamp_ms
            ),
        ));
    }
    if ts > now_ms.saturating_add(l.max_future_ms) {
        return Err(err(
            index,
            "timestamp_ms",
            format!("{ts} is more than {} ms in the future", l.max_future_ms),
        ));
    }
    Ok((ts, false))
}

/// Validates one item; the title is required (it is what the encoder reads first).
pub fn item(index: u32, it: &Item, now_ms: i64, l: &Limits) -> Result<ItemRecord, RecordError> {
    let item_id = clean_id(index, "item_id", &it.item_id, l)?;
    let title = check_text(index, "title", &it.title, l)?;
    if title.is_empty() {
        return Err(err(index, "title", "must not be empty"));
    }
    let description = check_text(index, "description", &it.description, l)?;
    if it.tags.len() > l.max_tags {
        return Err(err(
            index,
            "tags",
            format!(
                "has {} entries, more than the limit of {}",
                it.tags.len(),
                l.max_tags
            ),
        ));
    }
    let mut tags: Vec<String> = Vec::with_capacity(it.tags.len());
    for t in &it.tags {
        let t = clean_id(index, "tags", t, l)?;
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    check_map(index, "attributes", &it.attributes, l)?;
    Ok(ItemRecord {
        item: Some(Item {
            item_id,
            title,
            description,
            tags,
            attributes: it.attributes.clone(),
        }),
        updated_at_ms: now_ms,
    })
}

/// Validates one user; profile text may be empty (behaviour alone can make a profile).
pub fn user(index: u32, u: &User, now_ms: i64, l: &Limits) -> Result<UserRecord, RecordError> {
    let user_id = clean_id(index, "user_id", &u.user_id, l)?;
    let profile_text = check_text(index, "profile_text", &u.profile_text, l)?;
    check_map(index, "attributes", &u.attributes, l)?;
    Ok(UserRecord {
        user: Some(User {
            user_id,
            profile_text,
            attributes: u.attributes.clone(),
        }),
        updated_at_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000_000;

    fn ev(kind: EventKind, value: Option<f64>) -> Event {
        Event {
            event_id: String::new(),
            user_id: "u1".into(),
            item_id: "i1".into(),
            kind: kind as i32,
            value,
            timestamp_ms: NOW - 1000,
            context: Default::default(),
        }
    }

    fn check(e: &Event) -> Result<EventRecord, RecordError> {
        event(3, e, NOW, NOW, &Limits::default())
    }

    #[test]
    fn rating_is_normalised_and_raw_kept() {
        let r = check(&ev(EventKind::Rating, Some(4.0))).unwrap();
        assert_eq!(r.value, 4.0);
        assert_eq!(r.raw_value, Some(4.0));
        assert!((r.normalized_value - 0.75).abs() < 1e-12);
        assert!(r.event_id.starts_with("h-") && r.event_id.len() == 34);
    }

    #[test]
    fn every_rule_names_its_field() {
        let cases: Vec<(Event, &str, &str)> = vec![
            (
                Event {
                    user_id: "  ".into(),
                    ..ev(EventKind::View, None)
                },
                "user_id",
                "must not be empty",
            ),
            (
                Event {
                    item_id: "".into(),
                    ..ev(EventKind::View, None)
                },
                "item_id",
                "must not be empty",
            ),
            (
                Event {
                    user_id: "x".repeat(257),
                    ..ev(EventKind::View, None)
                },
                "user_id",
                "longer than",
            ),
            (
                Event {
                    item_id: "a\u{7}b".into(),
                    ..ev(EventKind::View, None)
                },
                "item_id",
                "control",
            ),
            (
                Event {
                    event_id: "e".repeat(300),
                    ..ev(EventKind::View, None)
                },
                "event_id",
                "longer than",
            ),
            (
                Event {
                    kind: 0,
                    ..ev(EventKind::View, None)
                },
                "kind",
                "must be set",
            ),
            (
                Event {
                    kind: 99,
                    ..ev(EventKind::View, None)
                },
                "kind",
                "unknown event kind 99",
            ),
            (ev(EventKind::Rating, None), "value", "required for rating"),
            (
                ev(EventKind::Rating, Some(6.0)),
                "value",
                "outside the scale",
            ),
            (
                ev(EventKind::Rating, Some(0.5)),
                "value",
                "outside the scale",
            ),
            (ev(EventKind::Click, Some(f64::NAN)), "value", "finite"),
            (ev(EventKind::Click, Some(-1.0)), "value", "negative"),
            (
                Event {
                    timestamp_ms: -5,
                    ..ev(EventKind::View, None)
                },
                "timestamp_ms",
                "negative",
            ),
            (
                Event {
                    timestamp_ms: 881_250_949,
                    ..ev(EventKind::View, None)
                },
                "timestamp_ms",
                "looks like seconds",
            ),
            (
                Event {
                    timestamp_ms: NOW + 2 * 86_400_000,
                    ..ev(EventKind::View, None)
                },
                "timestamp_ms",
                "future",
            ),
        ];
        for (e, field, reason) in cases {
            let got = check(&e).unwrap_err();
            assert_eq!(got.index, 3);
            assert_eq!(got.field, field, "{got}");
            assert!(got.reason.contains(reason), "{got}");
        }
    }

    #[test]
    fn missing_values_are_filled_and_outliers_clipped() {
        let r = check(&ev(EventKind::View, None)).unwrap();
        assert!(r.value_filled && r.value == 1.0 && r.raw_value.is_none());
        let r = check(&ev(EventKind::Dwell, Some(5_000.0))).unwrap();
        assert!(r.value_clipped && r.value == 1_000.0 && r.normalized_value == 1.0);
        assert_eq!(r.raw_value, Some(5_000.0));
        let r = check(&Event {
            timestamp_ms: 0,
            ..ev(EventKind::View, None)
        })
        .unwrap();
        assert!(r.timestamp_filled && r.timestamp_ms == NOW);
    }

    #[test]
    fn ids_are_trimmed_and_client_ids_kept() {
        let r = check(&Event {
            user_id: " u1 ".into(),
            event_id: "e-1".into(),
            ..ev(EventKind::View, None)
        })
        .unwrap();
        assert_eq!(r.user_id, "u1");
        assert_eq!(r.event_id, "e-1");
    }

    #[test]
    fn stable_id_depends_on_content_only() {
        let a = ev(EventKind::Rating, Some(4.0));
        assert_eq!(stable_event_id(&a), stable_event_id(&a.clone()));
        assert_ne!(
            stable_event_id(&a),
            stable_event_id(&ev(EventKind::Rating, Some(5.0)))
        );
        assert_ne!(
            stable_event_id(&a),
            stable_event_id(&Event {
                timestamp_ms: 1,
                ..a.clone()
            })
        );
    }

    #[test]
    fn items_and_users() {
        let l = Limits::default();
        let it = Item {
            item_id: "b1".into(),
            title: " Dune ".into(),
            tags: vec!["sf".into(), "sf".into(), " classic ".into()],
            ..Default::default()
        };
        let r = item(0, &it, NOW, &l).unwrap().item.unwrap();
        assert_eq!(r.title, "Dune");
        assert_eq!(r.tags, vec!["sf", "classic"]);
        let e = item(
            1,
            &Item {
                item_id: "b".into(),
                ..Default::default()
            },
            NOW,
            &l,
        )
        .unwrap_err();
        assert_eq!((e.index, e.field), (1, "title"));
        let e = item(
            0,
            &Item {
                item_id: "b".into(),
                title: "t".into(),
                tags: vec!["".into()],
                ..Default::default()
            },
            NOW,
            &l,
        )
        .unwrap_err();
        assert_eq!(e.field, "tags");
        let e = user(
            0,
            &User {
                user_id: "u".into(),
                profile_text: "x".repeat(20_000),
                ..Default::default()
            },
            NOW,
            &l,
        )
        .unwrap_err();
        assert_eq!(e.field, "profile_text");
        assert!(
            user(
                0,
                &User {
                    user_id: "u".into(),
                    ..Default::default()
                },
                NOW,
                &l
            )
            .is_ok()
        );
    }

    #[test]
    fn bad_limits_are_refused() {
        assert!(
            check_limits(&Limits {
                rating_min: 5.0,
                rating_max: 5.0,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            check_limits(&Limits {
                value_cap: 0.0,
                ..Default::default()
            })
            .is_err()
        );
        assert!(check_limits(&Limits::default()).is_ok());
    }

    proptest! {
        // No input panics, and whatever passes satisfies every rule.
        #[test]
        fn never_panics_and_accepted_records_obey_the_rules(
            user in ".{0,300}", item_id in ".{0,10}", kind in -2i32..12, value in proptest::option::of(proptest::num::f64::ANY),
            ts in proptest::num::i64::ANY, event_id in ".{0,5}",
        ) {
            let e = Event { event_id, user_id: user, item_id, kind, value, timestamp_ms: ts, context: Default::default() };
            let l = Limits::default();
            if let Ok(r) = event(0, &e, NOW, NOW, &l) {
                prop_assert!(!r.user_id.is_empty() && r.user_id.len() <= l.max_id_len);
                prop_assert!(!r.item_id.is_empty() && !r.event_id.is_empty());
                prop_assert!(r.value.is_finite() && (0.0..=1.0).contains(&r.normalized_value));
                prop_assert!(r.timestamp_ms >= l.min_timestamp_ms && r.timestamp_ms <= NOW + l.max_future_ms);
                prop_assert!(r.kind > 0);
            }
        }
    }
}
