//! `mq get` and `mq dead-letters`: one-shot reads and the replay, each printing what the consumer
//! answered.

use std::io::Write;

use anyhow::Context;
use reqwest::{Method, Url};
use serde_json::value::RawValue;

use crate::{
    cli::{DeadLettersListArgs, DeadLettersReplayArgs, GetArgs, Output},
    client::{Answer, Client, Failure, Service},
    link, output,
    retry::retrying,
};

/// Tries of a read before it is given up: enough to ride out a brief restart.
const READ_TRIES: u32 = 4;

/// A read, retried while the failure may pass.
async fn read(client: &Client, url: &str) -> Result<Answer, Failure> {
    retrying(
        Some(READ_TRIES),
        || client.send(client.request_url(Method::GET, url)),
        |_, _| true,
    )
    .await
}

/// `GET /message/{id}`: the message as stored, on one line.
pub async fn get(client: &Client, args: &GetArgs) -> anyhow::Result<()> {
    let id = url_segment(&args.id);
    let url = format!("{}/message/{id}", client.base(Service::Consumer));
    let answer = read(client, &url).await?;
    print_body(&answer.body)
}

/// `GET /dead-letters`: one page, or every page with `--all`.
pub async fn dead_letters(client: &Client, args: &DeadLettersListArgs) -> anyhow::Result<()> {
    let mut url = Url::parse(&format!("{}/dead-letters", client.base(Service::Consumer)))
        .context("the consumer URL cannot take a path")?;
    url.query_pairs_mut()
        .append_pair("limit", &args.limit.to_string())
        .append_pair("offset", &args.offset.to_string());
    let base = Url::parse(client.base(Service::Consumer)).context("the consumer URL")?;
    let mut stdout = std::io::stdout().lock();
    let mut first = true;
    loop {
        let answer = read(client, url.as_str()).await?;
        let letters: Vec<Box<RawValue>> = serde_json::from_slice(&answer.body)
            .context("GET /dead-letters answered something that is not a JSON array")?;
        match args.output {
            Output::Json => output::json_lines(&mut stdout, &letters)?,
            Output::Table => output::dead_letter_table(&mut stdout, &letters, first)?,
        }
        first = false;
        if !args.all {
            return Ok(());
        }
        match link::next_within(&answer.headers, &answer.url, &base)? {
            Some(next) => url = next,
            None => return Ok(()),
        }
    }
}

/// `POST /dead-letters/replay?limit=N`, tried once: a replay that may have happened must not be
/// repeated blindly, as it would put back more than asked. So no answer in time is said to be that:
/// an unknown outcome.
pub async fn replay(client: &Client, args: &DeadLettersReplayArgs) -> anyhow::Result<()> {
    let request = client
        .request(Service::Consumer, Method::POST, "/dead-letters/replay")
        .query(&[("limit", args.limit)]);
    let answer = match client.send(request).await {
        Ok(answer) => answer,
        Err(failure @ Failure::Unreachable { .. }) => {
            return Err(anyhow::Error::new(failure).context(
                "the replay's outcome is unknown: it may or may not have happened; look with \
                 `mq dead-letters list` before replaying again",
            ))
        }
        Err(failure) => return Err(failure.into()),
    };
    print_body(&answer.body)
}

/// `text` percent-encoded as one path segment, so an id with `/` or `?` cannot reach another route.
fn url_segment(text: &str) -> String {
    let mut url = Url::parse("http://x/").expect("a valid URL");
    url.path_segments_mut().expect("a base URL").push(text);
    url.path().trim_start_matches('/').to_owned()
}

/// A one-shot answer's body on standard output, as one line of JSON.
fn print_body(body: &[u8]) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{}", output::json_body(body))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_id_is_one_path_segment_whatever_it_holds() {
        assert_eq!(super::url_segment("0193-ab"), "0193-ab");
        assert_eq!(
            super::url_segment("../dead-letters?x"),
            "..%2Fdead-letters%3Fx"
        );
    }
}
