//! Bearer tokens with scopes, the same for both services: `PUBLISH_TOKENS` to publish, `READ_TOKENS` to
//! read messages, `ADMIN_TOKENS` for dead-letter operations. Each is a comma-separated list, given in the
//! variable itself or in a file named by `<NAME>_FILE` (as a mounted Secret gives it). With none set,
//! every route is open, as before; with any set, every route that has a scope needs a token of it.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time, so neither memory dumps nor
//! timing give them away. A token's identity, what idempotency keys are scoped by, is a prefix of its
//! digest: stable, and safe to log.

use std::{fmt, sync::Arc};

use actix_web::{
    body::BoxBody,
    dev::{ServiceRequest, ServiceResponse},
    http::{header, StatusCode},
    middleware::Next,
    HttpMessage, HttpResponse,
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::problem::{kinds, Problem};

/// The shortest token accepted: shorter ones could be guessed.
pub const MIN_TOKEN_CHARS: usize = 16;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Publish,
    Read,
    Admin,
}

impl Scope {
    pub(super) const ALL: [Scope; 3] = [Scope::Publish, Scope::Read, Scope::Admin];

    /// The variable that lists this scope's tokens.
    pub fn variable(self) -> &'static str {
        match self {
            Self::Publish => "PUBLISH_TOKENS",
            Self::Read => "READ_TOKENS",
            Self::Admin => "ADMIN_TOKENS",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

/// Who presented a token: `token:` and the first 16 hex digits of its SHA-256. Put in the request's
/// extensions by `admit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity(String);

impl Identity {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

struct Token {
    digest: [u8; 32],
    scope: Scope,
}

/// The configured tokens. `Debug` shows how many there are of each scope, never the tokens.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<Token>>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |scope| self.0.iter().filter(|t| t.scope == scope).count();
        write!(
            f,
            "Tokens {{ publish: {}, read: {}, admin: {} }}",
            count(Scope::Publish),
            count(Scope::Read),
            count(Scope::Admin)
        )
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A bearer token that is not configured.
    Unknown,
    /// A configured token of another scope.
    WrongScope(Scope),
}

impl Denied {
    /// `401` with `WWW-Authenticate: Bearer` for a missing or unknown token, `403` for a token of
    /// another scope, as problem bodies.
    pub fn to_response(self) -> HttpResponse {
        match self {
            Self::Missing | Self::Unknown => {
                let (detail, challenge) = if self == Self::Missing {
                    (
                        "this route needs a bearer token: Authorization: Bearer <token>",
                        r#"Bearer realm="message-queue""#,
                    )
                } else {
                    (
                        "the bearer token is not valid",
                        r#"Bearer realm="message-queue", error="invalid_token""#,
                    )
                };
                let mut response =
                    Problem::new(StatusCode::UNAUTHORIZED, kinds::UNAUTHORIZED, detail)
                        .to_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static(challenge),
                );
                response
            }
            Self::WrongScope(scope) => Problem::new(
                StatusCode::FORBIDDEN,
                kinds::FORBIDDEN,
                format!(
                    "the bearer token does not allow this route: it needs a {} token ({})",
                    scope.word(),
                    scope.variable()
                ),
            )
            .to_response(),
        }
    }
}

impl Tokens {
    /// Reads every scope's tokens from `vars` (name, value): `<NAME>` or the file `<NAME>_FILE` names,
    /// not both. An unreadable file or a token shorter than `MIN_TOKEN_CHARS` is an error that names
    /// the variable.
    pub fn from_vars(vars: &[(String, String)]) -> anyhow::Result<Self> {
        let get = |name: &str| {
            vars.iter()
                .rev()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let mut tokens = Vec::new();
        for scope in Scope::ALL {
            let variable = scope.variable();
            let file_variable = format!("{variable}_FILE");
            let listed = match (get(variable), get(&file_variable)) {
                (Some(_), Some(_)) => {
                    anyhow::bail!("set {variable} or {file_variable}, not both")
                }
                (Some(value), None) => value,
                (None, Some(path)) => std::fs::read_to_string(&path).map_err(|error| {
                    anyhow::anyhow!("{file_variable}: cannot read {path}: {error}")
                })?,
                (None, None) => continue,
            };
            for token in listed
                .split([',', '\n'])
                .map(str::trim)
                .filter(|t| !t.is_empty())
            {
                anyhow::ensure!(
                    token.chars().count() >= MIN_TOKEN_CHARS
                        && token.chars().all(|c| c.is_ascii_graphic()),
                    "{variable}: every token must be at least {MIN_TOKEN_CHARS} visible ASCII characters"
                );
                tokens.push(Token {
                    digest: Sha256::digest(token.as_bytes()).into(),
                    scope,
                });
            }
        }
        Ok(Self(Arc::new(tokens)))
    }

    /// Whether any token is configured: if not, every route is open.
    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether at least one token of `scope` is configured.
    pub fn has(&self, scope: Scope) -> bool {
        self.0.iter().any(|token| token.scope == scope)
    }

    /// Checks an `Authorization` header value for `scope`. `Ok(None)` when no token is configured.
    pub fn check(
        &self,
        authorization: Option<&str>,
        scope: Scope,
    ) -> Result<Option<Identity>, Denied> {
        if !self.enabled() {
            return Ok(None);
        }
        let presented = authorization
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|token| !token.is_empty())
            .ok_or(Denied::Missing)?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Every configured token is compared, whatever matched first, in constant time each.
        let mut allowed = false;
        let mut known = None;
        for token in self.0.iter() {
            let equal: bool = token.digest.ct_eq(&digest).into();
            allowed |= equal && token.scope == scope;
            if equal {
                known = Some(token.scope);
            }
        }
        match (allowed, known) {
            (true, _) => Ok(Some(Identity(format!(
                "token:{}",
                &hex::encode(digest)[..16]
            )))),
            (false, Some(_)) => Err(Denied::WrongScope(scope)),
            (false, None) => Err(Denied::Unknown),
        }
    }
}

/// Who may use a route: chosen for every route where it is built (see [`super::Doors`]), so that
/// no route exists without a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Probes, metrics and documents: anyone.
    Open,
    /// A token of this scope, when tokens are configured.
    Needs(Scope),
}

/// Middleware body for one route, run after routing: whatever spelling of the path the router matched
/// (percent-encoded, dot segments, `;` parameters), the request is judged by the route that serves it.
/// Records the route's pattern for the request metrics, refuses a request without a token of the
/// route's scope, and puts the token's [`Identity`] in the request's extensions otherwise.
pub async fn admit(
    tokens: Tokens,
    access: Access,
    pattern: &'static str,
    request: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    super::metrics::record_route(&request, pattern);
    if let Access::Needs(scope) = access {
        let mut given = request.headers().get_all(header::AUTHORIZATION);
        let authorization = given.next().and_then(|value| value.to_str().ok());
        if tokens.enabled() && given.next().is_some() {
            // Which of several tokens counts is not for a client to choose.
            return Ok(request.into_response(Denied::Unknown.to_response()));
        }
        match tokens.check(authorization, scope) {
            Ok(Some(identity)) => {
                request.extensions_mut().insert(identity);
            }
            Ok(None) => {}
            Err(denied) => return Ok(request.into_response(denied.to_response())),
        }
    }
    next.call(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLISHER: &str = "publish-token-0123456789";
    const READER: &str = "read-token-0123456789ab";

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn tokens() -> Tokens {
        Tokens::from_vars(&vars(&[
            (
                "PUBLISH_TOKENS",
                &format!("{PUBLISHER}, another-publish-token-xyz"),
            ),
            ("READ_TOKENS", READER),
        ]))
        .expect("valid tokens")
    }

    #[test]
    fn without_tokens_everything_is_open() {
        let open = Tokens::from_vars(&[]).unwrap();
        assert!(!open.enabled());
        assert_eq!(open.check(None, Scope::Admin), Ok(None));
    }

    #[test]
    fn a_token_of_the_scope_passes_with_a_stable_identity() {
        let tokens = tokens();
        let first = tokens
            .check(Some(&format!("Bearer {PUBLISHER}")), Scope::Publish)
            .unwrap()
            .expect("an identity");
        let again = tokens
            .check(Some(&format!("bearer  {PUBLISHER} ")), Scope::Publish)
            .unwrap()
            .unwrap();
        assert_eq!(first, again);
        assert!(first.as_str().starts_with("token:") && !first.as_str().contains(PUBLISHER));
        let other = tokens
            .check(Some("Bearer another-publish-token-xyz"), Scope::Publish)
            .unwrap()
            .unwrap();
        assert_ne!(first, other);
    }

    #[test]
    fn missing_unknown_and_wrong_scope_tokens_are_told_apart() {
        let tokens = tokens();
        assert_eq!(tokens.check(None, Scope::Read), Err(Denied::Missing));
        assert_eq!(
            tokens.check(Some("Basic abc"), Scope::Read),
            Err(Denied::Missing)
        );
        assert_eq!(
            tokens.check(Some("Bearer "), Scope::Read),
            Err(Denied::Missing)
        );
        assert_eq!(
            tokens.check(Some("Bearer not-a-configured-token"), Scope::Read),
            Err(Denied::Unknown)
        );
        assert_eq!(
            tokens.check(Some(&format!("Bearer {PUBLISHER}")), Scope::Read),
            Err(Denied::WrongScope(Scope::Read))
        );
        assert_eq!(
            tokens.check(Some(&format!("Bearer {READER}")), Scope::Admin),
            Err(Denied::WrongScope(Scope::Admin))
        );
    }

    #[test]
    fn tokens_come_from_a_file_and_bad_settings_name_their_variable() {
        let path = std::env::temp_dir().join(format!("tokens-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, format!("{READER}\n\n")).unwrap();
        let from_file =
            Tokens::from_vars(&vars(&[("READ_TOKENS_FILE", path.to_str().unwrap())])).unwrap();
        assert!(from_file
            .check(Some(&format!("Bearer {READER}")), Scope::Read)
            .is_ok());
        std::fs::remove_file(&path).unwrap();
        for (bad, named) in [
            (vars(&[("ADMIN_TOKENS", "short")]), "ADMIN_TOKENS"),
            (
                vars(&[("READ_TOKENS", READER), ("READ_TOKENS_FILE", "/x")]),
                "READ_TOKENS_FILE",
            ),
            (
                vars(&[("PUBLISH_TOKENS_FILE", "/no/such/file")]),
                "PUBLISH_TOKENS_FILE",
            ),
        ] {
            let error = Tokens::from_vars(&bad).unwrap_err().to_string();
            assert!(error.contains(named), "{error}");
        }
    }

    #[test]
    fn debug_shows_counts_never_tokens() {
        let shown = format!("{:?}", tokens());
        assert_eq!(shown, "Tokens { publish: 2, read: 1, admin: 0 }");
        assert!(!shown.contains(PUBLISHER));
    }

    #[test]
    fn refusals_are_problems_with_the_right_status_and_challenge() {
        let missing = Denied::Missing.to_response();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert!(missing
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .expect("a challenge")
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let forbidden = Denied::WrongScope(Scope::Admin).to_response();
        assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
        assert!(forbidden.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
