//! HTTP routes of the consumer, one module an endpoint group.

pub mod dead_letters;
pub mod health;
pub mod messages;

use crate::error::ApiError;

/// The integer query parameter `name` as sent (`raw`), `default` when absent, refused with a problem
/// that names the parameter and its range when it is not an integer within `range` (both ends in).
pub(crate) fn bounded(
    name: &str,
    raw: Option<&str>,
    default: usize,
    range: (usize, usize),
) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    raw.parse::<usize>()
        .ok()
        .filter(|n| (range.0..=range.1).contains(n))
        .ok_or_else(|| {
            ApiError::InvalidParameter(format!(
                "{name} must be an integer from {} to {}, got {raw:?}",
                range.0, range.1
            ))
        })
}
