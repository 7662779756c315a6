//! The instance state machine: every state change of an instance goes through
//! [`InstanceState::apply`], one exhaustive table; a refused change names why, for a 409.
//!
//! ```text
//!                 provisioned            start
//!  provisioning ------------> stopped ----------> running --+ guest reboot: stays running
//!       |                      ^  ^ |               |   |    (the supervisor restarts it)
//!       | provision failed     |  | |  stop, guest  |   |
//!       v                      |  | +-- poweroff ---+   | fault (exit 3/4, crash)
//!     failed <-----------------+--|-------------------- +
//!       |        start ----------------------------> running
//!       +--- destroy --> destroyed <-- destroy --- stopped
//! ```
//!
//! The supervisor maps how a hypervisor process ended to an event with [`exit_event`], using
//! bhyve's exit codes (0 rebooted, 1 powered off, 2 halted, 3 triple fault, 4 error); the QEMU
//! backend translates its QMP `SHUTDOWN` reasons into the same codes.

use serde::{Deserialize, Serialize};

use crate::error_code::ErrorCode;
use crate::hypervisor::RunEnd;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Provisioning,
    Stopped,
    Running,
    Failed,
    /// Kept in the history only: a destroyed instance has no disk and no process.
    Destroyed,
}

/// Something that happens to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Its disk and configuration are in place.
    Provisioned,
    ProvisionFailed,
    /// The API asks to start it.
    Start,
    /// The API asks to stop it, or the guest powered off or halted.
    Stopped,
    /// The guest rebooted; the supervisor starts it again.
    Rebooted,
    /// The hypervisor faulted or crashed.
    Faulted,
    /// The API asks to destroy it (a running instance must be stopped first).
    Destroy,
}

/// Why a state change was refused: the code an API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the instance is still being provisioned")]
    Provisioning,
    #[error("the instance is already running")]
    AlreadyRunning,
    #[error("the instance is not running")]
    NotRunning,
    #[error("the instance is running; stop it first")]
    Running,
    #[error("the instance has been destroyed")]
    Destroyed,
    #[error("the instance is already provisioned")]
    AlreadyProvisioned,
}

impl Refused {
    /// The code of the answer.
    pub fn code(self) -> ErrorCode {
        match self {
            Refused::Provisioning => ErrorCode::InstanceProvisioning,
            Refused::AlreadyRunning => ErrorCode::InstanceAlreadyRunning,
            Refused::NotRunning => ErrorCode::InstanceNotRunning,
            Refused::Running => ErrorCode::InstanceRunning,
            Refused::Destroyed => ErrorCode::InstanceDestroyed,
            Refused::AlreadyProvisioned => ErrorCode::InstanceAlreadyProvisioned,
        }
    }
}

impl InstanceState {
    /// The state after `event`, or why it cannot happen now.
    pub fn apply(self, event: Event) -> Result<InstanceState, Refused> {
        use Event as E;
        use InstanceState as S;
        match (self, event) {
            (S::Provisioning, E::Provisioned) => Ok(S::Stopped),
            (S::Provisioning, E::ProvisionFailed) => Ok(S::Failed),
            (S::Provisioning, E::Start | E::Stopped | E::Rebooted | E::Faulted | E::Destroy) => {
                Err(Refused::Provisioning)
            }

            (S::Stopped, E::Start) => Ok(S::Running),
            (S::Stopped, E::Destroy) => Ok(S::Destroyed),
            (S::Stopped, E::Stopped | E::Rebooted | E::Faulted) => Err(Refused::NotRunning),
            (S::Stopped, E::Provisioned | E::ProvisionFailed) => Err(Refused::AlreadyProvisioned),

            (S::Running, E::Stopped) => Ok(S::Stopped),
            (S::Running, E::Rebooted) => Ok(S::Running),
            (S::Running, E::Faulted) => Ok(S::Failed),
            (S::Running, E::Start) => Err(Refused::AlreadyRunning),
            (S::Running, E::Destroy) => Err(Refused::Running),
            (S::Running, E::Provisioned | E::ProvisionFailed) => Err(Refused::AlreadyProvisioned),

            // A failed instance keeps its disk: it can be started again or destroyed.
            (S::Failed, E::Start) => Ok(S::Running),
            (S::Failed, E::Destroy) => Ok(S::Destroyed),
            (S::Failed, E::Stopped | E::Rebooted | E::Faulted) => Err(Refused::NotRunning),
            (S::Failed, E::Provisioned | E::ProvisionFailed) => Err(Refused::AlreadyProvisioned),

            (
                S::Destroyed,
                E::Provisioned
                | E::ProvisionFailed
                | E::Start
                | E::Stopped
                | E::Rebooted
                | E::Faulted
                | E::Destroy,
            ) => Err(Refused::Destroyed),
        }
    }
}

/// What the supervisor makes of how a run ended. `stop_requested`: the agent asked for the
/// stop, so even a reboot ends the run. `None`: nothing (the agent let go of the run).
pub fn exit_event(end: RunEnd, stop_requested: bool) -> Option<Event> {
    Some(match end {
        RunEnd::Detached => return None,
        RunEnd::Exited(0) if !stop_requested => Event::Rebooted,
        RunEnd::Exited(0..=2) => Event::Stopped,
        // During a requested stop, being killed after the grace period is the expected end.
        RunEnd::Signaled | RunEnd::Unknown if stop_requested => Event::Stopped,
        // A run adopted after an agent restart: its exit status went to the old agent. Most
        // runs end by a guest poweroff; the instance's reason says the status is unknown.
        RunEnd::Unknown => Event::Stopped,
        RunEnd::Exited(_) | RunEnd::Signaled => Event::Faulted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Event as E;
    use InstanceState as S;

    const STATES: [S; 5] = [S::Provisioning, S::Stopped, S::Running, S::Failed, S::Destroyed];
    const EVENTS: [E; 7] =
        [E::Provisioned, E::ProvisionFailed, E::Start, E::Stopped, E::Rebooted, E::Faulted, E::Destroy];

    #[test]
    fn the_allowed_transitions_and_nothing_else() {
        let allowed = [
            (S::Provisioning, E::Provisioned, S::Stopped),
            (S::Provisioning, E::ProvisionFailed, S::Failed),
            (S::Stopped, E::Start, S::Running),
            (S::Stopped, E::Destroy, S::Destroyed),
            (S::Running, E::Stopped, S::Stopped),
            (S::Running, E::Rebooted, S::Running),
            (S::Running, E::Faulted, S::Failed),
            (S::Failed, E::Start, S::Running),
            (S::Failed, E::Destroy, S::Destroyed),
        ];
        for state in STATES {
            for event in EVENTS {
                let want = allowed.iter().find(|(s, e, _)| *s == state && *e == event).map(|(_, _, to)| *to);
                assert_eq!(state.apply(event).ok(), want, "{state:?} + {event:?}");
            }
        }
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(S::Running.apply(E::Start), Err(Refused::AlreadyRunning));
        assert_eq!(S::Running.apply(E::Destroy), Err(Refused::Running));
        assert_eq!(S::Stopped.apply(E::Stopped), Err(Refused::NotRunning));
        assert_eq!(S::Provisioning.apply(E::Start), Err(Refused::Provisioning));
        assert_eq!(S::Destroyed.apply(E::Start).unwrap_err().code(), ErrorCode::InstanceDestroyed);
    }

    #[test]
    fn bhyve_exit_codes() {
        let event = |end, requested| exit_event(end, requested).unwrap();
        assert_eq!(event(RunEnd::Exited(0), false), E::Rebooted);
        assert_eq!(event(RunEnd::Exited(0), true), E::Stopped);
        assert_eq!(event(RunEnd::Exited(1), false), E::Stopped);
        assert_eq!(event(RunEnd::Exited(2), false), E::Stopped);
        assert_eq!(event(RunEnd::Exited(3), false), E::Faulted);
        assert_eq!(event(RunEnd::Exited(4), true), E::Faulted);
        assert_eq!(event(RunEnd::Signaled, false), E::Faulted);
        assert_eq!(event(RunEnd::Signaled, true), E::Stopped);
        assert_eq!(event(RunEnd::Unknown, false), E::Stopped);
        assert_eq!(exit_event(RunEnd::Detached, false), None);
    }
}
