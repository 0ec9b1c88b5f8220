//! Kafka record encoding: protobuf values, keys that keep per-user (per-item) order, and the
//! trace context header. Any producer that writes these messages to these topics (e.g. Python
//! `confluent-kafka` with protobuf classes generated from `proto/`) feeds the featurizer.

use prost::Message;
use recalloc_proto::Record;
use recalloc_proto::topics;
use recalloc_proto::v1::{EventRecord, ItemRecord, UserRecord};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("record on {topic} has no value")]
    Empty { topic: String },
    #[error("record on {topic} is not a valid {message}: {reason}")]
    Protobuf {
        topic: String,
        message: &'static str,
        reason: String,
    },
    #[error("record on {topic}: {field} must not be empty")]
    MissingField { topic: String, field: &'static str },
}

/// Decodes a record by the topic it came from, and checks what the featurizer relies on.
pub fn decode(topic: &str, payload: Option<&[u8]>) -> Result<Record, DecodeError> {
    let payload = payload.ok_or_else(|| DecodeError::Empty {
        topic: topic.to_owned(),
    })?;
    let bad = |message: &'static str, e: prost::DecodeError| DecodeError::Protobuf {
        topic: topic.to_owned(),
        message,
        reason: e.to_string(),
    };
    let missing = |field: &'static str| DecodeError::MissingField {
        topic: topic.to_owned(),
        field,
    };
    match topic {
        topics::EVENTS => {
            let e = EventRecord::decode(payload).map_err(|e| bad("EventRecord", e))?;
            if e.event_id.is_empty() {
                return Err(missing("event_id"));
            }
            if e.user_id.is_empty() {
                return Err(missing("user_id"));
            }
            if e.item_id.is_empty() {
                return Err(missing("item_id"));
            }
            Ok(Record::Event(e))
        }
        topics::ITEMS => {
            let r = ItemRecord::decode(payload).map_err(|e| bad("ItemRecord", e))?;
            match &r.item {
                Some(i) if !i.item_id.is_empty() => Ok(Record::Item(r)),
                _ => Err(missing("item.item_id")),
            }
        }
        topics::USERS => {
            let r = UserRecord::decode(payload).map_err(|e| bad("UserRecord", e))?;
            match &r.user {
                Some(u) if !u.user_id.is_empty() => Ok(Record::User(r)),
                _ => Err(missing("user.user_id")),
            }
        }
        other => Err(DecodeError::UnknownTopic(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use recalloc_proto::v1::Item;

    #[test]
    fn round_trip_and_errors() {
        let e = EventRecord {
            event_id: "e".into(),
            user_id: "u".into(),
            item_id: "i".into(),
            kind: 5,
            value: 4.0,
            ..Default::default()
        };
        assert_eq!(
            decode(topics::EVENTS, Some(&e.encode_to_vec())).unwrap(),
            Record::Event(e.clone())
        );
        let no_user = EventRecord {
            user_id: String::new(),
            ..e.clone()
        };
        assert!(matches!(
            decode(topics::EVENTS, Some(&no_user.encode_to_vec())),
            Err(DecodeError::MissingField {
                field: "user_id",
                ..
            })
        ));
        assert!(matches!(
            decode(topics::EVENTS, Some(&[0xff, 0xff, 0xff])),
            Err(DecodeError::Protobuf { .. })
        ));
        assert!(matches!(
            decode(topics::ITEMS, None),
            Err(DecodeError::Empty { .. })
        ));
        let it = ItemRecord {
            item: Some(Item {
                item_id: "b".into(),
                title: "t".into(),
                ..Default::default()
            }),
            updated_at_ms: 5,
        };
        assert!(decode(topics::ITEMS, Some(&it.encode_to_vec())).is_ok());
        assert!(matches!(
            decode("other", Some(&[])),
            Err(DecodeError::UnknownTopic(_))
        ));
    }

    proptest::proptest! {
        // Whatever bytes arrive on a topic, decoding returns a record or one of the documented
        // errors, never a panic; a record that decodes has every field the featurizer keys on.
        #[test]
        fn arbitrary_bytes_decode_or_fail_cleanly(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            topic in 0usize..4,
        ) {
            let topic = [topics::EVENTS, topics::ITEMS, topics::USERS, "elsewhere"][topic];
            match decode(topic, Some(&bytes)) {
                Ok(Record::Event(e)) => proptest::prop_assert!(
                    !e.event_id.is_empty() && !e.user_id.is_empty() && !e.item_id.is_empty()
                ),
                Ok(Record::Item(r)) => {
                    proptest::prop_assert!(r.item.is_some_and(|i| !i.item_id.is_empty()))
                }
                Ok(Record::User(r)) => {
                    proptest::prop_assert!(r.user.is_some_and(|u| !u.user_id.is_empty()))
                }
                Err(DecodeError::UnknownTopic(t)) => proptest::prop_assert_eq!(t, "elsewhere"),
                Err(e) => proptest::prop_assert!(e.to_string().contains(topic), "{e}"),
            }
        }
    }
}
