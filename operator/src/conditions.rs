//! Status conditions. `lastTransitionTime` moves only when a condition's status flips, so
//! writing the same status twice is a no-op and cannot feed a reconcile loop.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType, Recorder};

/// One condition as the reconcile sees it, before it is merged into the stored list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Condition type, e.g. `Ready`.
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Sentence a person can act on.
    pub message: String,
}

impl Desired {
    /// A condition that holds.
    pub fn yes(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Desired { type_, status: true, reason, message: message.into() }
    }

    /// A condition that does not hold.
    pub fn no(type_: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Desired { type_, status: false, reason, message: message.into() }
    }

    /// The condition's status as Kubernetes spells it.
    pub fn status_str(&self) -> &'static str {
        if self.status {
            "True"
        } else {
            "False"
        }
    }
}

/// A condition whose status changed in a merge (for Events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    /// Condition type.
    pub type_: &'static str,
    /// New status.
    pub status: bool,
    /// New reason.
    pub reason: &'static str,
    /// New message.
    pub message: String,
}

/// Merges `desired` into the conditions stored before. Conditions not in `desired` are
/// dropped; `lastTransitionTime` is kept from `previous` unless the status flipped. Returns the
/// new list (in `desired` order) and the flips.
pub fn merge(
    previous: &[Condition],
    desired: Vec<Desired>,
    generation: Option<i64>,
    now: Timestamp,
) -> (Vec<Condition>, Vec<Flip>) {
    let mut flips = Vec::new();
    let conditions = desired
        .into_iter()
        .map(|d| {
            let before = previous.iter().find(|c| c.type_ == d.type_);
            let flipped = before.is_none_or(|c| c.status != d.status_str());
            let last_transition_time = match before {
                Some(c) if !flipped => c.last_transition_time.clone(),
                _ => Time(now),
            };
            if flipped {
                flips.push(Flip {
                    type_: d.type_,
                    status: d.status,
                    reason: d.reason,
                    message: d.message.clone(),
                });
            }
            Condition {
                type_: d.type_.to_owned(),
                status: d.status_str().to_owned(),
                reason: d.reason.to_owned(),
                message: d.message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect();
    (conditions, flips)
}

/// Publishes a Kubernetes Event per flip on `reference`; `warning` says which flips are bad
/// news. An Event that cannot be written is logged, never a reason to fail the reconcile.
pub async fn publish_flips(
    recorder: &Recorder,
    reference: &ObjectReference,
    flips: Vec<Flip>,
    warning: impl Fn(&Flip) -> bool,
) {
    for flip in flips {
        let event = Event {
            type_: if warning(&flip) { EventType::Warning } else { EventType::Normal },
            reason: flip.reason.into(),
            note: Some(format!(
                "{} is {}: {}",
                flip.type_,
                if flip.status { "True" } else { "False" },
                flip.message
            )),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, reference).await {
            tracing::warn!(%err, "cannot publish event");
        }
    }
}

/// Whether the condition `type_` is `True` in `conditions`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid timestamp")
    }

    #[test]
    fn transition_time_stays_when_status_stays_even_if_the_message_changes() {
        let (first, flips) =
            merge(&[], vec![Desired::no("Ready", "Progressing", "0/2 ready")], Some(1), at(100));
        assert_eq!(flips.len(), 1, "a new condition is a flip");
        let (second, flips) =
            merge(&first, vec![Desired::no("Ready", "Progressing", "1/2 ready")], Some(2), at(200));
        assert!(flips.is_empty());
        assert_eq!(second[0].last_transition_time, Time(at(100)));
        assert_eq!(second[0].message, "1/2 ready");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn transition_time_moves_on_a_flip() {
        let (first, _) = merge(&[], vec![Desired::no("Ready", "Progressing", "0/2")], None, at(100));
        let (second, flips) = merge(&first, vec![Desired::yes("Ready", "Ready", "2/2")], None, at(300));
        assert_eq!(second[0].last_transition_time, Time(at(300)));
        assert_eq!(
            flips,
            vec![Flip { type_: "Ready", status: true, reason: "Ready", message: "2/2".into() }]
        );
        assert!(is_true(&second, "Ready"));
        assert!(!is_true(&first, "Ready"));
    }
}
