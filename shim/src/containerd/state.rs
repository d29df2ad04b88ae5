//! A task's life, as containerd sees it: created, running, stopped; and the only ways from one
//! to the next. The task service asks this type, never a pair of flags, what a request may do.

use containerd_shim::api;

/// The signal that ends a container at once, with no grace for what it is doing.
pub(crate) const SIGKILL: u32 = 9;

/// How a task ended: its exit status and when (seconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exited {
    /// The exit status: the guest's own, or 128 + the signal that ended it.
    pub(crate) code: u32,
    /// When, in seconds since the Unix epoch.
    pub(crate) at: i64,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskState {
    /// Made by `create`: its module is loaded and its mounts are up; nothing runs.
    Created,
    /// Started: its guest runs (or, for a pod's sandbox, it waits to be killed).
    Running,
    /// Ended, by itself or by a kill; it stays until `delete`.
    Stopped(Exited),
}

/// A request the task's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StateError {
    /// `start` of a task that was started already.
    #[error("the task was started already")]
    AlreadyStarted,
    /// `start` of a task that ended (a kill before its start).
    #[error("the task has stopped (exit status {0}); it cannot start")]
    Stopped(u32),
}

/// What a kill does, by the task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kill {
    /// Nothing runs yet: the task ends at once, with the signal's status.
    EndedBeforeStart,
    /// The guest runs: it is told to stop, and ends when it has.
    StopGuest,
    /// The task ended already: nothing to do.
    AlreadyStopped,
}

impl TaskState {
    /// `start`: from created to running.
    pub(crate) fn start(&mut self) -> Result<(), StateError> {
        match *self {
            TaskState::Created => {
                *self = TaskState::Running;
                Ok(())
            }
            TaskState::Running => Err(StateError::AlreadyStarted),
            TaskState::Stopped(e) => Err(StateError::Stopped(e.code)),
        }
    }

    /// A kill with `signal` at `at`: a task that never started stops now.
    pub(crate) fn kill(&mut self, signal: u32, at: i64) -> Kill {
        match *self {
            TaskState::Created => {
                *self = TaskState::Stopped(Exited {
                    code: 128 + signal,
                    at,
                });
                Kill::EndedBeforeStart
            }
            TaskState::Running => Kill::StopGuest,
            TaskState::Stopped(_) => Kill::AlreadyStopped,
        }
    }

    /// The guest ended: a running task stops. Its first end is the one that counts.
    pub(crate) fn exit(&mut self, exited: Exited) {
        if !matches!(self, TaskState::Stopped(_)) {
            *self = TaskState::Stopped(exited);
        }
    }

    /// How it ended, once it has.
    pub(crate) fn exited(&self) -> Option<Exited> {
        match self {
            TaskState::Stopped(e) => Some(*e),
            _ => None,
        }
    }

    /// The status containerd's `state` reports.
    pub(crate) fn status(&self) -> api::Status {
        match self {
            TaskState::Created => api::Status::CREATED,
            TaskState::Running => api::Status::RUNNING,
            TaskState::Stopped(_) => api::Status::STOPPED,
        }
    }

    /// What `delete` reports: how it ended, or, deleted before it ran, a clean status now.
    pub(crate) fn for_delete(&self, now: i64) -> Exited {
        self.exited().unwrap_or(Exited { code: 0, at: now })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: i64 = 1_700_000_000;

    #[test]
    fn a_task_is_created_then_runs_then_stops() {
        let mut state = TaskState::Created;
        assert_eq!(state.status(), api::Status::CREATED);
        assert_eq!(state.exited(), None);
        state.start().unwrap();
        assert_eq!(state.status(), api::Status::RUNNING);
        assert_eq!(state.start(), Err(StateError::AlreadyStarted));
        assert_eq!(state.kill(15, AT), Kill::StopGuest);
        // A kill of a running guest is a request: it is still running until it ends.
        assert_eq!(state.status(), api::Status::RUNNING);
        state.exit(Exited { code: 143, at: AT });
        assert_eq!(state.status(), api::Status::STOPPED);
        assert_eq!(state.exited(), Some(Exited { code: 143, at: AT }));
        assert_eq!(state.for_delete(AT + 5), Exited { code: 143, at: AT });
    }

    #[test]
    fn a_kill_before_start_ends_the_task_with_the_signals_status() {
        let mut state = TaskState::Created;
        assert_eq!(state.kill(9, AT), Kill::EndedBeforeStart);
        assert_eq!(state.exited(), Some(Exited { code: 137, at: AT }));
        assert_eq!(state.start(), Err(StateError::Stopped(137)));
        assert_eq!(state.kill(15, AT + 1), Kill::AlreadyStopped);
        assert_eq!(state.exited(), Some(Exited { code: 137, at: AT }));
    }

    #[test]
    fn the_first_end_is_the_one_reported() {
        let mut state = TaskState::Running;
        state.exit(Exited { code: 0, at: AT });
        state.exit(Exited {
            code: 255,
            at: AT + 1,
        });
        assert_eq!(state.exited(), Some(Exited { code: 0, at: AT }));
        assert_eq!(state.kill(9, AT + 2), Kill::AlreadyStopped);
    }

    #[test]
    fn a_task_deleted_before_it_ran_reports_a_clean_end() {
        assert_eq!(
            TaskState::Created.for_delete(AT),
            Exited { code: 0, at: AT }
        );
    }
}
