//! The `Idempotency-Key` request header: a client's promise that a retry is the same request, which
//! the publisher keeps by deriving the message id from the key instead of drawing a new one.

use actix_web::HttpRequest;
use common::web::Identity;
use common::Message;
use uuid::Uuid;

/// The request header's name.
pub const HEADER: &str = "Idempotency-Key";
const MAX_LEN: usize = 200;

/// An `Idempotency-Key` header that breaks its rule; the text says which.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidKey(String);

/// Namespace of the name-based (v5) ids derived from keys, so they cannot collide with other v5 uses.
const NAMESPACE: Uuid = Uuid::from_u128(0x6d65_7373_6167_652d_7175_6575_652d_6964);

/// A valid `Idempotency-Key`: 1 to 200 visible ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Reads the header, if the request has one. Given more than once it is refused: which of the
    /// values a proxy or the service would take is not for the client to guess.
    pub(crate) fn from_request(request: &HttpRequest) -> Result<Option<Self>, InvalidKey> {
        let mut values = request.headers().get_all(HEADER);
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(InvalidKey(format!("{HEADER} must be given once")));
        }
        Self::parse(value.as_bytes()).map(Some)
    }

    /// Checks a key's rule; clients can use it to know the id a keyed request gets.
    pub fn parse(bytes: &[u8]) -> Result<Self, InvalidKey> {
        let visible_ascii = bytes.iter().all(|b| (0x21..=0x7e).contains(b));
        if bytes.is_empty() || bytes.len() > MAX_LEN || !visible_ascii {
            return Err(InvalidKey(format!(
                "{HEADER} must be 1 to {MAX_LEN} visible ASCII characters"
            )));
        }
        Ok(Self(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// The id of `message`, the same for every request that repeats this key for the same owner: the
    /// identity of the bearer token when tokens are on (nobody can pre-empt another client's key), else
    /// the message's sender. `index` tells apart the elements of a batch sent under one key. Owner and
    /// key are each prefixed with their length in bytes, so no owner, key and index can spell the same
    /// name as another.
    pub fn message_id(
        &self,
        message: &Message,
        index: Option<usize>,
        owner: Option<&Identity>,
    ) -> Uuid {
        let owner = owner.map_or(message.sender().as_str(), Identity::as_str);
        let key = &self.0;
        let name = match index {
            None => format!("{}:{owner}{}:{key}", owner.len(), key.len()),
            Some(index) => format!("{}:{owner}{}:{key}#{index}", owner.len(), key.len()),
        };
        Uuid::new_v5(&NAMESPACE, name.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn message(sender: &str) -> Message {
        serde_json::from_str(&serde_json::json!({ "sender": sender }).to_string()).unwrap()
    }

    fn key(value: &str) -> Result<Option<IdempotencyKey>, InvalidKey> {
        IdempotencyKey::from_request(
            &TestRequest::default()
                .insert_header((HEADER, value))
                .to_http_request(),
        )
    }

    #[test]
    fn the_same_key_and_sender_give_the_same_id_and_another_sender_another() {
        let key = key("order-42").unwrap().unwrap();
        assert_eq!(
            key.message_id(&message("a"), None, None),
            key.message_id(&message("a"), None, None)
        );
        assert_ne!(
            key.message_id(&message("a"), None, None),
            key.message_id(&message("b"), None, None)
        );
        assert_ne!(
            key.message_id(&message("a"), Some(0), None),
            key.message_id(&message("a"), Some(1), None)
        );
    }

    #[test]
    fn a_sender_holding_a_newline_cannot_spell_another_senders_key() {
        let zero = IdempotencyKey::parse(b"0").unwrap();
        let k = IdempotencyKey::parse(b"k").unwrap();
        assert_ne!(
            zero.message_id(&message("a\nk"), None, None),
            k.message_id(&message("a"), Some(0), None)
        );
        assert_ne!(
            zero.message_id(&message("a\nk"), Some(1), None),
            k.message_id(&message("a"), None, None)
        );
    }

    #[test]
    fn with_tokens_the_key_belongs_to_the_token_whatever_the_sender() {
        let tokens = common::web::Tokens::from_vars(&[(
            "PUBLISH_TOKENS".to_owned(),
            "first-token-0123456789,second-token-0123456789".to_owned(),
        )])
        .unwrap();
        let identity = |token: &str| {
            tokens
                .check(
                    Some(&format!("Bearer {token}")),
                    common::web::Scope::Publish,
                )
                .unwrap()
                .unwrap()
        };
        let (first, second) = (
            identity("first-token-0123456789"),
            identity("second-token-0123456789"),
        );
        let key = key("k").unwrap().unwrap();
        assert_eq!(
            key.message_id(&message("a"), None, Some(&first)),
            key.message_id(&message("b"), None, Some(&first))
        );
        assert_ne!(
            key.message_id(&message("a"), None, Some(&first)),
            key.message_id(&message("a"), None, Some(&second))
        );
    }

    #[test]
    fn a_key_of_201_characters_or_with_a_space_is_refused() {
        assert!(key(&"k".repeat(200)).is_ok());
        assert!(key(&"k".repeat(201)).is_err());
        assert!(key("two words").is_err());
    }

    #[test]
    fn no_header_means_no_key() {
        assert!(
            IdempotencyKey::from_request(&TestRequest::default().to_http_request())
                .unwrap()
                .is_none()
        );
    }
}
