//! How `mq publish` cuts its input into batches: by position, so that whether a message is valid never
//! moves a boundary (see `keys` for why that matters), and each batch's request body.

use crate::input::{Entry, Parsed};

/// One batch: where it starts among the input's elements, and the messages sent from it.
#[derive(Debug, Clone)]
pub struct Batch {
    pub start: usize,
    pub entries: Vec<Entry>,
}

/// Cuts the input into batches by position, whichever of its elements are valid: windows of `size`
/// elements (the first at element 0, the next at `size`, …), each split further where its elements'
/// texts, valid or not, would pass `max_bytes` of body (`[`, the texts, commas, `]`). The valid
/// messages of each piece make a batch (a piece with none is skipped). So the boundaries depend only
/// on the input and the two limits: an element that becomes valid or invalid changes the messages of
/// its own batch, never which batch any other message is in (see `keys`).
pub fn cut(parsed: &Parsed, size: usize, max_bytes: usize) -> Vec<Batch> {
    let mut starts = Vec::new();
    for window in (0..parsed.sizes.len()).step_by(size.max(1)) {
        let end = (window + size).min(parsed.sizes.len());
        let (mut start, mut body) = (window, 2);
        starts.push(window);
        for ordinal in window..end {
            let len = parsed.sizes[ordinal];
            if ordinal > start && body + 1 + len > max_bytes {
                starts.push(ordinal);
                (start, body) = (ordinal, 2);
            }
            body += len + usize::from(ordinal > start);
        }
    }
    let mut batches: Vec<Batch> = Vec::new();
    let mut next = starts.iter().copied().peekable();
    let mut current = None;
    for entry in &parsed.entries {
        while next.peek().is_some_and(|&start| start <= entry.ordinal) {
            current = next.next();
        }
        let start = current.expect("element 0 starts a batch");
        match batches.last_mut() {
            Some(batch) if batch.start == start => batch.entries.push(entry.clone()),
            _ => batches.push(Batch {
                start,
                entries: vec![entry.clone()],
            }),
        }
    }
    batches
}

/// The body of a batch request: the messages' own texts in a JSON array.
pub fn body_of(bytes: &[u8], entries: &[Entry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + entries.iter().map(|e| e.span.len() + 1).sum::<usize>());
    body.push(b'[');
    for (index, entry) in entries.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&bytes[entry.span.clone()]);
    }
    body.push(b']');
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{input, keys};

    fn sizes(batches: &[Batch]) -> Vec<usize> {
        batches.iter().map(|b| b.entries.len()).collect()
    }

    #[test]
    fn batches_keep_to_the_count_and_the_byte_limit() {
        let bytes = b"{\"sender\":\"a\"}\n{\"sender\":\"b\"}\n{\"sender\":\"c\"}\n";
        let parsed = input::parse(bytes, 65536).unwrap();
        assert_eq!(sizes(&cut(&parsed, 2, 1 << 20)), vec![2, 1]);
        // Each text is 14 bytes: `[a,b]` is 31 bytes, `[a]` 16.
        assert_eq!(sizes(&cut(&parsed, 10, 31)), vec![2, 1]);
        assert_eq!(sizes(&cut(&parsed, 10, 30)), vec![1, 1, 1]);
        let batch = &cut(&parsed, 2, 1 << 20)[0];
        assert_eq!(body_of(bytes, &batch.entries).len(), 31);
        assert_eq!(
            body_of(bytes, &batch.entries),
            b"[{\"sender\":\"a\"},{\"sender\":\"b\"}]"
        );
    }

    /// The keys of every batch of `bytes` cut with `max_message_bytes`, by the batch's start.
    fn keys_of(bytes: &[u8], max_message_bytes: usize) -> Vec<(usize, String)> {
        let parsed = input::parse(bytes, max_message_bytes).unwrap();
        let identity = keys::input_identity(None, bytes);
        cut(&parsed, 10, 2000)
            .iter()
            .map(|b| {
                (
                    b.start,
                    keys::batch_key(&identity, bytes, b.start, &b.entries),
                )
            })
            .collect()
    }

    #[test]
    fn a_line_that_changes_validity_changes_the_key_of_its_own_batch_only() {
        // 95 lines; line 42 is 600 bytes: valid under a limit of 1000, invalid under 500. The byte
        // limit splits some windows, so the pieces are cut by bytes as well as by count.
        let lines: Vec<String> = (1..=95)
            .map(|n| match n {
                42 => format!(
                    r#"{{"sender":"big","messageAttributes":{{"pad":"{}"}}}}"#,
                    "x".repeat(560)
                ),
                _ => format!(
                    r#"{{"sender":"s{n}","messageAttributes":{{"pad":"{}"}}}}"#,
                    "p".repeat(n * 3)
                ),
            })
            .collect();
        let bytes = lines.join("\n").into_bytes();
        let (before, after) = (keys_of(&bytes, 500), keys_of(&bytes, 1000));
        let starts = |keys: &[(usize, String)]| keys.iter().map(|k| k.0).collect::<Vec<_>>();
        assert_eq!(starts(&before), starts(&after), "the boundaries moved");
        let changed: Vec<usize> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b.1 != a.1)
            .map(|(b, _)| b.0)
            .collect();
        assert_eq!(changed.len(), 1, "{changed:?}");
        let piece = cut(&input::parse(&bytes, 1000).unwrap(), 10, 2000)
            .into_iter()
            .find(|b| b.start == changed[0])
            .unwrap();
        assert!(piece.entries.iter().any(|e| e.line == 42), "{piece:?}");
        assert!(starts(&after).len() > 10, "no window was split by bytes");
    }
}
