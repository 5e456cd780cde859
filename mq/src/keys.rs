//! The `Idempotency-Key` of each batch, chosen so that running `mq publish` again on the same input
//! stores nothing twice.
//!
//! The publisher gives the element at index `i` of a batch sent under key `K` the id
//! `UUIDv5(owner, K, i)` (owner: the token's identity, else the message's sender), and the consumer
//! stores an id once. So a batch sent again under the same key with the same messages in the same
//! order gets the same ids, and is not stored again. The key therefore names the input and the batch:
//!
//! - the input: the SHA-256 of its bytes (file or standard input alike), or `--key-prefix`;
//! - the batch: where it starts among the input's elements (see `batches::cut`, which cuts by
//!   position, valid or not), and each message sent from it: its ordinal, line and text.
//!
//! Batches are cut the same way from the same input with the same `--batch-size` and `--batch-bytes`,
//! whichever of its elements are valid, so a re-run sends the same batches under the same keys. A
//! batch whose set of messages changed (one became valid or invalid, or, under a `--key-prefix`, its
//! input changed) gets a new key instead of reusing one for other messages (which the services refuse
//! or dead-letter), and no other batch's key moves.

use sha2::{Digest, Sha256};

use crate::input::Entry;

/// Characters of the batch hash kept in a key: 192 bits, far past any chance of collision.
const HASH_CHARS: usize = 48;

/// What names one input: `--key-prefix` as given, else `sha256:<hex>` of its bytes.
pub fn input_identity(prefix: Option<&str>, bytes: &[u8]) -> String {
    match prefix {
        Some(prefix) => format!("prefix:{prefix}"),
        None => format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
    }
}

/// The key of the batch that starts at the element `start` (its ordinal) and sends `entries` (in
/// order, not empty) cut from `bytes`: `mq-<first line sent>-<hash>`, at most 70 visible ASCII
/// characters (the header allows 200).
pub fn batch_key(identity: &str, bytes: &[u8], start: usize, entries: &[Entry]) -> String {
    let mut hash = Sha256::new();
    hash.update(identity.as_bytes());
    hash.update([0]);
    hash.update((start as u64).to_be_bytes());
    hash.update((entries.len() as u64).to_be_bytes());
    for entry in entries {
        let text = &bytes[entry.span.clone()];
        hash.update((entry.ordinal as u64).to_be_bytes());
        hash.update((entry.line as u64).to_be_bytes());
        hash.update((text.len() as u64).to_be_bytes());
        hash.update(text);
    }
    let first_line = entries.first().map_or(0, |entry| entry.line);
    let digest = hex::encode(hash.finalize());
    format!("mq-{first_line}-{}", &digest[..HASH_CHARS])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(bytes: &[u8]) -> Vec<Entry> {
        crate::input::parse(bytes, 65536).unwrap().entries
    }

    #[test]
    fn the_same_batch_of_the_same_input_gets_the_same_key_and_any_change_another() {
        let bytes = b"{\"sender\":\"a\"}\n{\"sender\":\"b\"}\n";
        let id = input_identity(None, bytes);
        let all = entries(bytes);
        let key = batch_key(&id, bytes, 0, &all);
        assert_eq!(key, batch_key(&input_identity(None, bytes), bytes, 0, &all));
        assert!(key.starts_with("mq-1-") && key.len() <= 70, "{key}");
        assert_ne!(key, batch_key(&id, bytes, 0, &all[..1]));
        assert_ne!(key, batch_key(&id, bytes, 1, &all));
        assert_ne!(
            key,
            batch_key(&input_identity(Some("x"), bytes), bytes, 0, &all)
        );
        let other = b"{\"sender\":\"a\"}\n{\"sender\":\"c\"}\n";
        assert_ne!(
            batch_key("prefix:x", bytes, 0, &all),
            batch_key("prefix:x", other, 0, &entries(other))
        );
    }
}
