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
    fn a_parameter_is_replaced_not_repeated() {
        let url = Url::parse("http://h/f?after=1-a&limit=1000&wait=0").unwrap();
        let url = with_param(&with_param(&url, "limit", "100"), "wait", "30");
        assert_eq!(url.query(), Some("after=1-a&limit=100&wait=30"));
    }
}
