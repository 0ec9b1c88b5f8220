//! Event kinds as the stored state names and weighs them: pure, shared by the featurizer's
//! scripts, profile fusion and implicit training.

use recalloc_proto::v1::EventKind;

/// How much one event of a kind adds to an item's popularity.
pub fn kind_weight(kind: EventKind) -> f64 {
    match kind {
        EventKind::View | EventKind::Dwell => 1.0,
        EventKind::Click => 2.0,
        EventKind::Share | EventKind::Wishlist => 3.0,
        EventKind::AddToCart => 4.0,
        EventKind::Rating => 5.0,
        EventKind::Purchase => 8.0,
        EventKind::Unspecified => 0.0,
    }
}

/// The kind a history entry names (see [`kind_name`]).
pub fn kind_from_name(name: &str) -> Option<EventKind> {
    (0..=8)
        .filter_map(|i| EventKind::try_from(i).ok())
        .find(|k| kind_name(*k) == name)
}

/// How strongly one event says "the user likes the item": the kind's weight, and for a
/// rating that weight times its place on the rating scale, so a lowest rating counts nothing.
/// Unknown kinds count nothing. Used by profile fusion and by implicit training.
pub fn event_strength(kind: &str, value: f64, rating_min: f64, rating_max: f64) -> f64 {
    let Some(k) = kind_from_name(kind) else {
        return 0.0;
    };
    let w = kind_weight(k);
    let span = rating_max - rating_min;
    if k == EventKind::Rating && span > 0.0 {
        w * ((value - rating_min) / span).clamp(0.0, 1.0)
    } else {
        w
    }
}

/// Short lower-case name used in history entries and logs.
pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Unspecified => "unspecified",
        EventKind::View => "view",
        EventKind::Click => "click",
        EventKind::AddToCart => "add_to_cart",
        EventKind::Purchase => "purchase",
        EventKind::Rating => "rating",
        EventKind::Wishlist => "wishlist",
        EventKind::Share => "share",
        EventKind::Dwell => "dwell",
    }
}
