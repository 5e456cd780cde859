//! Printing records on standard output: JSON lines exactly as the service sent them (so numbers keep
//! their digits), or fixed columns for people; and [`printable`], which everything else `mq` prints
//! goes through so that no text from a service or an input can drive the terminal.

use std::{
    fmt::Write as _,
    io::{self, Write},
};

use serde::Deserialize;
use serde_json::value::RawValue;

/// A stored message, as far as the table shows it.
#[derive(Deserialize)]
struct MessageRow {
    id: String,
    sender: String,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    received_at: Option<String>,
    #[serde(rename = "messageAttributes", default)]
    attributes: Option<Box<RawValue>>,
}

/// A dead letter, as far as the table shows it.
#[derive(Deserialize)]
struct DeadLetterRow {
    message_id: Option<String>,
    reason: Option<String>,
    queue: Option<String>,
    received_at: Option<String>,
    payload_bytes: Option<u64>,
}

/// Widest a free-text column gets in a table before it is cut short.
const TEXT_COLUMN: usize = 24;
const ATTRIBUTES_COLUMN: usize = 60;

/// `text` with every control character escaped: C0 (newline, carriage return and tab included, so a
/// field stays on its line), DEL and C1, as `\x1b` or `\u{85}`. A text from a service or an input
/// could otherwise move the cursor, recolour or retitle the terminal, or forge lines of output.
pub fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        match u32::from(c) {
            code @ (0..=0x1f | 0x7f) => {
                let _ = write!(shown, "\\x{code:02x}");
            }
            code @ 0x80..=0x9f => {
                let _ = write!(shown, "\\u{{{code:x}}}");
            }
            _ => shown.push(c),
        }
    }
    shown
}

/// A JSON body as one line to print: the text as served when it is valid JSON (see [`json_line`]),
/// else made printable.
pub fn json_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if serde_json::from_str::<&RawValue>(text).is_ok() {
        json_line(text)
    } else {
        printable(text)
    }
}

/// Valid JSON text on one line, meaning the same: the newlines, returns and tabs it may hold between
/// tokens become spaces, and DEL and C1 characters, which JSON lets through unescaped inside strings
/// (serde_json escapes only C0), are written as `\u00XX` escapes. Everything else, numbers' digits
/// included, is kept as it was.
fn json_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len());
    for c in text.chars() {
        match u32::from(c) {
            0x0a | 0x0d | 0x09 => line.push(' '),
            code @ (0x7f..=0x9f) => {
                let _ = write!(line, "\\u{code:04x}");
            }
            _ => line.push(c),
        }
    }
    line
}

/// Writes each record as one JSON line.
pub fn json_lines(out: &mut impl Write, records: &[Box<RawValue>]) -> io::Result<()> {
    for record in records {
        writeln!(out, "{}", json_line(record.get()))?;
    }
    out.flush()
}

/// The header line of the messages table.
pub fn message_header(out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:<30}  {:<36}  {:<TEXT_COLUMN$}  {:>3}  ATTRIBUTES",
        "RECEIVED_AT", "ID", "SENDER", "PRI"
    )
}

/// Writes each stored message as a row of the messages table.
pub fn message_rows(out: &mut impl Write, records: &[Box<RawValue>]) -> io::Result<()> {
    for record in records {
        match serde_json::from_str::<MessageRow>(record.get()) {
            Ok(row) => writeln!(
                out,
                "{:<30}  {:<36}  {:<TEXT_COLUMN$}  {:>3}  {}",
                printable(&row.received_at.unwrap_or_default()),
                printable(&row.id),
                cut(&row.sender, TEXT_COLUMN),
                row.priority.unwrap_or_default(),
                cut(
                    row.attributes.as_ref().map_or("{}", |a| a.get()),
                    ATTRIBUTES_COLUMN
                ),
            )?,
            Err(_) => writeln!(out, "{}", json_body(record.get().as_bytes()))?,
        }
    }
    out.flush()
}

/// Writes dead letters as a table with its header.
pub fn dead_letter_table(
    out: &mut impl Write,
    records: &[Box<RawValue>],
    header: bool,
) -> io::Result<()> {
    if header {
        writeln!(
            out,
            "{:<36}  {:<TEXT_COLUMN$}  {:<TEXT_COLUMN$}  {:<30}  {:>8}",
            "MESSAGE_ID", "REASON", "QUEUE", "RECEIVED_AT", "BYTES"
        )?;
    }
    for record in records {
        match serde_json::from_str::<DeadLetterRow>(record.get()) {
            Ok(row) => writeln!(
                out,
                "{:<36}  {:<TEXT_COLUMN$}  {:<TEXT_COLUMN$}  {:<30}  {:>8}",
                printable(row.message_id.as_deref().unwrap_or("-")),
                cut(row.reason.as_deref().unwrap_or("-"), TEXT_COLUMN),
                cut(row.queue.as_deref().unwrap_or("-"), TEXT_COLUMN),
                printable(row.received_at.as_deref().unwrap_or("-")),
                row.payload_bytes.unwrap_or_default(),
            )?,
            Err(_) => writeln!(out, "{}", json_body(record.get().as_bytes()))?,
        }
    }
    out.flush()
}

/// `text` made printable, in at most `width` characters, an ellipsis marking a cut.
fn cut(text: &str, width: usize) -> String {
    let text = printable(text);
    if text.chars().count() <= width {
        return text;
    }
    let mut kept: String = text.chars().take(width.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_row_shows_its_fields_and_cuts_long_text() {
        let record: Box<RawValue> = serde_json::from_str(
            r#"{"id":"0193","sender":"a-very-long-sender-name-indeed-yes","priority":3,"received_at":"2026-01-01T00:00:00Z","messageAttributes":{"n":1.50}}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        message_rows(&mut out, &[record]).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains("a-very-long-sender-name…"), "{line}");
        assert!(line.contains(r#"{"n":1.50}"#), "{line}");
    }

    #[test]
    fn control_characters_are_escaped_and_nothing_else_is() {
        assert_eq!(
            printable("\u{1b}[31mx\ny\tz\r\u{7f}\u{9b}é…"),
            "\\x1b[31mx\\x0ay\\x09z\\x0d\\x7f\\u{9b}é…"
        );
        let record: Box<RawValue> = serde_json::from_str(
            r#"{"message_id":"m","reason":"\u001b]0;owned\u0007","queue":"q\u009b","received_at":"t"}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        dead_letter_table(&mut out, &[record], false).unwrap();
        assert!(!out.iter().any(|&b| b < 0x20 && b != b'\n'), "{out:?}");
        assert!(!String::from_utf8(out).unwrap().contains('\u{9b}'));
        assert_eq!(json_body(b"{\"a\":\n 1}\n"), r#"{"a":  1}"#);
        assert_eq!(json_body(b"<html>\x1b[2J"), "<html>\\x1b[2J");
        let served = "{\"s\":\"a\u{9b}b\u{7f}\",\"n\":1.50}";
        assert_eq!(
            json_body(served.as_bytes()),
            r#"{"s":"a\u009bb\u007f","n":1.50}"#
        );
        let value: serde_json::Value = serde_json::from_str(&json_body(served.as_bytes())).unwrap();
        assert_eq!(value["s"], "a\u{9b}b\u{7f}");
    }
}
