//! Generated gRPC and message types. `v1` is the public API; `externalscaler` is KEDA's protocol.

pub mod v1 {
    tonic::include_proto!("recalloc.v1");
}

pub mod externalscaler {
    tonic::include_proto!("externalscaler");
}

/// Encoded `FileDescriptorSet` of every proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("recalloc_descriptor");

/// Kafka topic names. Versioned with the record types they carry.
pub mod topics {
    pub const EVENTS: &str = "recalloc.events.v1";
    pub const ITEMS: &str = "recalloc.items.v1";
    pub const USERS: &str = "recalloc.users.v1";
    pub const ALL: [&str; 3] = [EVENTS, ITEMS, USERS];
}

/// One decoded record of any topic: what the stream's codec yields and what the featurizer's
/// store applies.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Event(v1::EventRecord),
    Item(v1::ItemRecord),
    User(v1::UserRecord),
}
