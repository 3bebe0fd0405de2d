//! `workflows.settings`: the workflow-wide timeout, retry policy and error handling.

use serde::{Deserialize, Serialize};

use crate::progress::ErrorHandling;
use crate::retry::RetryPolicy;

/// A workflow's settings, with the defaults that apply to keys it leaves out. Unknown keys are
/// kept by the database but ignored here, so editors may store their own.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkflowSettings {
    /// Seconds an execution may run before it fails as timed out; none means no limit.
    pub timeout: Option<f64>,
    /// How failed nodes are retried, unless a node's `config.retry_policy` says otherwise.
    pub retry_policy: RetryPolicy,
    /// What an unhandled failure does to the rest of the execution.
    pub error_handling: ErrorHandling,
}

impl WorkflowSettings {
    /// Reads settings from their JSON, saying which key is wrong.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, serde_json::Error> {
        let settings: Self = serde_json::from_value(value.clone())?;
        if let Some(timeout) = settings.timeout
            && !(timeout.is_finite() && timeout > 0.0)
        {
            return Err(serde::de::Error::custom(
                "timeout must be a positive number of seconds",
            ));
        }
        Ok(settings)
    }

    /// The retry policy of a node: its own `config.retry_policy` if it has one.
    pub fn retry_policy_for(
        &self,
        node_config: &serde_json::Value,
    ) -> Result<RetryPolicy, serde_json::Error> {
        match node_config.get("retry_policy") {
            Some(own) => serde_json::from_value(own.clone()),
            None => Ok(self.retry_policy),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_data_models_example_reads_with_defaults_for_the_rest() {
        let s = WorkflowSettings::from_json(&json!({
            "timeout": 3600, "retry_policy": {"max_retries": 3, "retry_delay": 60},
            "error_handling": "continue", "editor_zoom": 2
        }))
        .unwrap();

        assert_eq!(s.timeout, Some(3600.0));
        assert_eq!(s.retry_policy.max_attempts(), 4);
        assert_eq!(s.error_handling, ErrorHandling::Continue);
    }

    #[test]
    fn empty_settings_mean_no_timeout_and_stop_on_failure() {
        let s = WorkflowSettings::from_json(&json!({})).unwrap();

        assert_eq!(s.timeout, None);
        assert_eq!(s.error_handling, ErrorHandling::Stop);
    }

    #[test]
    fn bad_values_are_named() {
        let err = WorkflowSettings::from_json(&json!({"error_handling": "ignore"})).unwrap_err();
        let timeout = WorkflowSettings::from_json(&json!({"timeout": -1})).unwrap_err();

        assert!(
            err.to_string().contains("unknown variant `ignore`"),
            "{err}"
        );
        assert!(timeout.to_string().contains("positive"), "{timeout}");
    }

    #[test]
    fn a_node_may_override_the_retry_policy() {
        let s = WorkflowSettings::from_json(&json!({"retry_policy": {"max_retries": 1}})).unwrap();

        let own = s
            .retry_policy_for(&json!({"retry_policy": {"max_retries": 5}}))
            .unwrap();
        let inherited = s
            .retry_policy_for(&json!({"url": "http://127.0.0.1"}))
            .unwrap();

        assert_eq!(own.max_retries, 5);
        assert_eq!(inherited.max_retries, 1);
    }
}
