//! The history's vocabulary: which operations it records or joins in, and
//! how a ListHistory filter names them. What a row holds and where it is
//! written live in `store::history` and the operations themselves.

/// An operation as ListHistory shows it. The first group is written to the
/// history table by the API call that made the change; the second is read
/// from the table that already records it (docs/design.md, "History").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Mint,
    MemberMint,
    Revoke,
    Update,
    Restore,
    Privileges,
    Reparent,
    Erase,
    WaitlistReview,
    WaitlistAdmit,
    RewardReview,
    ConversionVoid,
    Rekey,
    // Joined in from their own tables.
    Redeem,
    Reserve,
    Grant,
    Conversion,
}

impl Operation {
    pub const ALL: [Operation; 17] = [
        Operation::Mint,
        Operation::MemberMint,
        Operation::Revoke,
        Operation::Update,
        Operation::Restore,
        Operation::Privileges,
        Operation::Reparent,
        Operation::Erase,
        Operation::WaitlistReview,
        Operation::WaitlistAdmit,
        Operation::RewardReview,
        Operation::ConversionVoid,
        Operation::Rekey,
        Operation::Redeem,
        Operation::Reserve,
        Operation::Grant,
        Operation::Conversion,
    ];

    /// The name stored and shown (`history.operation`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Mint => "mint",
            Operation::MemberMint => "member_mint",
            Operation::Revoke => "revoke",
            Operation::Update => "update",
            Operation::Restore => "restore",
            Operation::Privileges => "privileges",
            Operation::Reparent => "reparent",
            Operation::Erase => "erase",
            Operation::WaitlistReview => "waitlist_review",
            Operation::WaitlistAdmit => "waitlist_admit",
            Operation::RewardReview => "reward_review",
            Operation::ConversionVoid => "conversion_void",
            Operation::Rekey => "rekey",
            Operation::Redeem => "redeem",
            Operation::Reserve => "reserve",
            Operation::Grant => "grant",
            Operation::Conversion => "conversion",
        }
    }

    pub fn parse(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Read from its own table rather than written to `history`.
    pub fn is_joined(self) -> bool {
        matches!(self, Operation::Redeem | Operation::Reserve | Operation::Grant | Operation::Conversion)
    }

    /// Every name, for an error message.
    pub fn names() -> String {
        Operation::ALL.iter().map(|op| op.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// One change, as the operation that made it records it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub operation: Operation,
    /// The recorded actor (`grpc::auth::recorded_actor`).
    pub caller: String,
    pub invitation_ids: Vec<uuid::Uuid>,
    pub batch_id: Option<uuid::Uuid>,
    pub user_ids: Vec<String>,
    pub reason: String,
    pub request_id: String,
    /// Small facts, never a user id (erasure rewrites only `user_ids`).
    pub details: Vec<(&'static str, String)>,
}

impl Entry {
    pub fn new(operation: Operation, caller: &str) -> Self {
        Entry {
            operation,
            caller: caller.to_owned(),
            invitation_ids: Vec::new(),
            batch_id: None,
            user_ids: Vec::new(),
            reason: String::new(),
            request_id: String::new(),
            details: Vec::new(),
        }
    }

    pub fn invitations(mut self, ids: impl IntoIterator<Item = uuid::Uuid>) -> Self {
        self.invitation_ids.extend(ids);
        self
    }

    pub fn batch(mut self, id: uuid::Uuid) -> Self {
        self.batch_id = Some(id);
        self
    }

    pub fn users<S: AsRef<str>>(mut self, ids: impl IntoIterator<Item = S>) -> Self {
        self.user_ids.extend(ids.into_iter().map(|s| s.as_ref().to_owned()));
        self
    }

    pub fn reason(mut self, reason: &str) -> Self {
        self.reason = reason.to_owned();
        self
    }

    pub fn request(mut self, request_id: Option<&crate::domain::RequestId>) -> Self {
        self.request_id = request_id.map(|r| r.as_str().to_owned()).unwrap_or_default();
        self
    }

    pub fn detail(mut self, key: &'static str, value: impl ToString) -> Self {
        self.details.push((key, value.to_string()));
        self
    }

    /// `details` as the JSON object stored.
    pub fn details_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> =
            self.details.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::String(v.clone()))).collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// What ListHistory selects; every field is optional and they combine
/// with AND.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub invitation_id: Option<uuid::Uuid>,
    /// As the caller or as a target.
    pub user_id: Option<String>,
    pub caller: Option<String>,
    pub operation: Option<Operation>,
    pub start_time: Option<time::OffsetDateTime>,
    pub end_time: Option<time::OffsetDateTime>,
}

impl Filter {
    /// The bytes a page token is bound to: a token made for other filters
    /// is refused.
    pub fn scope(&self) -> Vec<u8> {
        let mut s = b"history\0".to_vec();
        let time =
            |t: Option<time::OffsetDateTime>| t.map(|t| t.unix_timestamp_nanos().to_string()).unwrap_or_default();
        for part in [
            self.invitation_id.map(|u| u.to_string()).unwrap_or_default(),
            self.user_id.clone().unwrap_or_default(),
            self.caller.clone().unwrap_or_default(),
            self.operation.map(|o| o.as_str().to_owned()).unwrap_or_default(),
            time(self.start_time),
            time(self.end_time),
        ] {
            s.extend_from_slice(part.as_bytes());
            s.push(0);
        }
        s
    }
}

/// Where a page ends: newest first by time, then source, then key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub time: time::OffsetDateTime,
    pub source: i16,
    pub key: String,
}

impl Cursor {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.time.unix_timestamp_nanos().to_be_bytes().to_vec();
        out.extend_from_slice(&self.source.to_be_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Cursor> {
        let nanos = i128::from_be_bytes(bytes.get(..16)?.try_into().ok()?);
        let source = i16::from_be_bytes(bytes.get(16..18)?.try_into().ok()?);
        let key = String::from_utf8(bytes.get(18..)?.to_vec()).ok()?;
        let time = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
        Some(Cursor { time, source, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_operation() {
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.as_str()), Some(op));
        }
        assert_eq!(Operation::parse("Mint"), None, "names are exact");
        assert_eq!(Operation::parse(""), None);
    }

    #[test]
    fn a_cursor_survives_its_encoding_and_garbage_does_not_decode() {
        let c = Cursor {
            time: time::OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).expect("valid"),
            source: 3,
            key: "00000000000000000042".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode(b"short"), None);
    }

    #[test]
    fn the_scope_changes_with_every_filter() {
        let base = Filter::default();
        let variants = [
            Filter { invitation_id: Some(uuid::Uuid::nil()), ..Filter::default() },
            Filter { user_id: Some("a".into()), ..Filter::default() },
            Filter { caller: Some("a".into()), ..Filter::default() },
            Filter { operation: Some(Operation::Mint), ..Filter::default() },
            Filter { start_time: Some(time::OffsetDateTime::UNIX_EPOCH), ..Filter::default() },
            Filter { end_time: Some(time::OffsetDateTime::UNIX_EPOCH), ..Filter::default() },
        ];
        for v in &variants {
            assert_ne!(v.scope(), base.scope(), "{v:?}");
        }
        let user_a = Filter { user_id: Some("a".into()), ..Filter::default() };
        let caller_a = Filter { caller: Some("a".into()), ..Filter::default() };
        assert_ne!(user_a.scope(), caller_a.scope(), "the same value in another filter is another scope");
    }

    #[test]
    fn details_are_a_json_object_of_strings() {
        let e = Entry::new(Operation::Update, "admin").detail("fields", "label,note").detail("count", 2);
        assert_eq!(e.details_json(), r#"{"count":"2","fields":"label,note"}"#);
    }

    #[test]
    fn the_joined_ones_are_the_four_with_their_own_tables() {
        let joined: Vec<_> = Operation::ALL.into_iter().filter(|op| op.is_joined()).map(Operation::as_str).collect();
        assert_eq!(joined, ["redeem", "reserve", "grant", "conversion"]);
    }
}
