//! Keeping secrets out of logs and error messages: URLs lose their passwords, and configurations print
//! through [`debug_redacted`].

use std::fmt;

use serde::Serialize;

/// What a secret is replaced with.
pub const REDACTED: &str = "***";

/// `url` with the password of its user information (`scheme://user:password@host`) and any
/// `password=` query parameter replaced by `***`. Several URLs separated by commas are each redacted.
pub fn url(url: &str) -> String {
    url.split(',').map(one_url).collect::<Vec<_>>().join(",")
}

fn one_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let authority_end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..authority_end].rfind('@').map(|i| start + i) {
            if let Some(colon) = out[start..at].find(':').map(|i| start + i) {
                out.replace_range(colon + 1..at, REDACTED);
            }
        }
    }
    if let Some(query) = out.find('?') {
        let (head, tail) = out.split_at(query + 1);
        let tail = tail
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                    format!("{key}={REDACTED}")
                }
                _ => pair.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{head}{tail}");
    }
    out
}

/// Writes `config` as `name { field: value, … }` with every `*_url` field's password redacted, for
/// `Debug` implementations of settings that hold credentials.
pub fn debug_redacted<T: Serialize>(
    name: &str,
    config: &T,
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    let mut debug = f.debug_struct(name);
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(config) {
        for (field, value) in fields {
            match value {
                serde_json::Value::String(text) if field.ends_with("url") => {
                    debug.field(&field, &self::url(&text));
                }
                other => {
                    debug.field(&field, &other);
                }
            }
        }
    }
    debug.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_user_information_and_queries_are_replaced() {
        assert_eq!(
            url("amqp://guest:s3cret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            url("postgres://app:p@ss:word@db:5432/messages?sslmode=require&password=x&user=y"),
            "postgres://app:***@db:5432/messages?sslmode=require&password=***&user=y"
        );
        assert_eq!(
            url("amqp://a:one@n1/%2f,amqp://a:two@n2/%2f"),
            "amqp://a:***@n1/%2f,amqp://a:***@n2/%2f"
        );
        for plain in [
            "amqp://127.0.0.1:5672/%2f",
            "postgres://postgres@db/x",
            "not a url",
        ] {
            assert_eq!(url(plain), plain);
        }
    }
}
