//! The services' errors as `mq` shows them: an RFC 9457 problem (`application/problem+json`) printed as
//! one readable line, never the raw body.

use std::fmt;

use common::web::problem::PROBLEM_JSON;
use serde::Deserialize;

use crate::output::printable;

/// A refusal by a service: its problem details (the `type` URN and any extension members are not
/// shown), or what could be made of a body that was not one (a proxy's error page, say).
#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    pub title: Option<String>,
    pub status: u16,
    pub detail: Option<String>,
}

/// Longest piece of a body that is not a problem shown in an error: enough to recognise it.
const SNIPPET_CHARS: usize = 200;

impl Problem {
    /// Reads a problem from an error response's body; a body that is not one becomes a problem with the
    /// HTTP status's reason as title and the start of the body (first line, trimmed) as detail.
    pub fn from_body(status: u16, content_type: Option<&str>, body: &[u8]) -> Self {
        let declared = content_type.is_some_and(|ct| {
            let essence = ct.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case(PROBLEM_JSON)
                || essence.eq_ignore_ascii_case("application/json")
        });
        if declared {
            if let Ok(mut problem) = serde_json::from_slice::<Problem>(body) {
                problem.status = status;
                return problem;
            }
        }
        let text = String::from_utf8_lossy(body);
        let first_line = text.lines().map(str::trim).find(|l| !l.is_empty());
        Self {
            title: None,
            status,
            detail: first_line.map(|line| line.chars().take(SNIPPET_CHARS).collect()),
        }
    }

    /// The title the service gave, or the status's standard reason.
    pub fn title(&self) -> String {
        self.title.clone().unwrap_or_else(|| {
            reqwest::StatusCode::from_u16(self.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error")
                .to_owned()
        })
    }

    /// The batch element a publish refusal names (`message at index 3: …`), if it names one.
    pub fn element_index(&self) -> Option<usize> {
        let detail = self.detail.as_deref()?;
        let rest = detail.split("message at index ").nth(1)?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }
}

/// `401 Unauthorized: the bearer token is not valid`.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, printable(&self.title()))?;
        if let Some(detail) = &self.detail {
            write!(f, ": {}", printable(detail))?;
        }
        Ok(())
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_body_is_shown_as_status_title_and_detail() {
        let body = br#"{"type":"urn:x","title":"Bad Request","status":400,"detail":"message at index 12: sender: must not be blank"}"#;
        let problem = Problem::from_body(400, Some("application/problem+json"), body);
        assert_eq!(
            problem.to_string(),
            "400 Bad Request: message at index 12: sender: must not be blank"
        );
        assert_eq!(problem.element_index(), Some(12));
    }

    #[test]
    fn a_body_that_is_not_a_problem_gives_its_first_line_only() {
        let body = b"\n<html>\n<body>bad gateway</body></html>";
        let problem = Problem::from_body(502, Some("text/html"), body);
        assert_eq!(problem.to_string(), "502 Bad Gateway: <html>");
        assert_eq!(problem.element_index(), None);
    }

    #[test]
    fn control_characters_of_a_problem_are_escaped() {
        let body = br#"{"title":"Bad\u001b[2J","status":400,"detail":"x\u009by\nz"}"#;
        let problem = Problem::from_body(400, Some("application/problem+json"), body);
        assert_eq!(problem.to_string(), r"400 Bad\x1b[2J: x\u{9b}y\x0az");
        let html = Problem::from_body(502, Some("text/html"), b"<h1>\x1b]0;t\x07</h1>");
        assert_eq!(html.to_string(), r"502 Bad Gateway: <h1>\x1b]0;t\x07</h1>");
    }
}
