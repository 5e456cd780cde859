//! The feed as server-sent events: `id:` the cursor, `data:` one message as JSON.
//!
//! A task of its own reads the feed and hands each page, already written as events, to the response
//! through a channel of one chunk. The response takes a chunk only as fast as the client reads, so what
//! a stream holds is two pages of at most [`STREAM_PAGE_BYTES`] and actix-web's write buffer, whatever the
//! client does; a client that takes nothing for `FEED_SLOW_READER_SECS` has its stream closed instead of
//! waited for, and resumes with `Last-Event-ID`. An idle stream sends a comment every
//! `FEED_HEARTBEAT_SECS`, so that proxies keep it open.

use std::{convert::Infallible, io::Write as _};

use actix_web::web::{Bytes, Data};
use futures::Stream;
use tokio::{sync::mpsc, time::Instant};

use super::{Follower, Wake};
use crate::{state::AppState, store::FeedRequest};

/// The senders and attributes one page of a stream holds at most (at least one message): a stream
/// holds two such pages, so `FEED_MAX_FOLLOWERS` streams hold a bounded share of the pod's memory.
pub(crate) const STREAM_PAGE_BYTES: usize = 256 * 1024;

/// The body of an event stream following the feed from `request.after`, as `follower`.
pub(crate) fn events(
    state: Data<AppState>,
    follower: Follower,
    request: FeedRequest,
) -> impl Stream<Item = Result<Bytes, Infallible>> {
    let (chunks, taken) = mpsc::channel::<Bytes>(1);
    actix_web::rt::spawn(follow(state, follower, request, chunks));
    futures::stream::unfold(taken, |mut taken| async move {
        taken.recv().await.map(|chunk| (Ok(chunk), taken))
    })
}

/// What sending a chunk came to.
enum Sent {
    Taken,
    /// The client took nothing for `FEED_SLOW_READER_SECS`.
    Slow,
    /// The client is gone.
    Gone,
}

async fn send(chunks: &mpsc::Sender<Bytes>, chunk: Bytes, state: &AppState) -> Sent {
    match tokio::time::timeout(state.feed.slow_reader, chunks.send(chunk)).await {
        Ok(Ok(())) => Sent::Taken,
        Ok(Err(_)) => Sent::Gone,
        Err(_) => {
            state.metrics.feed_slow_readers.inc();
            tracing::info!(
                "closing a feed stream whose reader took nothing in FEED_SLOW_READER_SECS"
            );
            Sent::Slow
        }
    }
}

/// Reads the feed into `chunks` until the client goes, reads too slowly, the database fails (the client
/// reconnects and resumes) or the service shuts down.
async fn follow(
    state: Data<AppState>,
    mut follower: Follower,
    mut request: FeedRequest,
    chunks: mpsc::Sender<Bytes>,
) {
    // How long a browser waits before reconnecting after the stream ends, and where to resume if it
    // ends before a first event: an `id` without data sets a client's last event id (as the SSE
    // specification says) without an event, so a stream that began `after=end` resumes from the end
    // it began at, not from a later one.
    let mut last_sent = Instant::now();
    let start = format!("retry: 1000\nid: {}\n\n", request.after);
    if !matches!(send(&chunks, start.into(), &state).await, Sent::Taken) {
        return;
    }
    loop {
        follower.looked();
        let page = match state.store.feed_page(&request, STREAM_PAGE_BYTES).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "feed stream read failed; closing it for the client to resume");
                let _ = send(
                    &chunks,
                    Bytes::from_static(b": the database is unavailable; resume shortly\n\n"),
                    &state,
                )
                .await;
                return;
            }
        };
        if !page.messages.is_empty() {
            let mut chunk = Vec::with_capacity(4096);
            for (cursor, message) in &page.messages {
                let _ = write!(chunk, "id: {cursor}\ndata: ");
                serde_json::to_writer(&mut chunk, message).expect("a stored message serialises");
                chunk.extend_from_slice(b"\n\n");
            }
            request.after = page.next;
            if !matches!(send(&chunks, chunk.into(), &state).await, Sent::Taken) {
                return;
            }
            last_sent = Instant::now();
            // More may be waiting behind a full page: look again at once.
            continue;
        }
        let wake = tokio::select! {
            wake = follower.wait(last_sent + state.feed.heartbeat, &state.feed.closing) => wake,
            () = chunks.closed() => return,
        };
        match wake {
            Wake::Look => {}
            Wake::Closing => return,
            Wake::Deadline => {
                if !matches!(
                    send(&chunks, Bytes::from_static(b": heartbeat\n\n"), &state).await,
                    Sent::Taken
                ) {
                    return;
                }
                last_sent = Instant::now();
            }
        }
    }
}
