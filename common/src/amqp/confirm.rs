//! Publishing with confirms: each publish matched to the broker's answer for that very message.

use std::{future::Future, sync::Arc};

use lapin::{
    options::BasicPublishOptions, BasicProperties, Channel, Confirmation, PublisherConfirm,
};

/// What the broker said of one publish, once it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// Routed to a queue and taken: the message is the broker's now.
    Acked,
    /// No queue was bound for it (`mandatory`), so the broker returned it.
    Returned,
    /// The broker refused it.
    Nacked,
    /// The channel is not in confirm mode, so nothing can be known.
    NotRequested,
}

impl From<Confirmation> for Confirmed {
    fn from(confirmation: Confirmation) -> Self {
        match confirmation {
            Confirmation::Ack(None) => Self::Acked,
            Confirmation::Ack(Some(_returned)) => Self::Returned,
            Confirmation::Nack(_) => Self::Nacked,
            Confirmation::NotRequested => Self::NotRequested,
        }
    }
}

/// A channel in confirm mode that any number of threads may publish on at once, each publish matched to
/// its own confirm.
///
/// The broker numbers confirms in the order messages reach it. lapin takes a publish's delivery tag and
/// queues its frames under two different locks, so two threads publishing on one bare channel can put
/// their frames on the wire in the opposite order to their tags, and a nack or a return would then be
/// taken for the other message. Here a lock held while a publish is handed to lapin (tag and frames
/// together, before anything waits) keeps wire order and tag order the same.
#[derive(Clone)]
pub struct ConfirmChannel {
    channel: Channel,
    order: Arc<std::sync::Mutex<()>>,
}

impl ConfirmChannel {
    /// Puts `channel` in confirm mode.
    pub async fn select(channel: Channel) -> lapin::Result<Self> {
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            channel,
            order: Arc::default(),
        })
    }

    /// The channel itself, for what is not a publish.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Hands `payload` to lapin as a `mandatory` publish and resolves once its frames are written (or
    /// the channel failed), with the confirm to await.
    pub async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> lapin::Result<PublisherConfirm> {
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let mut publish = std::pin::pin!(self.channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            payload,
            properties,
        ));
        // lapin takes the tag and queues the frames in the first poll, before its first wait.
        let mut first = true;
        std::future::poll_fn(|context| {
            if std::mem::take(&mut first) {
                let _in_order = self.order.lock().unwrap_or_else(|e| e.into_inner());
                publish.as_mut().poll(context)
            } else {
                publish.as_mut().poll(context)
            }
        })
        .await
    }

    /// Publishes `payload` as `mandatory` and waits for the broker's answer for this very message: a
    /// confirm is awaited per publish, never for the channel as a whole, since lapin cannot tell which
    /// message a channel-wide wait was for.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> lapin::Result<Confirmed> {
        let confirm = self
            .send(exchange, routing_key, payload, properties)
            .await?;
        Ok(confirm.await?.into())
    }
}
