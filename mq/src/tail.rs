//! `mq tail`: follows `GET /message/feed` with long polls, from the end (or the start) for as long as
//! it runs, printing each message once. The feed's cursor only moves forward and is kept across
//! failures, so a restart of the consumer, the database or the network costs a wait, never a message.

use std::time::Duration;

use anyhow::Context;
use reqwest::{Method, Url};
use serde_json::value::RawValue;

use crate::{
    cli::{Output, TailArgs},
    client::{Answer, Client, Failure, Service},
    link, output,
    retry::retrying,
};

/// Time a long poll gets beyond its `wait` before it counts as lost.
const POLL_GRACE: Duration = Duration::from_secs(15);

/// Follows the feed until interrupted or refused for good (a bad token, say).
pub async fn run(client: &Client, args: &TailArgs, quiet: bool) -> anyhow::Result<()> {
    let mut first = Url::parse(&format!("{}/message/feed", client.base(Service::Consumer)))
        .context("the consumer URL cannot take a path")?;
    if let Some(sender) = &args.sender {
        first.query_pairs_mut().append_pair("sender", sender);
    }
    let base = Url::parse(client.base(Service::Consumer)).context("the consumer URL")?;
    let tail = Tail {
        client,
        quiet,
        base,
    };
    let start = if args.from_start {
        first
    } else {
        // One request: the feed resolves `end` to a position after every message stored now.
        tail.page(&link::with_param(&first, "after", "end"), POLL_GRACE)
            .await?
            .1
    };
    let mut url = link::with_param(
        &link::with_param(&start, "limit", &args.limit.to_string()),
        "wait",
        &args.wait.to_string(),
    );
    let timeout = Duration::from_secs(args.wait.into()) + POLL_GRACE;
    let mut stdout = std::io::stdout().lock();
    if args.output == Output::Table {
        output::message_header(&mut stdout)?;
    }
    loop {
        let (messages, next) = tail.page(&url, timeout).await?;
        match args.output {
            Output::Json => output::json_lines(&mut stdout, &messages)?,
            Output::Table => output::message_rows(&mut stdout, &messages)?,
        }
        url = next;
    }
}

struct Tail<'c> {
    client: &'c Client,
    quiet: bool,
    /// Where the `next` links must stay: the consumer's base URL.
    base: Url,
}

impl Tail<'_> {
    /// One page at `url` and the link to the next, retried for as long as the failure may pass.
    async fn page(
        &self,
        url: &Url,
        timeout: Duration,
    ) -> anyhow::Result<(Vec<Box<RawValue>>, Url)> {
        let mut outage = false;
        let attempt = || {
            let request = self
                .client
                .request_url(Method::GET, url.as_str())
                .header("Accept", "application/json")
                .timeout(timeout);
            self.client.send(request)
        };
        let on_retry = |failure: &Failure, _: Duration| {
            if !self.quiet && !outage {
                let failure = crate::output::printable(&failure.to_string());
                eprintln!("mq tail: {failure}; retrying until it answers");
            }
            outage = true;
            true
        };
        let answer: Answer = retrying(None, attempt, on_retry).await?;
        if outage && !self.quiet {
            eprintln!("mq tail: the consumer answers again; following on");
        }
        let messages: Vec<Box<RawValue>> = serde_json::from_slice(&answer.body)
            .context("the feed answered something that is not a JSON array")?;
        let next = link::next_within(&answer.headers, &answer.url, &self.base)?
            .context("the feed answered without a Link rel=\"next\" header")?;
        Ok((messages, next))
    }
}
