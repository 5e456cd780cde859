//! Printing records on standard output: JSON lines exactly as the service sent them (so numbers keep
//! their digits), or fixed columns for people.

use std::io::{self, Write};

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

/// Writes each record as one JSON line.
pub fn json_lines(out: &mut impl Write, records: &[Box<RawValue>]) -> io::Result<()> {
    for record in records {
        writeln!(out, "{}", record.get())?;
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
                row.received_at.unwrap_or_default(),
                row.id,
                cut(&row.sender, TEXT_COLUMN),
                row.priority.unwrap_or_default(),
                cut(
                    row.attributes.as_ref().map_or("{}", |a| a.get()),
                    ATTRIBUTES_COLUMN
                ),
            )?,
            Err(_) => writeln!(out, "{}", record.get())?,
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
                row.message_id.as_deref().unwrap_or("-"),
                cut(row.reason.as_deref().unwrap_or("-"), TEXT_COLUMN),
                cut(row.queue.as_deref().unwrap_or("-"), TEXT_COLUMN),
                row.received_at.as_deref().unwrap_or("-"),
                row.payload_bytes.unwrap_or_default(),
            )?,
            Err(_) => writeln!(out, "{}", record.get())?,
        }
    }
    out.flush()
}

/// `text` in at most `width` characters, an ellipsis marking a cut.
fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
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
}
