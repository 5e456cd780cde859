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
        |_, _| {},
    )
    .await
}

/// `GET /message/{id}`: the message as stored, on one line.
pub async fn get(client: &Client, args: &GetArgs) -> anyhow::Result<()> {
    let id = url_segment(&args.id);
    let url = format!("{}/message/{id}", client.base(Service::Consumer));
    let answer = read(client, &url).await?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(String::from_utf8_lossy(&answer.body).trim().as_bytes())?;
    writeln!(stdout)?;
    Ok(())
}

/// `GET /dead-letters`: one page, or every page with `--all`.
pub async fn dead_letters(client: &Client, args: &DeadLettersListArgs) -> anyhow::Result<()> {
    let mut url = Url::parse(&format!("{}/dead-letters", client.base(Service::Consumer)))
        .context("the consumer URL cannot take a path")?;
    url.query_pairs_mut()
        .append_pair("limit", &args.limit.to_string())
        .append_pair("offset", &args.offset.to_string());
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
        match link::next(&answer.headers, &answer.url) {
            Some(next) if args.all => url = next,
            _ => return Ok(()),
        }
    }
}

/// `POST /dead-letters/replay?limit=N`, tried once: a replay that may have happened must not be
/// repeated blindly, as it would put back more than asked.
pub async fn replay(client: &Client, args: &DeadLettersReplayArgs) -> anyhow::Result<()> {
    let request = client
        .request(Service::Consumer, Method::POST, "/dead-letters/replay")
        .query(&[("limit", args.limit)]);
    let answer = client.send(request).await?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(String::from_utf8_lossy(&answer.body).trim().as_bytes())?;
    writeln!(stdout)?;
    Ok(())
}

/// `text` percent-encoded as one path segment, so an id with `/` or `?` cannot reach another route.
fn url_segment(text: &str) -> String {
    let mut url = Url::parse("http://x/").expect("a valid URL");
    url.path_segments_mut().expect("a base URL").push(text);
    url.path().trim_start_matches('/').to_owned()
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
