//! `Authorization` on a guarded route: `common::web::Tokens::check` on any header bytes, both as the
//! middleware reads them (through `HeaderValue::to_str`) and as any UTF-8. It must never panic, never
//! admit a request without the configured token of the route's scope, and always admit
//! `Bearer <that token>` however the fuzzer spells the scheme's case and the surrounding spaces.
#![no_main]

use std::sync::LazyLock;

use actix_web::http::header::HeaderValue;
use common::web::{Denied, Scope, Tokens};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const SCOPES: [(Scope, &str); 3] = [
    (Scope::Publish, "publish-token-0123456789"),
    (Scope::Read, "read-token-0123456789abcd"),
    (Scope::Admin, "admin-token-0123456789abc"),
];

static TOKENS: LazyLock<Tokens> = LazyLock::new(|| {
    let vars: Vec<(String, String)> = SCOPES
        .iter()
        .map(|(scope, token)| (scope.variable().to_owned(), (*token).to_owned()))
        .collect();
    Tokens::from_vars(&vars).expect("valid tokens")
});

fn check(authorization: Option<&str>, scope: Scope) {
    assert_eq!(Tokens::default().check(authorization, scope), Ok(None));
    let result = TOKENS.check(authorization, scope);
    let header = authorization.unwrap_or("");
    let own = SCOPES.iter().find(|(s, _)| *s == scope).unwrap().1;
    match &result {
        Ok(Some(identity)) => {
            // Admitted: the header must be `Bearer` and exactly this scope's token, give or take spaces.
            let trimmed = header.trim();
            let (scheme, token) = (
                trimmed.get(..6).unwrap_or(""),
                trimmed.get(6..).unwrap_or(""),
            );
            assert!(scheme.eq_ignore_ascii_case("bearer"), "admitted {header:?}");
            assert_eq!(token.trim(), own, "admitted {header:?}");
            let digest = hex::encode(Sha256::digest(own.as_bytes()));
            assert_eq!(identity.as_str(), format!("token:{}", &digest[..16]));
        }
        Ok(None) => panic!("tokens are configured, yet {header:?} needed none"),
        Err(Denied::WrongScope(named)) => {
            assert_eq!(*named, scope);
            assert!(
                SCOPES
                    .iter()
                    .any(|(s, t)| *s != scope && header.contains(t)),
                "{header:?} was taken for another scope's token"
            );
        }
        Err(Denied::Unknown) => assert!(!header.trim().is_empty()),
        Err(Denied::Missing) => {}
    }
    if let Err(denied) = result {
        let status = denied.to_response().status();
        assert!(status == 401 || status == 403, "{status}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&knob, header)) = data.split_first() else {
        return;
    };
    let scope = SCOPES[usize::from(knob % 3)].0;
    check(None, scope);
    check(Some(&String::from_utf8_lossy(header)), scope);
    let read_by_middleware = HeaderValue::from_bytes(header)
        .ok()
        .and_then(|value| value.to_str().ok().map(str::to_owned));
    if let Some(value) = &read_by_middleware {
        check(Some(value), scope);
    }

    // The fuzzer's bytes as padding and scheme spelling around this scope's real token.
    let own = SCOPES[usize::from(knob % 3)].1;
    let spaces = |n: u8| " ".repeat(usize::from(n % 4));
    let scheme: String = "bearer"
        .chars()
        .zip(header.iter().chain(std::iter::repeat(&0)))
        .map(|(c, b)| {
            if b & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect();
    let lead = header.get(6).copied().unwrap_or(0);
    let gap = 1 + header.get(7).copied().unwrap_or(0) % 3;
    let trail = header.get(8).copied().unwrap_or(0);
    let value = format!(
        "{}{scheme}{}{own}{}",
        spaces(lead),
        " ".repeat(usize::from(gap)),
        spaces(trail)
    );
    assert!(
        matches!(TOKENS.check(Some(&value), scope), Ok(Some(_))),
        "{value:?} refused"
    );
});
