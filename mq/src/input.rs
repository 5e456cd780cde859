//! Reading `mq publish`'s input: JSON lines or one JSON array, each message numbered by the line it
//! starts on and checked against the message rules before anything is sent, so that one bad line is
//! reported on its own instead of refusing a whole batch.

use std::{io::Read, ops::Range};

use anyhow::Context;
use common::{model::MAX_JSON_DEPTH, Message, MessageInput};
use serde_json::value::RawValue;

/// A message that passed every check, as its exact JSON text in the input (so numbers keep their
/// digits), with its place among the input's elements (0-based) and the line it starts on.
#[derive(Debug, Clone)]
pub struct Entry {
    pub ordinal: usize,
    pub line: usize,
    pub span: Range<usize>,
}

/// A message that will not be sent, with the line it starts on and why.
#[derive(Debug, Clone)]
pub struct Reject {
    pub line: usize,
    pub reason: String,
    pub text: String,
}

/// The input, split into what will be sent and what will not.
#[derive(Debug, Default)]
pub struct Parsed {
    pub entries: Vec<Entry>,
    pub rejects: Vec<Reject>,
    /// The length in bytes of every element of the input (a non-blank line, or an element of the
    /// array), valid or not, by ordinal: what batches are cut by, so that whether an element is
    /// valid never moves a batch boundary.
    pub sizes: Vec<usize>,
}

/// An input that cannot be read as messages at all: a JSON array with a syntax error, after which no
/// element can be told from the next.
#[derive(Debug)]
pub struct Unreadable {
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} column {}: the JSON array is malformed ({}); nothing was sent",
            self.line, self.column, self.reason
        )
    }
}

impl std::error::Error for Unreadable {}

/// The whole input: the file, or standard input for `-`. Read whole because its hash names it (see
/// `keys`) and because a JSON array is only known to be well-formed at its end.
pub fn read(source: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if source == "-" {
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("Failed to read standard input")?;
    } else {
        bytes = std::fs::read(source).with_context(|| format!("Failed to read {source}"))?;
    }
    Ok(bytes)
}

/// Splits `bytes` into messages: a JSON array when the first character (after a byte-order mark and
/// whitespace) is `[`, else JSON lines, where blank lines are skipped.
pub fn parse(bytes: &[u8], max_message_bytes: usize) -> Result<Parsed, Unreadable> {
    let start = if bytes.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let first = skip_whitespace(bytes, start);
    if bytes.get(first) == Some(&b'[') {
        parse_array(bytes, first, max_message_bytes)
    } else {
        Ok(parse_lines(bytes, start, max_message_bytes))
    }
}

fn parse_lines(bytes: &[u8], start: usize, max_message_bytes: usize) -> Parsed {
    let mut parsed = Parsed::default();
    let mut offset = start;
    for (index, raw) in bytes[start..].split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let begin = offset + raw.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let end = offset + raw.len()
            - raw
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
        offset += raw.len() + 1;
        if begin >= end {
            continue;
        }
        sort(&mut parsed, bytes, line, begin..end, max_message_bytes);
    }
    parsed
}

fn parse_array(bytes: &[u8], open: usize, max_message_bytes: usize) -> Result<Parsed, Unreadable> {
    let mut parsed = Parsed::default();
    let (mut line, mut counted) = (1, 0);
    let mut line_at = |offset: usize| {
        line += bytes[counted..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        counted = offset;
        line
    };
    let mut pos = skip_whitespace(bytes, open + 1);
    if bytes.get(pos) != Some(&b']') {
        loop {
            let mut stream =
                serde_json::Deserializer::from_slice(&bytes[pos..]).into_iter::<&RawValue>();
            match stream.next() {
                Some(Ok(_)) => {}
                _ => return Err(unreadable(bytes)),
            }
            let end = pos + stream.byte_offset();
            sort(
                &mut parsed,
                bytes,
                line_at(pos),
                pos..end,
                max_message_bytes,
            );
            pos = skip_whitespace(bytes, end);
            match bytes.get(pos) {
                Some(b',') => pos = skip_whitespace(bytes, pos + 1),
                Some(b']') => break,
                _ => return Err(unreadable(bytes)),
            }
        }
    }
    if skip_whitespace(bytes, pos + 1) != bytes.len() {
        return Err(unreadable(bytes));
    }
    Ok(parsed)
}

/// Where and why the whole input fails to parse as JSON, as serde_json says it.
fn unreadable(bytes: &[u8]) -> Unreadable {
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        Err(error) => Unreadable {
            line: error.line(),
            column: error.column(),
            reason: strip_position(&error.to_string()),
        },
        // Valid JSON that the element walk still refused: an element that is not a value.
        Ok(_) => Unreadable {
            line: 1,
            column: 1,
            reason: "not an array of JSON values".into(),
        },
    }
}

/// Puts the message at `span` among the entries, or among the rejects with its reason.
fn sort(parsed: &mut Parsed, bytes: &[u8], line: usize, span: Range<usize>, max_bytes: usize) {
    let text = &bytes[span.clone()];
    let ordinal = parsed.sizes.len();
    parsed.sizes.push(span.len());
    match check(text, max_bytes) {
        Ok(()) => parsed.entries.push(Entry {
            ordinal,
            line,
            span,
        }),
        Err(reason) => parsed.rejects.push(Reject {
            line,
            reason,
            text: String::from_utf8_lossy(text).into_owned(),
        }),
    }
}

/// The publisher's rules for one message: its size, its JSON, its fields and its depth.
fn check(text: &[u8], max_bytes: usize) -> Result<(), String> {
    if text.len() > max_bytes {
        return Err(format!(
            "the message is {} bytes, over the limit of {max_bytes} bytes",
            text.len()
        ));
    }
    let input: MessageInput = serde_json::from_slice(text).map_err(|error| {
        let text = strip_position(&error.to_string());
        if error.is_syntax() || error.is_eof() {
            format!("malformed JSON: {text} (column {})", error.column())
        } else {
            text
        }
    })?;
    Message::validate(input, MAX_JSON_DEPTH).map(drop)
}

/// serde_json's message without its ` at line L column C` tail, which `mq` states in its own terms.
fn strip_position(text: &str) -> String {
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text.to_owned(),
    }
}

fn skip_whitespace(bytes: &[u8], mut pos: usize) -> usize {
    while bytes.get(pos).is_some_and(u8::is_ascii_whitespace) {
        pos += 1;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(parsed: &Parsed) -> (Vec<usize>, Vec<usize>) {
        (
            parsed.entries.iter().map(|e| e.line).collect(),
            parsed.rejects.iter().map(|r| r.line).collect(),
        )
    }

    #[test]
    fn json_lines_are_numbered_blank_lines_skipped_and_bad_ones_set_aside() {
        let input = b"{\"sender\":\"a\"}\n\n{\"sender\":\n{\"sender\":\"b\",\"bogus\":1}\r\n  {\"sender\":\"c\"}  \n";
        let parsed = parse(input, 65536).unwrap();
        assert_eq!(lines_of(&parsed), (vec![1, 5], vec![3, 4]));
        assert!(
            parsed.rejects[0].reason.starts_with("malformed JSON"),
            "{:?}",
            parsed.rejects[0]
        );
        assert!(
            parsed.rejects[1].reason.contains("bogus"),
            "{:?}",
            parsed.rejects[1]
        );
        assert_eq!(
            &input[parsed.entries[1].span.clone()],
            b"{\"sender\":\"c\"}"
        );
    }

    #[test]
    fn an_array_gives_each_element_the_line_it_starts_on() {
        let input = b"[\n  {\"sender\":\"a\"},\n  {\"sender\":\"\"},\n  {\"sender\":\"c\",\n   \"priority\":1}\n]\n";
        let parsed = parse(input, 65536).unwrap();
        assert_eq!(lines_of(&parsed), (vec![2, 4], vec![3]));
        assert!(
            parsed.rejects[0].reason.starts_with("sender"),
            "{:?}",
            parsed.rejects[0]
        );
    }

    #[test]
    fn a_malformed_array_is_unreadable_with_its_position() {
        let error = parse(b"[{\"sender\":\"a\"}\n {\"sender\":\"b\"}]", 65536).unwrap_err();
        assert_eq!((error.line, error.column), (2, 2), "{error}");
        assert!(parse(b"[{\"sender\":\"a\"}] x", 65536).is_err());
        assert!(parse(b"[]", 65536).unwrap().entries.is_empty());
    }

    #[test]
    fn an_oversized_message_is_refused_by_its_size() {
        let parsed = parse(b"{\"sender\":\"aaaaaaaaaa\"}", 10).unwrap();
        assert!(parsed.rejects[0].reason.contains("over the limit"));
    }
}
