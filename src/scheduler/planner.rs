//! The pure part of running a fleet: given its graph and what has ended so far, which vessels
//! may start, which are skipped, and how the run ends. No I/O, no clocks, no sandbox: the
//! executor asks, the planner answers.
//!
//! The rule (README, *Paths*): every ended vessel leaves its downstream on a **success path** or
//! a **failure path**. A vessel that succeeded leaves a success path; one that failed, a failure
//! path; a skipped one passes on what it was given — a failure path if any vessel it needs left
//! one. So a failure handler attached anywhere below a failure sees it, however many skipped
//! vessels lie between, and a `success` vessel after a skipped failure handler still runs.
//!
//! A vessel starts once every vessel it needs has ended and its `when` holds: `success` — all
//! of them left success paths; `failure` — at least one left a failure path; `always` — in any
//! case. A vessel whose `when` does not hold is skipped. A fleet has at most 64 vessels, so sets
//! of vessels are bit masks.
//!
//! Two rules about whole runs live here too, for the same reason: what a queued run records
//! when it is cancelled ([`cancelled_vessels`]), and what a resume carries over
//! ([`resume_plan`]).

use crate::fleet::{FleetSpec, When};
use crate::sandbox::{FailureReason, VesselOutcome, VesselStatus};
use crate::store::{RunRecord, RunStatus, VesselRun};

/// Where a vessel is in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started.
    Pending,
    /// Started, not ended.
    Running,
    /// Ended with this status; `failure_path` is what it leaves downstream.
    Ended {
        /// How it ended.
        status: VesselStatus,
        /// Whether it leaves a failure path.
        failure_path: bool,
    },
}

/// The graph of one fleet, indexed like its vessels.
#[derive(Debug, Clone)]
pub struct Plan {
    needs: Vec<u64>,
    when: Vec<When>,
    /// Every vessel upstream of each (transitively).
    upstream: Vec<u64>,
}

fn bits(mask: u64) -> impl Iterator<Item = usize> {
    (0..64).filter(move |i| mask & (1 << i) != 0)
}

impl Plan {
    /// The plan of a validated fleet (vessels in topological order, at most 64).
    pub fn new(spec: &FleetSpec) -> Plan {
        let index = |name: &str| spec.vessels.iter().position(|v| v.name == name);
        let needs: Vec<u64> = spec
            .vessels
            .iter()
            .map(|v| {
                v.needs
                    .iter()
                    .filter_map(|n| index(n))
                    .fold(0, |m, i| m | (1 << i))
            })
            .collect();
        // Topological order: a vessel's needs come before it, so one pass suffices.
        let mut upstream = vec![0u64; needs.len()];
        for i in 0..needs.len() {
            upstream[i] = bits(needs[i]).fold(needs[i], |m, j| m | upstream[j]);
        }
        Plan {
            needs,
            when: spec.vessels.iter().map(|v| v.when).collect(),
            upstream,
        }
    }

    /// Number of vessels.
    pub fn len(&self) -> usize {
        self.needs.len()
    }

    /// Whether the fleet has no vessels.
    pub fn is_empty(&self) -> bool {
        self.needs.is_empty()
    }

    /// Whether vessel `j` is upstream of vessel `i` (transitively).
    pub fn is_upstream(&self, j: usize, i: usize) -> bool {
        self.upstream[i] & (1 << j) != 0
    }

    /// Vessel `i` and every vessel downstream of it: what a resume from `i` runs again.
    pub fn downstream_of(&self, i: usize) -> Vec<usize> {
        (0..self.len())
            .filter(|&k| k == i || self.is_upstream(i, k))
            .collect()
    }

    /// What vessel `i` leaves downstream if it ends with `status`.
    pub fn ended(&self, states: &[State], i: usize, status: VesselStatus) -> State {
        let failure_path = match status {
            VesselStatus::Succeeded => false,
            VesselStatus::Skipped => self.upstream_failed(states, i),
            _ => true,
        };
        State::Ended {
            status,
            failure_path,
        }
    }

    fn upstream_failed(&self, states: &[State], i: usize) -> bool {
        bits(self.needs[i]).any(|j| {
            matches!(
                states[j],
                State::Ended {
                    failure_path: true,
                    ..
                }
            )
        })
    }

    /// Skips every pending vessel whose `when` can no longer hold (in `states`, repeatedly, as a
    /// skip can decide more), and returns the pending vessels that may start now, in order.
    pub fn step(&self, states: &mut [State]) -> Vec<usize> {
        loop {
            let mut ready = Vec::new();
            let mut skipped = false;
            for i in 0..self.len() {
                if states[i] != State::Pending {
                    continue;
                }
                let all_ended =
                    bits(self.needs[i]).all(|j| matches!(states[j], State::Ended { .. }));
                if !all_ended {
                    continue;
                }
                let failed = self.upstream_failed(states, i);
                let holds = match self.when[i] {
                    When::Success => !failed,
                    When::Failure => failed,
                    When::Always => true,
                };
                if holds {
                    ready.push(i);
                } else {
                    states[i] = self.ended(states, i, VesselStatus::Skipped);
                    skipped = true;
                }
            }
            if !skipped {
                return ready;
            }
        }
    }

    /// Whether every vessel has ended.
    pub fn done(&self, states: &[State]) -> bool {
        states.iter().all(|s| matches!(s, State::Ended { .. }))
    }

    /// The status of a run whose vessels ended so: `failed` if a vessel failed and no `failure`
    /// or `always` vessel downstream of it ran and succeeded (which handles that failure);
    /// otherwise `succeeded`.
    pub fn status(&self, states: &[State]) -> RunStatus {
        let status = |i: usize| match states[i] {
            State::Ended { status, .. } => Some(status),
            _ => None,
        };
        let unhandled = (0..self.len())
            .filter(|&f| status(f) == Some(VesselStatus::Failed))
            .any(|f| {
                !(0..self.len()).any(|h| {
                    self.is_upstream(f, h)
                        && matches!(self.when[h], When::Failure | When::Always)
                        && status(h) == Some(VesselStatus::Succeeded)
                })
            });
        if unhandled {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        }
    }
}

/// What a queued run records when it is cancelled before it ran: the vessel runs it carried
/// over (a resume's), then every other vessel of its fleet as `cancelled`. `spec` is `None`
/// when the fleet has been deleted: the run keeps only what it recorded.
pub fn cancelled_vessels(recorded: &[VesselRun], spec: Option<&FleetSpec>) -> Vec<VesselRun> {
    let mut vessels = recorded.to_vec();
    for v in spec.map_or(&[][..], |s| &s.vessels) {
        if !recorded.iter().any(|r| r.name == v.name) {
            vessels.push(VesselRun::not_run(
                &v.name,
                VesselOutcome::not_run(
                    VesselStatus::Cancelled,
                    Some(FailureReason::Cancelled),
                    None,
                ),
            ));
        }
    }
    vessels
}

/// Why a run cannot be resumed from a vessel.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResumeError {
    /// The fleet has no vessel of that name.
    #[error("from: the fleet has no vessel {from:?} (it has {})", vessels.join(", "))]
    UnknownVessel {
        /// The name asked for.
        from: String,
        /// The fleet's vessels, in order.
        vessels: Vec<String>,
    },
    /// The run is still queued or running: what it will record is not known yet.
    #[error("run {run} is still {}; resume a run that has ended", status.as_str())]
    NotEnded {
        /// The run.
        run: uuid::Uuid,
        /// Its status.
        status: RunStatus,
    },
}

/// The vessel runs a resume of `source` from vessel `from` carries over instead of running
/// again, each marked `carried_over`: those the source recorded as ended (succeeded, failed or
/// skipped) for vessels the fleet still has, except `from` and everything downstream of it.
/// The fleet's current graph decides what is downstream, since the resume runs it.
pub fn resume_plan(
    spec: &FleetSpec,
    source: &RunRecord,
    from: &str,
) -> Result<Vec<VesselRun>, ResumeError> {
    let Some(index) = spec.vessels.iter().position(|v| v.name == from) else {
        return Err(ResumeError::UnknownVessel {
            from: from.to_owned(),
            vessels: spec.vessels.iter().map(|v| v.name.clone()).collect(),
        });
    };
    if matches!(source.status, RunStatus::Queued | RunStatus::Running) {
        return Err(ResumeError::NotEnded {
            run: source.id,
            status: source.status,
        });
    }
    let rerun: Vec<&str> = Plan::new(spec)
        .downstream_of(index)
        .into_iter()
        .map(|i| spec.vessels[i].name.as_str())
        .collect();
    Ok(source
        .vessels
        .iter()
        .filter(|v| !rerun.contains(&v.name.as_str()))
        .filter(|v| spec.vessels.iter().any(|s| s.name == v.name))
        .filter(|v| {
            use VesselStatus::*;
            matches!(v.outcome.status, Succeeded | Failed | Skipped)
        })
        .map(|v| VesselRun {
            carried_over: true,
            ..v.clone()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::FleetDoc;
    use VesselStatus::{Failed, Skipped, Succeeded};

    fn plan(vessels: serde_json::Value) -> Plan {
        let doc: FleetDoc =
            serde_json::from_value(serde_json::json!({"name": "f", "vessels": vessels})).unwrap();
        Plan::new(&doc.parse().unwrap().spec)
    }

    fn v(name: &str, needs: Option<&[&str]>, when: &str) -> serde_json::Value {
        let mut v = serde_json::json!({"name": name, "kind": "rhai", "source": "0", "when": when});
        if let Some(n) = needs {
            v["needs"] = serde_json::json!(n);
        }
        v
    }

    /// Runs the plan to the end, each started vessel ending as `outcome` says.
    fn simulate(plan: &Plan, outcome: impl Fn(usize) -> VesselStatus) -> (Vec<State>, RunStatus) {
        let mut states = vec![State::Pending; plan.len()];
        loop {
            let ready = plan.step(&mut states);
            if ready.is_empty() {
                break;
            }
            for i in ready {
                states[i] = plan.ended(&states, i, outcome(i));
            }
        }
        assert!(plan.done(&states));
        let status = plan.status(&states);
        (states, status)
    }

    fn statuses(states: &[State]) -> Vec<VesselStatus> {
        states
            .iter()
            .map(|s| match s {
                State::Ended { status, .. } => *status,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn without_needs_vessels_chain_in_written_order() {
        let p = plan(serde_json::json!([
            v("a", None, "success"),
            v("b", None, "success")
        ]));
        let mut states = vec![State::Pending; 2];
        assert_eq!(p.step(&mut states), vec![0]);
        states[0] = p.ended(&states, 0, Succeeded);
        assert_eq!(p.step(&mut states), vec![1]);
    }

    #[test]
    fn roots_start_together() {
        let p = plan(serde_json::json!([
            v("a", Some(&[]), "success"),
            v("b", Some(&[]), "success"),
            v("join", Some(&["a", "b"]), "success")
        ]));
        let mut states = vec![State::Pending; 3];
        assert_eq!(p.step(&mut states), vec![0, 1]);
        states[0] = State::Running;
        states[1] = State::Running;
        states[0] = p.ended(&states, 0, Succeeded);
        assert!(p.step(&mut states).is_empty(), "join waits for b");
        states[1] = p.ended(&states, 1, Succeeded);
        assert_eq!(p.step(&mut states), vec![2]);
    }

    #[test]
    fn a_failure_path_crosses_skipped_vessels_to_its_handler() {
        // a fails → b (success) is skipped → on_error (failure) still sees the failure path,
        // handles it, and `after` (success, after the handler) runs: the run succeeded.
        let p = plan(serde_json::json!([
            v("a", None, "success"),
            v("b", None, "success"),
            v("on_error", None, "failure"),
            v("after", None, "success")
        ]));
        let (states, status) = simulate(&p, |i| if i == 0 { Failed } else { Succeeded });
        assert_eq!(statuses(&states), [Failed, Skipped, Succeeded, Succeeded]);
        assert_eq!(status, RunStatus::Succeeded);
        // Without a failure, the handler is skipped and the path stays a success path.
        let (states, status) = simulate(&p, |_| Succeeded);
        assert_eq!(
            statuses(&states),
            [Succeeded, Succeeded, Skipped, Succeeded]
        );
        assert_eq!(status, RunStatus::Succeeded);
    }

    #[test]
    fn a_failing_handler_leaves_the_run_failed() {
        let p = plan(serde_json::json!([
            v("a", None, "success"),
            v("on_error", None, "failure")
        ]));
        let (_, status) = simulate(&p, |_| Failed);
        assert_eq!(status, RunStatus::Failed);
    }

    #[test]
    fn converging_paths() {
        // build → (deploy on success | alert on failure) → report (always, needs both).
        let p = plan(serde_json::json!([
            v("build", None, "success"),
            v("deploy", Some(&["build"]), "success"),
            v("alert", Some(&["build"]), "failure"),
            v("report", Some(&["deploy", "alert"]), "always")
        ]));
        let (states, status) = simulate(&p, |_| Succeeded);
        assert_eq!(
            statuses(&states),
            [Succeeded, Succeeded, Skipped, Succeeded]
        );
        assert_eq!(status, RunStatus::Succeeded);
        let (states, status) = simulate(&p, |i| if i == 0 { Failed } else { Succeeded });
        assert_eq!(statuses(&states), [Failed, Skipped, Succeeded, Succeeded]);
        assert_eq!(status, RunStatus::Succeeded, "alert handled the failure");
        // A failure with nothing below it to handle it fails the run, even if `report` runs.
        let (states, status) = simulate(&p, |i| if i == 1 { Failed } else { Succeeded });
        assert_eq!(statuses(&states), [Succeeded, Failed, Skipped, Succeeded]);
        assert_eq!(
            status,
            RunStatus::Succeeded,
            "report is `always` below deploy"
        );
        let p = plan(serde_json::json!([
            v("build", None, "success"),
            v("deploy", Some(&["build"]), "success"),
            v("report", Some(&["build"]), "always")
        ]));
        let (_, status) = simulate(&p, |i| if i == 1 { Failed } else { Succeeded });
        assert_eq!(status, RunStatus::Failed, "report is not below deploy");
    }

    #[test]
    fn a_root_failure_vessel_is_skipped_and_always_runs() {
        let p = plan(serde_json::json!([
            v("f", Some(&[]), "failure"),
            v("a", Some(&[]), "always")
        ]));
        let (states, _) = simulate(&p, |_| Succeeded);
        assert_eq!(statuses(&states), [Skipped, Succeeded]);
    }

    #[test]
    fn downstream_of_a_vessel() {
        let p = plan(serde_json::json!([
            v("a", None, "success"),
            v("b", Some(&["a"]), "success"),
            v("c", Some(&["a"]), "success"),
            v("d", Some(&["b"]), "success")
        ]));
        assert_eq!(p.downstream_of(1), vec![1, 3]);
        assert_eq!(p.downstream_of(0), vec![0, 1, 2, 3]);
        assert!(p.is_upstream(0, 3) && !p.is_upstream(2, 3));
    }

    fn spec(vessels: serde_json::Value) -> FleetSpec {
        let doc: FleetDoc =
            serde_json::from_value(serde_json::json!({"name": "f", "vessels": vessels})).unwrap();
        doc.parse().unwrap().spec
    }

    fn ran(name: &str, status: VesselStatus) -> VesselRun {
        VesselRun::not_run(name, VesselOutcome::not_run(status, None, None))
    }

    fn record(status: RunStatus, vessels: Vec<VesselRun>) -> RunRecord {
        RunRecord {
            id: uuid::Uuid::nil(),
            fleet_id: uuid::Uuid::nil(),
            request_id: uuid::Uuid::nil(),
            status,
            attempt: 1,
            variables: Default::default(),
            vessels,
            error: None,
            reason: None,
            lost_attempts: Vec::new(),
            replay_of: None,
            resumed_from: None,
            cancel_requested: false,
            concurrency_key: None,
            created_at: 0,
            started_at: None,
            finished_at: None,
        }
    }

    fn names_and_statuses(runs: &[VesselRun]) -> Vec<(&str, VesselStatus, bool)> {
        runs.iter()
            .map(|r| (r.name.as_str(), r.outcome.status, r.carried_over))
            .collect()
    }

    #[test]
    fn a_cancelled_queued_run_keeps_what_it_carried_and_cancels_the_rest() {
        let fleet = spec(serde_json::json!([
            v("a", None, "success"),
            v("b", Some(&["a"]), "success"),
            v("c", Some(&["b"]), "success")
        ]));
        let carried = vec![VesselRun {
            carried_over: true,
            ..ran("a", Succeeded)
        }];
        let vessels = cancelled_vessels(&carried, Some(&fleet));
        assert_eq!(
            names_and_statuses(&vessels),
            [
                ("a", Succeeded, true),
                ("b", VesselStatus::Cancelled, false),
                ("c", VesselStatus::Cancelled, false)
            ]
        );
        assert!(
            vessels[1..]
                .iter()
                .all(|v| v.outcome.reason == Some(FailureReason::Cancelled))
        );
    }

    #[test]
    fn a_cancelled_run_of_a_deleted_fleet_keeps_only_what_it_recorded() {
        let carried = vec![ran("a", Failed)];
        let vessels = cancelled_vessels(&carried, None);
        assert_eq!(names_and_statuses(&vessels), [("a", Failed, false)]);
    }

    /// a → b → c, and d after a: what a resume from `from` carries over of `source`.
    fn resume(source: &RunRecord, from: &str) -> Result<Vec<VesselRun>, ResumeError> {
        let fleet = spec(serde_json::json!([
            v("a", None, "success"),
            v("b", Some(&["a"]), "success"),
            v("c", Some(&["b"]), "always"),
            v("d", Some(&["a"]), "success")
        ]));
        resume_plan(&fleet, source, from)
    }

    #[test]
    fn a_resume_carries_over_what_is_not_downstream_of_its_vessel() {
        let source = record(
            RunStatus::Failed,
            vec![
                ran("a", Succeeded),
                ran("b", Failed),
                ran("c", Skipped),
                ran("d", Failed),
                // A vessel the fleet no longer has is not carried into the new run.
                ran("gone", Succeeded),
            ],
        );
        let carried = resume(&source, "b").unwrap();
        assert_eq!(
            names_and_statuses(&carried),
            [("a", Succeeded, true), ("d", Failed, true)]
        );
        assert!(resume(&source, "a").unwrap().is_empty());
    }

    #[test]
    fn a_resume_does_not_carry_over_vessels_that_did_not_end() {
        let source = record(
            RunStatus::Cancelled,
            vec![
                ran("a", Succeeded),
                ran("d", VesselStatus::Cancelled),
                ran("c", VesselStatus::Running),
            ],
        );
        let carried = resume(&source, "b").unwrap();
        assert_eq!(names_and_statuses(&carried), [("a", Succeeded, true)]);
    }

    #[test]
    fn a_resume_from_an_unknown_vessel_names_the_fleets_vessels() {
        let err = resume(&record(RunStatus::Running, Vec::new()), "z").unwrap_err();
        assert!(matches!(&err, ResumeError::UnknownVessel { from, .. } if from == "z"));
        assert_eq!(
            err.to_string(),
            "from: the fleet has no vessel \"z\" (it has a, b, c, d)"
        );
    }

    #[test]
    fn only_a_run_that_has_ended_can_be_resumed() {
        for status in [RunStatus::Queued, RunStatus::Running] {
            let err = resume(&record(status, Vec::new()), "b").unwrap_err();
            assert!(matches!(err, ResumeError::NotEnded { status: s, .. } if s == status));
        }
        for status in [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ] {
            assert!(resume(&record(status, Vec::new()), "b").is_ok());
        }
    }
}
