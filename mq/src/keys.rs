//! The `Idempotency-Key` of each batch, chosen so that running `mq publish` again on the same input
//! stores nothing twice.
//!
//! The publisher gives the element at index `i` of a batch sent under key `K` the id
//! `UUIDv5(owner, K, i)` (owner: the token's identity, else the message's sender), and the consumer
//! stores an id once. So a batch sent again under the same key with the same messages in the same
//! order gets the same ids, and is not stored again. The key therefore names the input and the batch:
//!
//! - the input: the SHA-256 of its bytes (file or standard input alike), or `--key-prefix`;
//! - the batch: the line its first message starts on, and the hash of its messages' texts in order.
//!
//! Batches are cut the same way from the same input with the same `--batch-size` and `--batch-bytes`,
//! so a re-run sends the same batches under the same keys. Hashing the batch's own texts means that,
//! under a `--key-prefix` whose input changed, a batch that changed gets a new key instead of reusing
//! one for other messages (which the services refuse or dead-letter).

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

/// The key of the batch of `entries` (in order, not empty) cut from `bytes`: `mq-<first line>-<hash>`,
/// at most 70 visible ASCII characters (the header allows 200).
pub fn batch_key(identity: &str, bytes: &[u8], entries: &[Entry]) -> String {
    let mut hash = Sha256::new();
    hash.update(identity.as_bytes());
    hash.update([0]);
    hash.update((entries.len() as u64).to_be_bytes());
    for entry in entries {
        let text = &bytes[entry.span.clone()];
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
        let key = batch_key(&id, bytes, &all);
        assert_eq!(key, batch_key(&input_identity(None, bytes), bytes, &all));
        assert!(key.starts_with("mq-1-") && key.len() <= 70, "{key}");
        assert_ne!(key, batch_key(&id, bytes, &all[..1]));
        assert_ne!(
            key,
            batch_key(&input_identity(Some("x"), bytes), bytes, &all)
        );
        let other = b"{\"sender\":\"a\"}\n{\"sender\":\"c\"}\n";
        assert_ne!(
            batch_key("prefix:x", bytes, &all),
            batch_key("prefix:x", other, &entries(other))
        );
    }
}
