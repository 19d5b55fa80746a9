//! Status conditions whose `lastTransitionTime` moves only when their status flips, so a status
//! recomputed from the same facts is byte-for-byte the same and is not written again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Sets condition `type_` in `conditions`, keeping its transition time unless `status` changed.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" };
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now.clone();
                existing.status = status.to_owned();
            }
            existing.reason = reason.to_owned();
            existing.message = message;
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Where reconciliation of an object stands, as kstatus (the status library of Flux, `kubectl
/// wait`-style tools and cli-utils) reads it from the abnormal-true conditions `Reconciling` and
/// `Stalled`: an object with neither True, whose `observedGeneration` is its generation and whose
/// `Ready` is True, is Current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<'a> {
    /// As its spec asks.
    Settled,
    /// On the way there (provisioning, waking, waiting for something that will come).
    Reconciling { reason: &'a str, message: &'a str },
    /// Cannot get there until someone changes the object or the configuration.
    Stalled { reason: &'a str, message: &'a str },
}

/// Sets `Reconciling` and `Stalled` from `progress`: True with its reason while it applies,
/// False (reason `Settled`, or the other's) otherwise.
pub fn set_progress(conditions: &mut Vec<Condition>, progress: Progress, generation: Option<i64>, now: &Time) {
    let (reconciling, stalled) = match progress {
        Progress::Settled => (None, None),
        Progress::Reconciling { reason, message } => (Some((reason, message)), None),
        Progress::Stalled { reason, message } => (None, Some((reason, message))),
    };
    for (type_, state) in [("Reconciling", reconciling), ("Stalled", stalled)] {
        let (reason, message) = state.unwrap_or(("Settled", ""));
        set(conditions, type_, state.is_some(), reason, message, generation, now);
    }
}

/// Whether condition `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conditions = Vec::new();
        set(&mut conditions, "Ready", false, "Provisioning", "waiting", Some(1), &at(100));
        set(&mut conditions, "Ready", false, "Provisioning", "still waiting", Some(2), &at(200));
        assert_eq!(conditions[0].last_transition_time, at(100));
        assert_eq!(conditions[0].message, "still waiting");
        assert_eq!(conditions[0].observed_generation, Some(2));

        set(&mut conditions, "Ready", true, "Running", "ready", Some(2), &at(300));
        assert_eq!(conditions[0].last_transition_time, at(300));
        assert!(is_true(&conditions, "Ready"));
        assert_eq!(conditions.len(), 1);
    }

    #[test]
    fn progress_sets_exactly_one_abnormal_condition_true() {
        let mut conditions = Vec::new();
        let provisioning = Progress::Reconciling { reason: "Provisioning", message: "waiting for the pod" };
        set_progress(&mut conditions, provisioning, Some(1), &at(100));
        assert!(is_true(&conditions, "Reconciling") && !is_true(&conditions, "Stalled"));
        let failed = Progress::Stalled { reason: "InvalidIdleTimeout", message: "too short" };
        set_progress(&mut conditions, failed, Some(2), &at(200));
        assert!(!is_true(&conditions, "Reconciling") && is_true(&conditions, "Stalled"));
        let stalled = conditions.iter().find(|c| c.type_ == "Stalled").expect("Stalled");
        assert_eq!((stalled.reason.as_str(), stalled.message.as_str()), ("InvalidIdleTimeout", "too short"));
        assert_eq!(stalled.observed_generation, Some(2));
        set_progress(&mut conditions, Progress::Settled, Some(3), &at(300));
        assert!(!is_true(&conditions, "Reconciling") && !is_true(&conditions, "Stalled"));
        assert_eq!(conditions.len(), 2);
        assert!(conditions.iter().all(|c| c.reason == "Settled" && c.message.is_empty()));
        let flipped =
            |type_: &str| conditions.iter().find(|c| c.type_ == type_).expect(type_).last_transition_time.clone();
        assert_eq!((flipped("Reconciling"), flipped("Stalled")), (at(200), at(300)));
    }
}
