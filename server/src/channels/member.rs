//! A presence member as a subscriber signed it, and the sequence that orders member changes.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::protocol::frames::MemberRef;

/// Where a presence change stands in its app's member sequence, shared by every node: a member
/// list read with sequence `n` already shows every change numbered up to `n`, so a socket that
/// was given that list skips their `member_added` / `member_removed` frames (in a join storm over
/// several nodes it would otherwise hear of some members twice). 0 for a change without a number
/// (one node alone, a dead node's clean-up, a rejoin's republish): every subscriber hears it.
pub type MemberSeq = u64;

/// The sequence of a subscriber whose member list is still being read: member events for it are
/// held until the list's sequence says which it showed.
pub const PENDING: MemberSeq = MemberSeq::MAX;

/// A presence member: user id and the `user_info` JSON exactly as signed. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Member {
    /// User id (numeric ids kept as their decimal string).
    pub user_id: Arc<str>,
    /// Raw `user_info` JSON.
    pub user_info: Option<Arc<RawValue>>,
}

impl PartialEq for Member {
    fn eq(&self, other: &Self) -> bool {
        self.user_id == other.user_id
            && self.user_info.as_ref().map(|i| i.get()) == other.user_info.as_ref().map(|i| i.get())
    }
}

/// Why a presence `channel_data` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelDataError {
    /// Not a JSON object with a usable `user_id`.
    #[error("channel_data must be a JSON object with a non-empty string or numeric user_id ({0})")]
    Invalid(String),
    /// `user_id` over the app's limit.
    #[error("user_id is longer than {max} characters")]
    UserIdTooLong {
        /// The limit.
        max: usize,
    },
    /// `user_info` over the app's limit.
    #[error("user_info is {size} bytes; the limit is {max} bytes")]
    InfoTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

#[derive(serde::Deserialize)]
struct ChannelData<'a> {
    user_id: serde_json::Value,
    #[serde(default, borrow)]
    user_info: Option<&'a RawValue>,
}

impl Member {
    /// Parses the `channel_data` a presence subscriber signed: `{"user_id": string | number,
    /// "user_info": any}`, within the app's limits. Numeric ids become their decimal string.
    pub fn from_channel_data(raw: &str, limits: &crate::apps::Limits) -> Result<Member, ChannelDataError> {
        let data: ChannelData =
            serde_json::from_str(raw).map_err(|e| ChannelDataError::Invalid(e.to_string()))?;
        let user_id: Arc<str> = match &data.user_id {
            serde_json::Value::String(s) if !s.is_empty() => s.as_str().into(),
            serde_json::Value::Number(n) => n.to_string().into(),
            _ => return Err(ChannelDataError::Invalid("user_id".into())),
        };
        if user_id.len() > limits.max_user_id_length {
            return Err(ChannelDataError::UserIdTooLong { max: limits.max_user_id_length });
        }
        let size = data.user_info.map_or(0, |i| i.get().len());
        if size > limits.max_presence_member_size {
            return Err(ChannelDataError::InfoTooLarge { size, max: limits.max_presence_member_size });
        }
        let user_info = data.user_info.map(|i| Arc::<RawValue>::from(i.to_owned()));
        Ok(Member { user_id, user_info })
    }

    /// Borrowed form for frame building.
    pub fn as_ref(&self) -> MemberRef<'_> {
        MemberRef { user_id: &self.user_id, user_info: self.user_info.as_deref() }
    }
}
