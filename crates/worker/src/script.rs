//! Transform scripts: `config.script` in Rhai, a small embedded language with no access to
//! files, the network or the environment.
//!
//! The script sees `input` (the node's input) and `trigger` (the request that started the
//! execution). Its output is the variable `output` if the script defines one, else the value
//! of its last expression, converted back to JSON.
//!
//! A script cannot run away: operations, nesting, string, array and map sizes are capped, and
//! it is stopped at its deadline. Every limit that trips fails the node with a message naming
//! it; the worker process is never at risk.

use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, Scope};
use serde_json::Value;

/// Operations one script may execute (each step of evaluation counts one).
pub const MAX_OPERATIONS: u64 = 5_000_000;

/// The longest string a script may build.
pub const MAX_STRING_BYTES: usize = 1024 * 1024;

/// The most items an array or object of a script may hold.
pub const MAX_COLLECTION_ITEMS: usize = 100_000;

/// How deeply expressions and calls may nest.
const MAX_DEPTH: usize = 64;

/// Runs `source` with `input` and `trigger` in scope, for at most `timeout`.
pub fn run(
    source: &str,
    input: &Value,
    trigger: &Value,
    timeout: Duration,
) -> Result<Value, String> {
    let deadline = Instant::now() + timeout;
    let mut engine = Engine::new();
    engine
        .set_max_operations(MAX_OPERATIONS)
        .set_max_string_size(MAX_STRING_BYTES)
        .set_max_array_size(MAX_COLLECTION_ITEMS)
        .set_max_map_size(MAX_COLLECTION_ITEMS)
        .set_max_expr_depths(MAX_DEPTH, MAX_DEPTH)
        .set_max_call_levels(MAX_DEPTH)
        // `print` and `debug` would write to the worker's stdout; scripts have no console.
        .on_print(|_| {})
        .on_debug(|_, _, _| {});
    engine.on_progress(move |_| (Instant::now() > deadline).then(|| Dynamic::from("deadline")));

    let mut scope = Scope::new();
    scope.push_constant("input", to_dynamic(input));
    scope.push_constant("trigger", to_dynamic(trigger));

    let last: Dynamic = engine
        .eval_with_scope(&mut scope, source)
        .map_err(|e| explain(&e, timeout))?;
    let output = scope.get_value::<Dynamic>("output").unwrap_or(last);
    rhai::serde::from_dynamic::<Value>(&output)
        .map_err(|e| format!("the script's output is not JSON: {e}"))
}

/// Converts JSON by hand: through serde, numbers of arbitrary precision would arrive in the
/// script as opaque maps. Integers beyond 64 bits become strings, keeping every digit.
fn to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Dynamic::from(i),
            (None, _) if !n.to_string().contains(['.', 'e', 'E']) => Dynamic::from(n.to_string()),
            (None, Some(f)) => Dynamic::from(f),
            (None, None) => Dynamic::from(n.to_string()),
        },
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(items) => Dynamic::from_array(items.iter().map(to_dynamic).collect()),
        Value::Object(map) => Dynamic::from_map(
            map.iter()
                .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
                .collect(),
        ),
    }
}

fn explain(err: &EvalAltResult, timeout: Duration) -> String {
    match err {
        EvalAltResult::ErrorTerminated(..) => {
            format!(
                "the script ran past its deadline of {} s",
                timeout.as_secs_f64()
            )
        }
        EvalAltResult::ErrorTooManyOperations(..) => {
            format!("the script exceeded {MAX_OPERATIONS} operations")
        }
        EvalAltResult::ErrorDataTooLarge(what, ..) => format!("the script's {what} grew too large"),
        EvalAltResult::ErrorStackOverflow(..) => {
            "the script nested or recursed too deeply".to_owned()
        }
        other => format!("script error: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn eval(source: &str) -> Result<Value, String> {
        run(
            source,
            &json!({"username": "ada", "amounts": [1, 2, 3]}),
            &json!({}),
            Duration::from_secs(5),
        )
    }

    #[test]
    fn the_output_variable_or_the_last_value_is_the_output() {
        assert_eq!(
            eval(r#"let output = #{ message: "New user: " + input.username }; 1"#),
            Ok(json!({"message": "New user: ada"}))
        );
        assert_eq!(
            eval("let total = 0; for a in input.amounts { total += a; } total"),
            Ok(json!(6))
        );
    }

    #[test]
    fn runaway_loops_are_stopped_by_the_operation_limit() {
        let err = eval("loop { }").unwrap_err();

        assert!(err.contains("operations"), "{err}");
    }

    #[test]
    fn slow_scripts_are_stopped_at_their_deadline() {
        let started = Instant::now();
        let err = run(
            "let x = 0; loop { x += 1; if x > 4_000_000 { x = 0; } }",
            &json!({}),
            &json!({}),
            Duration::from_millis(50),
        )
        .unwrap_err();

        assert!(
            err.contains("deadline") || err.contains("operations"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn huge_strings_and_deep_recursion_fail_cleanly() {
        let big = eval(r#"let s = "x"; loop { s += s; }"#).unwrap_err();
        let deep = eval("fn f(n) { f(n + 1) } f(0)").unwrap_err();

        assert!(big.contains("too large"), "{big}");
        assert!(deep.contains("deeply"), "{deep}");
    }

    #[test]
    fn syntax_errors_are_reported() {
        let err = eval("let = ;").unwrap_err();

        assert!(err.starts_with("script error"), "{err}");
    }
}
