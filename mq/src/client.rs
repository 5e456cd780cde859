//! The HTTP side of `mq`: where both services are, the bearer token, and what an answer or a failure
//! is. Commands build their requests here and decide themselves whether to retry.

use std::time::Duration;

use anyhow::Context;
use reqwest::{header, Method, RequestBuilder, Url};

use crate::{cli::Global, output::printable, problem::Problem, UsageError};

/// Which service a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Publisher,
    Consumer,
}

/// Both services' base URLs and the token, with one connection pool for every request.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    publisher: String,
    consumer: String,
    token: Option<String>,
}

/// A successful (2xx) answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// The URL that was asked, against which a relative `Link` resolves.
    pub url: Url,
    pub headers: header::HeaderMap,
    pub body: Vec<u8>,
}

/// Why a request did not give a 2xx answer.
#[derive(Debug)]
pub enum Failure {
    /// The service answered with an error: its problem, and how long it asked us to wait.
    Refused {
        problem: Problem,
        retry_after: Option<Duration>,
    },
    /// No answer at all: connection refused or reset, a timeout, a body cut short.
    Unreachable { url: String, reason: String },
}

impl Failure {
    /// Whether trying the same request again may succeed: no answer, the service busy or failing
    /// (5xx, 429), or the body too slow (408). Every other refusal will be the same next time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused { problem, .. } => {
                problem.status >= 500 || problem.status == 429 || problem.status == 408
            }
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Refused { retry_after, .. } => *retry_after,
            Self::Unreachable { .. } => None,
        }
    }

    /// The problem, when the service answered.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Refused { problem, .. } => Some(problem),
            Self::Unreachable { .. } => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { problem, .. } => problem.fmt(f),
            Self::Unreachable { url, reason } => write!(f, "no answer from {url}: {reason}"),
        }
    }
}

impl std::error::Error for Failure {}

impl Client {
    /// A client of the services `global` names, with the token from `--token-file` or `MQ_TOKEN`.
    /// A token or a URL that no request could carry is refused here, at once, as a usage error: no
    /// retry can fix it.
    pub fn new(global: &Global) -> anyhow::Result<Self> {
        let token = match &global.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("Failed to read the token file {}", path.display()))?;
                let source = format!("the token file {} (--token-file)", path.display());
                Some(checked_token(text.trim(), &source)?)
            }
            None => match std::env::var("MQ_TOKEN") {
                Ok(token) => Some(checked_token(&token, "MQ_TOKEN")?),
                Err(_) => None,
            },
        }
        .filter(|token| !token.is_empty());
        for (flag, url) in [
            ("--publisher-url (MQ_PUBLISHER_URL)", &global.publisher_url),
            ("--consumer-url (MQ_CONSUMER_URL)", &global.consumer_url),
        ] {
            checked_url(flag, url)?;
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(global.timeout.into()))
            .user_agent(concat!("mq/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("Failed to build the HTTP client")?;
        Ok(Self {
            http,
            publisher: global.publisher_url.trim_end_matches('/').to_owned(),
            consumer: global.consumer_url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// The base URL of `service`, without a trailing slash.
    pub fn base(&self, service: Service) -> &str {
        match service {
            Service::Publisher => &self.publisher,
            Service::Consumer => &self.consumer,
        }
    }

    /// A request to `path` (which starts with `/`) on `service`, carrying the token if there is one.
    pub fn request(&self, service: Service, method: Method, path: &str) -> RequestBuilder {
        self.request_url(method, &format!("{}{path}", self.base(service)))
    }

    /// A request to a full URL (a followed `Link`), carrying the token if there is one.
    pub fn request_url(&self, method: Method, url: &str) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request` and reads the whole answer: a 2xx is an [`Answer`], anything else a
    /// [`Failure`].
    pub async fn send(&self, request: RequestBuilder) -> Result<Answer, Failure> {
        let (client, request) = request.build_split();
        let request = request.map_err(|e| Failure::Unreachable {
            url: "?".into(),
            reason: e.to_string(),
        })?;
        let url = request.url().clone();
        let unreachable = |error: reqwest::Error| Failure::Unreachable {
            url: url.to_string(),
            reason: describe(&error),
        };
        let response = client.execute(request).await.map_err(unreachable)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(unreachable)?.to_vec();
        if status.is_success() {
            return Ok(Answer {
                status: status.as_u16(),
                url,
                headers,
                body,
            });
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        Err(Failure::Refused {
            problem: Problem::from_body(status.as_u16(), content_type, &body),
            retry_after: headers
                .get(header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        })
    }
}

/// The token as given, if a header can carry it: visible ASCII only, so that a stray newline, NUL or
/// space is named at once instead of failing every request as if the service were down.
fn checked_token(token: &str, source: &str) -> anyhow::Result<String> {
    if token.bytes().all(|b| b.is_ascii_graphic()) {
        return Ok(token.to_owned());
    }
    Err(UsageError(format!(
        "{source} holds a character a bearer token cannot have (a newline, another control \
         character, a space or non-ASCII): it must be the token alone, on one line"
    ))
    .into())
}

/// Refuses a base URL that `mq` cannot talk to: not a URL, or another scheme than `http`.
fn checked_url(flag: &str, url: &str) -> anyhow::Result<()> {
    let shown = printable(url);
    let parsed =
        Url::parse(url).map_err(|e| UsageError(format!("{flag} {shown:?} is not a URL: {e}")))?;
    match parsed.scheme() {
        "http" if parsed.host_str().is_some() => Ok(()),
        "http" => Err(UsageError(format!("{flag} {shown:?} names no host")).into()),
        "https" => Err(UsageError(format!(
            "{flag} {shown:?}: https is not supported, mq has no TLS built in; reach the service \
             through a TLS-terminating proxy or a port-forward (kubectl port-forward) at an \
             http:// URL"
        ))
        .into()),
        other => Err(UsageError(format!(
            "{flag} {shown:?}: the scheme {other:?} is not supported, only http://"
        ))
        .into()),
    }
}

/// What went wrong under a reqwest error: its causes (`tcp connect error: Connection refused`), which
/// its own `Display` leaves out, without its first line, which repeats the URL.
fn describe(error: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        return error.to_string();
    }
    causes.join(": ")
}
