//! The `Link: <…>; rel="next"` header both paged routes send: where the next page is, resolved
//! against the URL that was asked (the services send a path alone unless `PUBLIC_BASE_URL` is set).

use reqwest::{header::HeaderMap, Url};

/// The `next` link of an answer to `asked`, as a full URL; `None` when there is none or it is not a
/// URL.
pub fn next(headers: &HeaderMap, asked: &Url) -> Option<Url> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().split_once('>')?;
            let target = target.trim().strip_prefix('<')?;
            let is_next = params.split(';').any(|param| {
                let param = param.trim().replace(' ', "");
                param.eq_ignore_ascii_case("rel=\"next\"") || param.eq_ignore_ascii_case("rel=next")
            });
            is_next.then(|| asked.join(target).ok())?
        })
}

/// The `next` link of an answer to `asked`, if it stays at the origin (scheme, host and port) of
/// `base`, the base URL `mq` was given. The token goes with every request, so a link elsewhere (a
/// wrong `PUBLIC_BASE_URL`, a hostile proxy) is an error, never followed.
pub fn next_within(headers: &HeaderMap, asked: &Url, base: &Url) -> anyhow::Result<Option<Url>> {
    match next(headers, asked) {
        Some(url) if url.origin() != base.origin() => anyhow::bail!(
            "the service's Link rel=\"next\" points at {}, outside {}, the base URL mq was \
             given; not following it, as the token would go there",
            crate::output::printable(url.as_str()),
            crate::output::printable(base.as_str()),
        ),
        other => Ok(other),
    }
}

/// `url` with the query parameter `name` set to `value` (replacing any it had).
pub fn with_param(url: &Url, name: &str, value: &str) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(key, _)| key != name)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let mut url = url.clone();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(link: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::LINK, link.parse().unwrap());
        headers
    }

    #[test]
    fn a_relative_next_link_resolves_against_the_url_asked() {
        let asked = Url::parse("http://h:8081/message/feed?limit=5").unwrap();
        let next = next(
            &headers("</message/feed?after=12-ab&limit=5>; rel=\"next\""),
            &asked,
        );
        assert_eq!(
            next.unwrap().as_str(),
            "http://h:8081/message/feed?after=12-ab&limit=5"
        );
        let absolute = headers("<https://api.example/message?before=x>; rel=\"next\"");
        assert_eq!(
            super::next(&absolute, &asked).unwrap().as_str(),
            "https://api.example/message?before=x"
        );
        assert!(super::next(&headers("</x>; rel=\"prev\""), &asked).is_none());
    }

    #[test]
    fn a_next_link_to_another_origin_is_refused() {
        let base = Url::parse("http://h:8081").unwrap();
        let asked = Url::parse("http://h:8081/message/feed").unwrap();
        let within = |link: &str| next_within(&headers(link), &asked, &base);
        assert!(within("</message/feed?after=1>; rel=\"next\"")
            .unwrap()
            .is_some());
        assert!(within("<http://h:8081/x>; rel=\"next\"").unwrap().is_some());
        for elsewhere in [
            "<http://evil:8081/x>; rel=\"next\"",
            "<http://h:8082/x>; rel=\"next\"",
            "<https://h:8081/x>; rel=\"next\"",
            "<//evil/x>; rel=\"next\"",
        ] {
            assert!(within(elsewhere).is_err(), "{elsewhere}");
        }
    }

    #[test]
    fn a_parameter_is_replaced_not_repeated() {
        let url = Url::parse("http://h/f?after=1-a&limit=1000&wait=0").unwrap();
        let url = with_param(&with_param(&url, "limit", "100"), "wait", "30");
        assert_eq!(url.query(), Some("after=1-a&limit=100&wait=30"));
    }
}
