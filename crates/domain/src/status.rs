//! Status values of workflows, executions and node runs.
//!
//! The database stores them as the seed's lower-case strings; `as_str` and `FromStr` are the
//! only conversions, so a typo in a status can only happen in one place.

use std::fmt;
use std::str::FromStr;

/// A string that names no known status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} status {value:?}")]
pub struct UnknownStatus {
    /// Which status family was being parsed, e.g. `execution`.
    pub kind: &'static str,
    /// The offending value.
    pub value: String,
}

macro_rules! status_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $kind:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash,
            serde::Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The value as stored in the database and shown by the API.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownStatus { kind: $kind, value: s.to_owned() }),
                }
            }
        }
    };
}

status_enum! {
    /// Lifecycle of a workflow definition. Only `active` workflows accept triggers.
    WorkflowStatus, "workflow" {
        /// Being edited; never triggered.
        Draft => "draft",
        /// Accepts triggers.
        Active => "active",
        /// Kept as it is but accepts no triggers until resumed.
        Paused => "paused",
        /// Retired; kept for its execution history.
        Archived => "archived",
    }
}

status_enum! {
    /// Lifecycle of one execution of a workflow.
    ExecutionStatus, "execution" {
        /// Accepted, no node has started yet.
        Pending => "pending",
        /// At least one node has started.
        Running => "running",
        /// Finished with no unhandled failure.
        Success => "success",
        /// Finished with an unhandled failure or a timeout.
        Failed => "failed",
        /// Stopped on request before it finished.
        Cancelled => "cancelled",
    }
}

status_enum! {
    /// Lifecycle of one node within one execution.
    NodeRunStatus, "node run" {
        /// Waiting for its turn in the queue.
        Pending => "pending",
        /// Claimed by a worker.
        Running => "running",
        /// Finished and produced output.
        Success => "success",
        /// Failed for good: retries are exhausted or the failure is not retryable.
        Failed => "failed",
        /// Not run, because its branch was not taken or the node is disabled.
        Skipped => "skipped",
    }
}

impl WorkflowStatus {
    /// Whether a workflow in this status may be moved to `next` by a user.
    ///
    /// Archiving is final: an archived workflow is history, and reviving it would make its old
    /// executions ambiguous about which definition they belong to.
    pub fn can_become(self, next: Self) -> bool {
        use WorkflowStatus::{Active, Archived, Draft, Paused};
        matches!(
            (self, next),
            (Draft, Active | Archived)
                | (Active, Paused | Archived)
                | (Paused, Active | Archived | Draft)
        )
    }
}

impl ExecutionStatus {
    /// Whether the execution has finished and will never change again.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Success | Self::Failed | Self::Cancelled)
    }

    /// Whether an execution in this status may move to `next`.
    ///
    /// Terminal statuses are never overwritten: a late or duplicate completion must find the
    /// execution already finished and change nothing.
    pub fn can_become(self, next: Self) -> bool {
        use ExecutionStatus::{Cancelled, Failed, Pending, Running, Success};
        matches!(
            (self, next),
            (Pending, Running | Success | Failed | Cancelled)
                | (Running, Success | Failed | Cancelled)
        )
    }
}

impl NodeRunStatus {
    /// Whether the node run has finished and will never change again.
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Success | Self::Failed | Self::Skipped)
    }

    /// Whether a node run in this status may move to `next`.
    ///
    /// `Running → Pending` is a retry handing the node back to the queue.
    pub fn can_become(self, next: Self) -> bool {
        use NodeRunStatus::{Failed, Pending, Running, Skipped, Success};
        matches!(
            (self, next),
            (Pending, Running | Skipped | Failed) | (Running, Success | Failed | Pending)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_text() {
        for s in WorkflowStatus::ALL {
            assert_eq!(s.as_str().parse::<WorkflowStatus>(), Ok(*s));
        }
        for s in ExecutionStatus::ALL {
            assert_eq!(s.as_str().parse::<ExecutionStatus>(), Ok(*s));
        }
        for s in NodeRunStatus::ALL {
            assert_eq!(s.as_str().parse::<NodeRunStatus>(), Ok(*s));
        }
    }

    #[test]
    fn unknown_text_names_the_family_and_value() {
        let err = "succeeded".parse::<ExecutionStatus>().unwrap_err();
        assert_eq!(err.to_string(), r#"unknown execution status "succeeded""#);
    }

    #[test]
    fn terminal_statuses_accept_no_transition() {
        for from in ExecutionStatus::ALL.iter().filter(|s| s.is_terminal()) {
            for to in ExecutionStatus::ALL {
                assert!(!from.can_become(*to), "{from} -> {to} must be refused");
            }
        }
        for from in NodeRunStatus::ALL.iter().filter(|s| s.is_terminal()) {
            for to in NodeRunStatus::ALL {
                assert!(!from.can_become(*to), "{from} -> {to} must be refused");
            }
        }
    }

    #[test]
    fn archived_workflows_stay_archived() {
        for to in WorkflowStatus::ALL {
            assert!(!WorkflowStatus::Archived.can_become(*to));
        }
        assert!(WorkflowStatus::Draft.can_become(WorkflowStatus::Active));
        assert!(WorkflowStatus::Paused.can_become(WorkflowStatus::Active));
    }

    #[test]
    fn serde_uses_the_database_text() {
        let json = serde_json::to_string(&NodeRunStatus::Skipped).unwrap();
        assert_eq!(json, r#""skipped""#);
    }
}
