//! The harness's error type. `main` turns it into one line on stderr; everything below `main`
//! returns it, so a failed run says which step failed and why.

use std::path::PathBuf;

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HarnessError {
    /// A query of the harness's own failed.
    #[error("database query failed while {doing}")]
    Db {
        /// What the harness was doing.
        doing: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },

    /// The private PostgreSQL server could not be started or stopped.
    #[error("the private PostgreSQL server failed")]
    LocalPg(#[from] quantumflow_localpg::LocalPgError),

    /// A file or process operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done, e.g. `write`.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },

    /// A QuantumFlow process exited or misbehaved.
    #[error("{what}: {detail}")]
    Product {
        /// Which process or command, e.g. `quantumflow migrate up`.
        what: String,
        /// What went wrong, with the end of its log when there is one.
        detail: String,
    },

    /// The control plane answered a setup request unexpectedly.
    #[error("{request} answered {status}: {body}")]
    Api {
        /// The request, e.g. `POST /api/v1/workflows`.
        request: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },

    /// An HTTP request of the harness's own failed below HTTP.
    #[error("{request} failed")]
    Http {
        /// The request.
        request: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },

    /// A baseline could not be measured.
    #[error("baseline {name} failed")]
    Baseline {
        /// The baseline.
        name: &'static str,
        /// Why.
        #[source]
        source: crate::baseline::BaselineError,
    },

    /// A chart could not be drawn.
    #[error("cannot draw {}", path.display())]
    Plot {
        /// The chart's file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::plot::PlotError,
    },

    /// A report could not be encoded.
    #[error("cannot encode the report")]
    Json(#[from] serde_json::Error),

    /// The arguments or the environment make the run impossible.
    #[error("{0}")]
    Invalid(String),

    /// A run did not finish in the time allowed.
    #[error("{0}")]
    Timeout(String),
}

impl HarnessError {
    /// A wrapper for `map_err` on the harness's own queries.
    pub(crate) fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Db { doing, source }
    }

    /// A wrapper for `map_err` on file and process operations.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// The crate's result type.
pub(crate) type Result<T, E = HarnessError> = std::result::Result<T, E>;
