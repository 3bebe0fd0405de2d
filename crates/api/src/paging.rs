//! What the paged listings share: the `limit` parameter and how a page is cut.
//!
//! A listing fetches one row more than asked; that row's presence says whether another page
//! follows, without a second query to count.
//!
//! A cursor ends with a [`tag`] of the filters of the request that gave it out, so a cursor
//! passed with other filters is refused rather than silently resuming a different listing.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ApiError;

/// Rows on a page when the request names no `limit`.
pub const DEFAULT_LIMIT: i64 = 20;

/// The most rows on one page.
pub const MAX_LIMIT: i64 = 100;

/// The page size a request asked for, checked.
pub fn limit(requested: Option<i64>) -> Result<i64, ApiError> {
    let limit = requested.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    Ok(limit)
}

/// Cuts `rows`, fetched with a limit of `limit + 1`, to one page, and returns the cursor of
/// its last row when more rows follow.
pub fn cut<T>(
    mut rows: Vec<T>,
    limit: i64,
    cursor: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more { rows.last().map(cursor) } else { None };
    (rows, next)
}

/// The answer to a cursor this API did not give out, or not for this listing.
pub fn invalid_cursor(raw: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "the cursor {raw:?} is not one this API gave out; pass `next_cursor` unchanged"
    ))
}

/// What ties a cursor to its listing: 16 hexadecimal digits of a digest of `filters`.
pub fn tag(filters: &Value) -> String {
    let digest = Sha256::digest(filters.to_string().as_bytes());
    digest[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Checks that the tag at the end of cursor `raw` is `expected`; `filters` names the
/// parameters that must match, for the message.
pub fn check_tag(raw: &str, found: &str, expected: &str, filters: &str) -> Result<(), ApiError> {
    if found.len() != expected.len() || !found.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid_cursor(raw));
    }
    if found != expected {
        return Err(ApiError::BadRequest(format!(
            "the cursor comes from a listing with other filters; pass the same {filters} as \
             the request that returned it"
        )));
    }
    Ok(())
}
