//! When a project runs, hibernates, wakes or stops. Pure: the caller supplies the facts and the
//! clock, and carries out the decision.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::{DesiredState, Phase};

/// What the operator knows about a project right now.
#[derive(Debug, Clone)]
pub struct Facts {
    pub desired: DesiredState,
    /// The phase recorded in status before this reconcile.
    pub previous_phase: Option<Phase>,
    /// `renewTime` of the activity Lease: the last activity anyone saw.
    pub last_activity: Timestamp,
    pub idle_timeout: Duration,
    /// Whether the project has a Ready pod that is not terminating.
    pub pod_ready: bool,
    /// When that pod became Ready, if it is.
    pub ready_since: Option<Timestamp>,
    /// When the project last went into or out of hibernation (its `Hibernated` condition's
    /// transition): during a wake, the pod scaled away at hibernation was Ready before it.
    pub hibernation_changed: Option<Timestamp>,
    /// The StatefulSet's controller has acted on the StatefulSet as this process last applied it,
    /// running at least one replica. A pod Ready since before the hibernation is then one it
    /// kept: the wake came before the controller ever saw the scale to zero.
    pub set_caught_up: bool,
    pub now: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub replicas: i32,
    pub phase: Phase,
    /// Reconcile again at this point even if nothing changes (the idle deadline).
    pub recheck_after: Option<Duration>,
    /// The activity Lease must be renewed now: a stopped project was asked to run again, and
    /// must not be hibernated at once for the idleness it had while stopped.
    pub renew_activity: bool,
    /// Set when this reconcile saw a wake complete: from the Lease renewal to now, when the
    /// operator sees the pod Ready (the Lease's renewTime has microseconds; pod conditions don't).
    pub completed_wake: Option<Duration>,
}

/// How much longer than its idle timeout a start may take, without activity, before the project
/// is hibernated anyway.
pub const START_GRACE: Duration = Duration::from_secs(10 * 60);

pub fn decide(facts: &Facts) -> Decision {
    if facts.desired == DesiredState::Stopped {
        return Decision {
            replicas: 0,
            phase: Phase::Stopped,
            recheck_after: None,
            renew_activity: false,
            completed_wake: None,
        };
    }
    let restarting = facts.previous_phase == Some(Phase::Stopped);
    let last_activity = if restarting { facts.now } else { facts.last_activity };
    // Nobody can use a project before its pod is Ready, so it is not idle while it starts or
    // wakes (a slow image pull, say), and its idle clock starts no earlier than the pod's Ready.
    // A start that never finishes is let go once it has also outlasted [`START_GRACE`] with
    // nobody asking for it, so a pod that cannot start does not hold its resources for ever.
    let starting = !facts.pod_ready
        && matches!(facts.previous_phase, None | Some(Phase::Pending | Phase::Provisioning | Phase::Waking))
        && elapsed(last_activity, facts.now) < facts.idle_timeout + START_GRACE;
    let idle_since = facts.ready_since.filter(|ready| *ready > last_activity).unwrap_or(last_activity);
    let idle_for = if starting { Duration::ZERO } else { elapsed(idle_since, facts.now) };
    if idle_for >= facts.idle_timeout && !restarting {
        return Decision {
            replicas: 0,
            phase: Phase::Hibernated,
            recheck_after: None,
            renew_activity: false,
            completed_wake: None,
        };
    }
    let waking = matches!(facts.previous_phase, Some(Phase::Hibernated | Phase::Waking));
    // A wake is complete when the woken pod is Ready, not the one scaled away at hibernation,
    // which the cache may still show Ready until its deletion arrives: during a wake, a pod
    // Ready since before the project hibernated (to the second, as conditions' times are) counts
    // only once the StatefulSet's controller has shown that it kept that pod.
    let scaled_away = |since: Timestamp| facts.hibernation_changed.is_some_and(|h| since.as_second() < h.as_second());
    let from_before = facts.ready_since.is_some_and(scaled_away);
    let pod_ready = facts.pod_ready && !(waking && from_before && !facts.set_caught_up);
    let (phase, completed_wake) = match (pod_ready, waking) {
        (true, true) => (Phase::Running, Some(elapsed(last_activity, facts.now))),
        (true, false) => (Phase::Running, None),
        (false, true) => (Phase::Waking, None),
        (false, false) => (Phase::Provisioning, None),
    };
    Decision {
        replicas: 1,
        phase,
        // A second of slack, so the deadline has passed when the check runs.
        recheck_after: Some(facts.idle_timeout - idle_for + Duration::from_secs(1)),
        renew_activity: restarting,
        completed_wake,
    }
}

/// Time from `since` to `now`; a time stamped ahead of this clock counts as now.
fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    if now > since { now.duration_since(since).unsigned_abs() } else { Duration::ZERO }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn facts() -> Facts {
        Facts {
            desired: DesiredState::Running,
            previous_phase: Some(Phase::Running),
            last_activity: at(0),
            idle_timeout: Duration::from_secs(60),
            pod_ready: true,
            ready_since: Some(at(-5)),
            hibernation_changed: None,
            set_caught_up: true,
            now: at(10),
        }
    }

    #[test]
    fn an_active_project_runs_and_is_rechecked_at_its_idle_deadline() {
        let d = decide(&facts());
        assert_eq!((d.replicas, d.phase), (1, Phase::Running));
        assert_eq!(d.recheck_after, Some(Duration::from_secs(51)));
        assert!(!d.renew_activity);
    }

    #[test]
    fn a_new_project_is_provisioning_until_its_pod_is_ready() {
        let d = decide(&Facts { previous_phase: None, pod_ready: false, ..facts() });
        assert_eq!((d.replicas, d.phase), (1, Phase::Provisioning));
    }

    #[test]
    fn an_idle_project_hibernates() {
        let d = decide(&Facts { now: at(60), ..facts() });
        assert_eq!((d.replicas, d.phase, d.recheck_after), (0, Phase::Hibernated, None));
    }

    #[test]
    fn a_project_that_takes_longer_than_its_idle_timeout_to_start_is_not_hibernated_before_it_runs() {
        let slow = Facts {
            previous_phase: Some(Phase::Provisioning),
            pod_ready: false,
            ready_since: None,
            now: at(500),
            ..facts()
        };
        assert_eq!(decide(&slow).phase, Phase::Provisioning);

        // Once Ready, the idle clock starts from the pod's Ready, not from the old activity.
        let ready = Facts { pod_ready: true, ready_since: Some(at(500)), now: at(520), ..slow };
        let d = decide(&ready);
        assert_eq!((d.replicas, d.phase), (1, Phase::Running));
        assert_eq!(d.recheck_after, Some(Duration::from_secs(41)));
        assert_eq!(decide(&Facts { now: at(560), ..ready }).phase, Phase::Hibernated);
    }

    #[test]
    fn a_start_that_never_finishes_is_let_go_after_the_idle_timeout_and_the_grace() {
        let stuck = Facts { previous_phase: Some(Phase::Provisioning), pod_ready: false, ready_since: None, ..facts() };
        let deadline = 60 + START_GRACE.as_secs() as i64;
        assert_eq!(decide(&Facts { now: at(deadline - 1), ..stuck.clone() }).phase, Phase::Provisioning);
        let d = decide(&Facts { now: at(deadline), ..stuck });
        assert_eq!((d.replicas, d.phase), (0, Phase::Hibernated));
    }

    #[test]
    fn a_slow_wake_is_not_cut_short_by_the_idle_timeout() {
        let waking =
            Facts { previous_phase: Some(Phase::Waking), pod_ready: false, ready_since: None, now: at(300), ..facts() };
        assert_eq!((decide(&waking).replicas, decide(&waking).phase), (1, Phase::Waking));
    }

    #[test]
    fn a_running_project_whose_pod_fails_still_hibernates_when_idle() {
        let d = decide(&Facts { pod_ready: false, ready_since: None, now: at(60), ..facts() });
        assert_eq!((d.replicas, d.phase), (0, Phase::Hibernated));
    }

    #[test]
    fn a_renewed_lease_wakes_a_hibernated_project() {
        let hibernated = Facts {
            previous_phase: Some(Phase::Hibernated),
            pod_ready: false,
            ready_since: None,
            last_activity: at(100),
            now: at(101),
            ..facts()
        };
        let d = decide(&hibernated);
        assert_eq!((d.replicas, d.phase), (1, Phase::Waking));

        let ready = Facts {
            previous_phase: Some(Phase::Waking),
            pod_ready: true,
            ready_since: Some(at(103)),
            now: at(103),
            ..hibernated
        };
        let d = decide(&ready);
        assert_eq!(d.phase, Phase::Running);
        assert_eq!(d.completed_wake, Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_wake_is_not_complete_on_the_pod_that_hibernation_scaled_away() {
        // Hibernated at 50, woken at 100; the cache still shows the pod that has been Ready
        // since before the hibernation, and not yet its deletion.
        let woken = Facts {
            previous_phase: Some(Phase::Hibernated),
            last_activity: at(100),
            pod_ready: true,
            ready_since: Some(at(-500)),
            hibernation_changed: Some(at(50)),
            set_caught_up: false,
            now: at(101),
            ..facts()
        };
        let d = decide(&woken);
        assert_eq!((d.replicas, d.phase, d.completed_wake), (1, Phase::Waking, None));
        // The woken pod (the condition flipped when the wake began), Ready although activity
        // went on meanwhile: the wake is complete.
        let d = decide(&Facts {
            previous_phase: Some(Phase::Waking),
            hibernation_changed: Some(at(100)),
            ready_since: Some(at(100)),
            last_activity: at(104),
            now: at(105),
            ..woken
        });
        assert_eq!((d.phase, d.completed_wake), (Phase::Running, Some(Duration::from_secs(1))));
    }

    #[test]
    fn a_wake_before_the_controller_saw_the_hibernation_completes_on_the_pod_it_kept() {
        // Hibernated at 50 and woken at 51, before the StatefulSet's controller had acted on
        // zero replicas: it never deletes the pod, which stays Ready since before the hibernation.
        let woken = Facts {
            previous_phase: Some(Phase::Waking),
            last_activity: at(51),
            pod_ready: true,
            ready_since: Some(at(-500)),
            hibernation_changed: Some(at(51)),
            set_caught_up: false,
            now: at(52),
            ..facts()
        };
        assert_eq!(decide(&woken).phase, Phase::Waking, "the controller may yet delete it");
        let d = decide(&Facts { set_caught_up: true, now: at(53), ..woken });
        assert_eq!((d.replicas, d.phase, d.completed_wake), (1, Phase::Running, Some(Duration::from_secs(2))));
    }

    #[test]
    fn stopped_means_zero_replicas_whatever_the_activity() {
        let d = decide(&Facts { desired: DesiredState::Stopped, last_activity: at(10), ..facts() });
        assert_eq!((d.replicas, d.phase, d.recheck_after), (0, Phase::Stopped, None));
    }

    #[test]
    fn restarting_a_stopped_project_renews_its_activity_instead_of_hibernating() {
        let d = decide(&Facts {
            previous_phase: Some(Phase::Stopped),
            last_activity: at(-10_000),
            pod_ready: false,
            ..facts()
        });
        assert_eq!((d.replicas, d.phase), (1, Phase::Provisioning));
        assert!(d.renew_activity);
    }
}
