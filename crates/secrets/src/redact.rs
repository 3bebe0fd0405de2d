//! Scrubbing revealed credentials from what gets recorded.
//!
//! A node may echo what it was given: a receiver answering with the request's headers puts the
//! token into the node's output, an error message may quote a URL. Before anything of a node
//! that used credentials is written or logged, a [`Redactor`] replaces each of the
//! credentials' string values with [`MARK`], also where they appear escaped as a JSON string or
//! percent-encoded in a URL, the two forms a service most often echoes them back in.

use std::fmt;

use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// What a secret is replaced with.
pub const MARK: &str = "[redacted]";

/// Shortest string value, in characters, that is redacted. Shorter values (a port, `true`, a
/// region code) would turn ordinary words of an output into marks while hiding little.
pub const MIN_CHARS: usize = 6;

/// Replaces the string values of a set of credentials wherever they appear.
#[derive(Default)]
pub struct Redactor {
    /// Longest first, so that a secret containing another is replaced whole.
    needles: Vec<Zeroizing<String>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &self.needles.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for every string of at least [`MIN_CHARS`] characters in `credentials`, at
    /// any depth.
    pub fn new(credentials: &Value) -> Self {
        let mut needles = Vec::new();
        collect(credentials, &mut needles);
        needles.sort_by_key(|needle: &Zeroizing<String>| std::cmp::Reverse(needle.len()));
        needles.dedup();
        Self { needles }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every secret replaced.
    pub fn text(&self, text: &str) -> String {
        self.needles.iter().fold(text.to_owned(), |out, needle| {
            if out.contains(needle.as_str()) {
                out.replace(needle.as_str(), MARK)
            } else {
                out
            }
        })
    }

    /// `value` with every secret replaced in its strings and object keys.
    pub fn value(&self, value: Value) -> Value {
        if self.is_empty() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.text(&s)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.value(v)).collect()),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.text(&k), self.value(v)))
                    .collect::<Map<_, _>>(),
            ),
            other => other,
        }
    }
}

fn collect(value: &Value, into: &mut Vec<Zeroizing<String>>) {
    match value {
        Value::String(s) if s.chars().count() >= MIN_CHARS => {
            into.push(Zeroizing::new(s.clone()));
            into.extend(encodings(s).into_iter().map(Zeroizing::new));
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, into)),
        Value::Object(map) => map.values().for_each(|v| collect(v, into)),
        _ => {}
    }
}

/// The ways `secret` is spelled once it has passed through JSON or a URL, where they differ
/// from the secret itself.
fn encodings(secret: &str) -> Vec<String> {
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json.trim_matches('"').to_owned();
    let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let percent = form.replace('+', "%20");
    let mut spelled = vec![json, form, percent, url_query(secret)];
    spelled.retain(|s| s != secret);
    spelled
}

/// `text` as a URL parser leaves it in a query string: only controls, space, `"`, `#`, `<`,
/// `>`, `'` and non-ASCII bytes escaped, which is how a template rendered into a node's URL
/// reaches the service.
fn url_query(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_graphic() && !b"\"#<>'".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_are_replaced_in_strings_keys_and_nested_values() {
        let redactor = Redactor::new(&json!({
            "token": "s3cr3t-token",
            "nested": {"list": ["another-secret"]},
            "short": "abc",
        }));
        let output = json!({
            "headers": {"authorization": "Bearer s3cr3t-token"},
            "s3cr3t-token": ["x another-secret y", 5],
            "plain": "abc stays",
        });

        let scrubbed = redactor.value(output);

        assert_eq!(
            scrubbed,
            json!({
                "headers": {"authorization": "Bearer [redacted]"},
                "[redacted]": ["x [redacted] y", 5],
                "plain": "abc stays",
            })
        );
        assert_eq!(
            redactor.text("GET /?k=s3cr3t-token failed"),
            "GET /?k=[redacted] failed"
        );
    }

    #[test]
    fn a_secret_is_also_replaced_as_echoed_in_json_or_a_url() {
        let secret = "p@ss\"word/+= é";
        let redactor = Redactor::new(&json!({ "token": secret }));
        let echoed = [
            r#"{"s":"p@ss\"word/+= é"}"#,
            "/e?k=p@ss%22word/+=%20%C3%A9",
            "k=p%40ss%22word%2F%2B%3D+%C3%A9",
            "k=p%40ss%22word%2F%2B%3D%20%C3%A9",
        ];

        let scrubbed: Vec<String> = echoed.iter().map(|text| redactor.text(text)).collect();

        assert_eq!(
            scrubbed,
            [
                r#"{"s":"[redacted]"}"#,
                "/e?k=[redacted]",
                "k=[redacted]",
                "k=[redacted]"
            ]
        );
    }

    #[test]
    fn a_secret_containing_another_is_replaced_whole() {
        let redactor = Redactor::new(&json!({"a": "prefix", "b": "prefix-and-more"}));
        assert_eq!(redactor.text("prefix-and-more"), MARK);
        assert_eq!(redactor.text("prefix"), MARK);
    }

    #[test]
    fn debug_shows_a_count_only() {
        let redactor = Redactor::new(&json!({"a": "do-not-print"}));
        let debug = format!("{redactor:?}");
        assert!(!debug.contains("do-not-print"), "{debug}");
    }
}
