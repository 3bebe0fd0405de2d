//! Templates and conditions: how node configs refer to data.
//!
//! A template is any JSON value whose strings may contain expressions in double braces:
//! `{"message": "New user: {{input.username}} ({{input.email}})"}`. Rendering walks the value
//! and replaces each string:
//!
//! - a string that is exactly one expression, like `"{{input.amount}}"`, becomes the
//!   expression's value with its JSON type (a number stays a number, an object an object);
//! - any other string has each expression replaced by its text: strings as they are, every
//!   other value as compact JSON (`null`, `true`, `42`, `{"a":1}`).
//!
//! Rendering happens once: text produced by an expression is never scanned for further
//! expressions, so data cannot inject template code.
//!
//! Expressions are strict. A name or field that does not exist is an error naming it, never an
//! empty string. Plain paths (`input.user.emails[0]`, `nodes.fetch.output.body`) are resolved
//! directly on the JSON, so numbers of any size keep every digit; anything richer
//! (`input.name | upper`, `input.total * 2`) is evaluated by MiniJinja with a fuel limit, so a
//! runaway expression fails instead of hanging a worker.
//!
//! Conditions, as stored on conditional edges and condition nodes, are described at
//! [`condition_holds`].

use std::fmt;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};

/// MiniJinja instructions one expression may execute; far more than any sane expression
/// needs, far fewer than it takes to notice a hang.
const FUEL: u64 = 50_000;

/// Nesting of data structures and calls MiniJinja may recurse into.
const RECURSION_LIMIT: usize = 64;

/// Keys listed in an "is undefined" message, to point at a likely typo.
const KEYS_SHOWN: usize = 12;

/// An expression that could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// The expression as written, without the braces.
    pub expression: String,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "in {{{{{}}}}}: {}", self.expression, self.message)
    }
}

impl std::error::Error for ExprError {}

impl ExprError {
    fn new(expression: &str, message: impl Into<String>) -> Self {
        Self {
            expression: expression.trim().to_owned(),
            message: message.into(),
        }
    }
}

/// The names an expression can see, such as `input`, `nodes`, `secrets` and `execution`.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    vars: Map<String, Value>,
}

impl Scope {
    /// An empty scope.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the top-level name `name`.
    #[must_use]
    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.vars.insert(name.to_owned(), value);
        self
    }

    /// The value of a top-level name.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.vars.get(name)
    }
}

/// Renders every string inside `template`; see the module documentation.
pub fn render(template: &Value, scope: &Scope) -> Result<Value, ExprError> {
    match template {
        Value::String(text) => render_str(text, scope),
        Value::Array(items) => items.iter().map(|v| render(v, scope)).collect(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), render(v, scope)?)))
            .collect::<Result<Map<_, _>, _>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

/// Renders one string; a string that is exactly one expression keeps the value's type.
pub fn render_str(text: &str, scope: &Scope) -> Result<Value, ExprError> {
    let pieces = split(text)?;
    if let [Piece::Expr(expr)] = pieces.as_slice() {
        return evaluate(expr, scope);
    }
    let mut out = String::with_capacity(text.len());
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Expr(expr) => match evaluate(expr, scope)? {
                Value::String(s) => out.push_str(&s),
                other => out.push_str(&other.to_string()),
            },
        }
    }
    Ok(Value::String(out))
}

/// Evaluates one expression (written without braces) to a JSON value.
pub fn evaluate(expr: &str, scope: &Scope) -> Result<Value, ExprError> {
    match parse_path(expr) {
        Some(path) => resolve(&path, expr, scope).cloned(),
        None => evaluate_with_minijinja(expr, scope),
    }
}

/// Whether a condition holds.
///
/// A condition is a JSON object in one of two forms (an empty object or `null` always holds):
///
/// - `{"expression": "{{output.status}} == 'success'"}`: the text with each `{{…}}` taken as
///   a sub-expression is evaluated as one expression, and its truthiness decides. An expression
///   without braces is evaluated as it stands.
/// - `{"field": "{{output.status}}", "operator": "equals", "value": "success"}`: the rendered
///   `field` (default `{{output}}`) is compared with `value`. Operators: `equals`,
///   `not_equals`, `greater_than`, `greater_than_or_equal`, `less_than`,
///   `less_than_or_equal`, `contains`, `not_contains`, `exists`, `not_exists`, `is_empty`,
///   `is_not_empty`.
///
/// When both are present, `expression` decides and `operator`/`value` serve only as labels, as
/// in the data model's example where they describe the same test.
pub fn condition_holds(condition: &Value, scope: &Scope) -> Result<bool, ExprError> {
    let map = match condition {
        Value::Null => return Ok(true),
        Value::Object(map) if map.is_empty() => return Ok(true),
        Value::Object(map) => map,
        other => {
            return Err(ExprError::new(
                &other.to_string(),
                "a condition must be an object",
            ));
        }
    };

    if let Some(expression) = map.get("expression") {
        let Value::String(text) = expression else {
            return Err(ExprError::new(
                &expression.to_string(),
                "`expression` must be a string",
            ));
        };
        return expression_holds(text, scope);
    }

    let Some(Value::String(operator)) = map.get("operator") else {
        return Err(ExprError::new(
            &condition.to_string(),
            "a condition needs an `expression`, or an `operator` with a `value`",
        ));
    };
    let field = map
        .get("field")
        .and_then(Value::as_str)
        .unwrap_or("{{output}}");
    let expected = map.get("value").unwrap_or(&Value::Null);
    compare(field, operator, expected, scope)
}

fn expression_holds(text: &str, scope: &Scope) -> Result<bool, ExprError> {
    // `{{a}} == 'x'` becomes `(a) == 'x'`: one expression, evaluated once.
    let mut combined = String::with_capacity(text.len());
    let mut only_text = true;
    for piece in split(text)? {
        match piece {
            Piece::Text(t) => combined.push_str(t),
            Piece::Expr(e) => {
                only_text = false;
                combined.push('(');
                combined.push_str(e);
                combined.push(')');
            }
        }
    }
    let value = if only_text || parse_path(&combined).is_none() {
        evaluate_truthiness(&combined, scope)?
    } else {
        truthy(&evaluate(&combined, scope)?)
    };
    Ok(value)
}

fn compare(
    field: &str,
    operator: &str,
    expected: &Value,
    scope: &Scope,
) -> Result<bool, ExprError> {
    let actual = render_str(field, scope);
    let op_error = |message: &str| ExprError::new(field, format!("{operator}: {message}"));
    match operator {
        "exists" => return Ok(actual.is_ok()),
        "not_exists" => return Ok(actual.is_err()),
        _ => {}
    }
    let actual = actual?;
    let held = match operator {
        "equals" => json_equal(&actual, expected),
        "not_equals" => !json_equal(&actual, expected),
        "contains" | "not_contains" => {
            let found = match (&actual, expected) {
                (Value::String(s), Value::String(needle)) => s.contains(needle.as_str()),
                (Value::Array(items), needle) => items.iter().any(|i| json_equal(i, needle)),
                (Value::Object(map), Value::String(key)) => map.contains_key(key),
                _ => return Err(op_error("needs a string, an array or an object to search")),
            };
            found == (operator == "contains")
        }
        "is_empty" | "is_not_empty" => {
            let empty = match &actual {
                Value::Null => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                Value::Bool(_) | Value::Number(_) => false,
            };
            empty == (operator == "is_empty")
        }
        "greater_than" | "greater_than_or_equal" | "less_than" | "less_than_or_equal" => {
            let ordering = order(&actual, expected)
                .ok_or_else(|| op_error("can only order two numbers or two strings"))?;
            match operator {
                "greater_than" => ordering.is_gt(),
                "greater_than_or_equal" => ordering.is_ge(),
                "less_than" => ordering.is_lt(),
                _ => ordering.is_le(),
            }
        }
        _ => return Err(op_error("unknown operator")),
    };
    Ok(held)
}

/// Equality where numbers compare by value (`1` equals `1.0`).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
        }
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                return Some(x.cmp(&y));
            }
            x.as_f64()?.partial_cmp(&y.as_f64()?)
        }
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Truthiness as in Jinja: false, null, 0, "" and empty collections are false.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

enum Piece<'a> {
    Text(&'a str),
    Expr(&'a str),
}

fn split(text: &str) -> Result<Vec<Piece<'_>>, ExprError> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(ExprError::new(after, "`{{` is never closed by `}}`"));
        };
        let expr = &after[..end];
        if expr.trim().is_empty() {
            return Err(ExprError::new(expr, "empty expression"));
        }
        pieces.push(Piece::Expr(expr));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

#[derive(Debug, PartialEq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Parses `name(.field | .0 | [0] | ['field'] | ["field"])*`; anything else is not a plain path.
fn parse_path(expr: &str) -> Option<Vec<Segment<'_>>> {
    let expr = expr.trim();
    let mut segments = Vec::new();
    let mut rest = expr;
    let ident_len = |s: &str| {
        s.char_indices()
            .find(|&(i, c)| {
                !(c == '_' || c.is_ascii_alphanumeric()) || (i == 0 && c.is_ascii_digit())
            })
            .map_or(s.len(), |(i, _)| i)
    };

    let first = ident_len(rest);
    if first == 0 {
        return None;
    }
    segments.push(Segment::Key(&rest[..first]));
    rest = &rest[first..];

    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let digits = after.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 {
                segments.push(Segment::Index(after[..digits].parse().ok()?));
                rest = &after[digits..];
                continue;
            }
            let len = ident_len(after);
            if len == 0 {
                return None;
            }
            segments.push(Segment::Key(&after[..len]));
            rest = &after[len..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']')?;
            let inner = after[..close].trim();
            let quoted = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
            match quoted {
                Some(key) if !key.contains(['\'', '"', '\\']) => segments.push(Segment::Key(key)),
                Some(_) => return None,
                None => segments.push(Segment::Index(inner.parse().ok()?)),
            }
            rest = &after[close + 1..];
        } else {
            return None;
        }
    }
    Some(segments)
}

fn resolve<'s>(path: &[Segment<'_>], expr: &str, scope: &'s Scope) -> Result<&'s Value, ExprError> {
    let Some(Segment::Key(root)) = path.first() else {
        return Err(ExprError::new(expr, "not a path"));
    };
    let mut current = scope.get(root).ok_or_else(|| {
        let known: Vec<&str> = scope.vars.keys().map(String::as_str).collect();
        ExprError::new(
            expr,
            format!("`{root}` is undefined (known names: {})", known.join(", ")),
        )
    })?;

    let mut walked = (*root).to_owned();
    for segment in &path[1..] {
        let next = match (segment, current) {
            (Segment::Key(key), Value::Object(map)) => map.get(*key).ok_or_else(|| {
                let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
                let more = keys.len() > KEYS_SHOWN;
                keys.truncate(KEYS_SHOWN);
                let listed = if keys.is_empty() {
                    "none".to_owned()
                } else {
                    keys.join(", ")
                };
                let etc = if more { ", …" } else { "" };
                format!("`{walked}` has no field `{key}` (its fields: {listed}{etc})")
            }),
            (Segment::Index(i), Value::Array(items)) => items.get(*i).ok_or_else(|| {
                format!(
                    "`{walked}` has {} items, so [{i}] is undefined",
                    items.len()
                )
            }),
            (Segment::Key(key), other) => Err(format!(
                "`{walked}` is {}, not an object, so it has no field `{key}`",
                kind(other)
            )),
            (Segment::Index(i), other) => Err(format!(
                "`{walked}` is {}, not an array, so it has no item [{i}]",
                kind(other)
            )),
        }
        .map_err(|message| ExprError::new(expr, message))?;
        match segment {
            Segment::Key(key) => {
                walked.push('.');
                walked.push_str(key);
            }
            Segment::Index(i) => walked.push_str(&format!("[{i}]")),
        }
        current = next;
    }
    Ok(current)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env
}

fn run_minijinja(expr: &str, scope: &Scope) -> Result<minijinja::Value, ExprError> {
    let env = environment();
    let compiled = env.compile_expression(expr).map_err(|e| {
        ExprError::new(
            expr,
            format!("cannot parse: {}", e.detail().unwrap_or("syntax error")),
        )
    })?;
    let vars: std::collections::BTreeMap<&str, minijinja::Value> = scope
        .vars
        .iter()
        .map(|(k, v)| (k.as_str(), to_minijinja(v)))
        .collect();
    let value = compiled.eval(vars).map_err(|e| {
        let detail = e
            .detail()
            .map_or_else(|| e.kind().to_string(), str::to_owned);
        ExprError::new(expr, detail)
    })?;
    if value.is_undefined() {
        return Err(ExprError::new(expr, "is undefined"));
    }
    Ok(value)
}

/// Converts JSON to a MiniJinja value by hand: through serde, numbers of arbitrary precision
/// would arrive as opaque maps.
fn to_minijinja(value: &Value) -> minijinja::Value {
    match value {
        Value::Null => minijinja::Value::from(()),
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                minijinja::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                minijinja::Value::from(u)
            } else if let Ok(i) = n.to_string().parse::<i128>() {
                minijinja::Value::from(i)
            } else {
                minijinja::Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => minijinja::Value::from(s.as_str()),
        Value::Array(items) => items.iter().map(to_minijinja).collect(),
        Value::Object(map) => minijinja::Value::from(
            map.iter()
                .map(|(k, v)| (k.as_str(), to_minijinja(v)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
    }
}

fn evaluate_with_minijinja(expr: &str, scope: &Scope) -> Result<Value, ExprError> {
    let value = run_minijinja(expr, scope)?;
    serde_json::to_value(&value)
        .map_err(|e| ExprError::new(expr, format!("result is not JSON: {e}")))
}

fn evaluate_truthiness(expr: &str, scope: &Scope) -> Result<bool, ExprError> {
    Ok(run_minijinja(expr, scope)?.is_true())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn scope() -> Scope {
        Scope::new()
            .with(
                "input",
                json!({"username": "ada", "email": "ada@example.com", "age": 36,
                                 "tags": ["admin", "ops"], "huge": 12345678901234567890123_u128,
                                 "user name": "spaced", "nothing": null}),
            )
            .with(
                "nodes",
                json!({"fetch": {"output": {"status": 200, "body": {"ok": true}}}}),
            )
            .with("output", json!({"status": "success", "count": 3}))
    }

    #[test]
    fn interpolation_renders_each_expression_once() {
        let out = render_str("New user: {{input.username}} ({{ input.email }})", &scope());

        assert_eq!(out, Ok(json!("New user: ada (ada@example.com)")));
    }

    #[test]
    fn a_lone_expression_keeps_its_json_type() {
        let s = scope();

        assert_eq!(render_str("{{input.age}}", &s), Ok(json!(36)));
        assert_eq!(
            render_str("{{ nodes.fetch.output.body }}", &s),
            Ok(json!({"ok": true}))
        );
        assert_eq!(render_str("{{input.tags[1]}}", &s), Ok(json!("ops")));
        assert_eq!(render_str("{{input.tags.0}}", &s), Ok(json!("admin")));
        assert_eq!(
            render_str("{{input['user name']}}", &s),
            Ok(json!("spaced"))
        );
        assert_eq!(render_str("{{input.nothing}}", &s), Ok(Value::Null));
    }

    #[test]
    fn big_integers_keep_every_digit() {
        let out = render(
            &json!({"n": "{{input.huge}}", "text": "n={{input.huge}}"}),
            &scope(),
        )
        .unwrap();

        assert_eq!(out["n"].to_string(), "12345678901234567890123");
        assert_eq!(out["text"], "n=12345678901234567890123");
    }

    #[test]
    fn non_strings_interpolate_as_json() {
        let out = render_str("{{input.age}} {{input.tags}} {{input.nothing}}", &scope());

        assert_eq!(out, Ok(json!(r#"36 ["admin","ops"] null"#)));
    }

    #[test]
    fn a_typo_is_an_error_naming_the_field_and_its_neighbours() {
        let err = render_str("Hi {{input.usrname}}", &scope()).unwrap_err();

        assert_eq!(err.expression, "input.usrname");
        assert!(
            err.message.contains("`input` has no field `usrname`"),
            "{err}"
        );
        assert!(err.message.contains("username"), "{err}");
    }

    #[test]
    fn unknown_roots_and_type_mismatches_are_errors() {
        let s = scope();

        let root = render_str("{{secrets.token}}", &s).unwrap_err();
        let not_object = render_str("{{input.age.years}}", &s).unwrap_err();
        let out_of_range = render_str("{{input.tags[5]}}", &s).unwrap_err();

        assert!(root.message.contains("`secrets` is undefined"), "{root}");
        assert!(
            not_object.message.contains("is a number, not an object"),
            "{not_object}"
        );
        assert!(
            out_of_range.message.contains("has 2 items"),
            "{out_of_range}"
        );
    }

    #[test]
    fn richer_expressions_go_through_minijinja() {
        let s = scope();

        assert_eq!(
            render_str("{{ input.username | upper }}", &s),
            Ok(json!("ADA"))
        );
        assert_eq!(render_str("{{ input.age + 1 }}", &s), Ok(json!(37)));
        assert_eq!(
            render_str("{{ input.tags | length }} tags", &s),
            Ok(json!("2 tags"))
        );
    }

    #[test]
    fn richer_expressions_are_strict_too() {
        let err = render_str("{{ input.usrname | upper }}", &scope()).unwrap_err();

        assert_eq!(err.expression, "input.usrname | upper");
    }

    #[test]
    fn runaway_expressions_run_out_of_fuel() {
        let err = render_str("{{ range(100000) | sum }}", &scope()).unwrap_err();

        assert!(err.message.contains("fuel"), "{err}");
    }

    #[test]
    fn rendered_data_is_not_rendered_again() {
        let s = Scope::new().with("input", json!({"name": "{{secrets.key}}"}));

        assert_eq!(
            render_str("hello {{input.name}}", &s),
            Ok(json!("hello {{secrets.key}}"))
        );
    }

    #[test]
    fn templates_are_walked_through_objects_and_arrays() {
        let template =
            json!({"to": ["{{input.email}}"], "age": "{{input.age}}", "n": 1, "k": null});

        let out = render(&template, &scope()).unwrap();

        assert_eq!(
            out,
            json!({"to": ["ada@example.com"], "age": 36, "n": 1, "k": null})
        );
    }

    #[test]
    fn unclosed_and_empty_braces_are_errors() {
        assert!(render_str("{{input.age", &scope()).is_err());
        assert!(render_str("x {{ }} y", &scope()).is_err());
    }

    #[test]
    fn expression_conditions_follow_the_data_models_example() {
        let s = scope();
        let holds = |c| condition_holds(&c, &s).unwrap();

        assert!(holds(
            json!({"expression": "{{output.status}} == 'success'",
                             "operator": "equals", "value": "success"})
        ));
        assert!(!holds(
            json!({"expression": "{{output.status}} == 'failed'"})
        ));
        assert!(holds(json!({"expression": "output.count > 2"})));
        assert!(holds(json!({"expression": "{{output.count}}"})));
        assert!(holds(json!({})));
        assert!(holds(Value::Null));
    }

    #[test]
    fn operator_conditions_compare_a_field_with_a_value() {
        let s = scope();
        let holds = |c| condition_holds(&c, &s).unwrap();

        assert!(holds(
            json!({"field": "{{output.status}}", "operator": "equals", "value": "success"})
        ));
        assert!(holds(
            json!({"field": "{{output.count}}", "operator": "equals", "value": 3.0})
        ));
        assert!(holds(
            json!({"field": "{{output.count}}", "operator": "greater_than", "value": 2})
        ));
        assert!(!holds(
            json!({"field": "{{output.count}}", "operator": "less_than", "value": 3})
        ));
        assert!(holds(
            json!({"field": "{{input.tags}}", "operator": "contains", "value": "ops"})
        ));
        assert!(holds(
            json!({"field": "{{input.email}}", "operator": "not_contains", "value": "zz"})
        ));
        assert!(holds(
            json!({"field": "{{input.missing}}", "operator": "not_exists"})
        ));
        assert!(holds(
            json!({"field": "{{input.nothing}}", "operator": "is_empty"})
        ));
        assert!(holds(json!({"operator": "is_not_empty"})));
    }

    #[test]
    fn malformed_conditions_are_errors() {
        let s = scope();

        assert!(condition_holds(&json!({"operator": "resembles", "value": 1}), &s).is_err());
        assert!(condition_holds(&json!({"value": 1}), &s).is_err());
        assert!(condition_holds(&json!("status == 1"), &s).is_err());
        let ordering = json!({"field": "{{output.status}}", "operator": "less_than", "value": 1});
        assert!(condition_holds(&ordering, &s).is_err());
    }

    #[test]
    fn plain_paths_are_recognised_and_anything_else_is_not() {
        assert_eq!(
            parse_path("a.b[0]['c d'].e"),
            Some(vec![
                Segment::Key("a"),
                Segment::Key("b"),
                Segment::Index(0),
                Segment::Key("c d"),
                Segment::Key("e")
            ])
        );
        assert_eq!(parse_path("a | upper"), None);
        assert_eq!(parse_path("a + 1"), None);
        assert_eq!(parse_path("1a"), None);
        assert_eq!(parse_path("a..b"), None);
    }
}
