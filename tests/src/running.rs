//! The publisher and the consumer run inside the test's own process, on port 0, until stopped or dropped.

use std::future::Future;

use consumer::config::Config as ConsumerConfig;
use publisher::config::Config as PublisherConfig;
use tokio::{sync::oneshot, task::JoinHandle};

/// A service running in this process until stopped or dropped.
pub struct RunningService {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningService {
    /// Graceful stop, as on SIGTERM; returns the service's own result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await?
    }
}

impl RunningService {
    /// Waits for the service to stop by itself, without asking it to; returns its own result.
    pub async fn finished(mut self) -> anyhow::Result<()> {
        (&mut self.task).await?
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a publisher in this process.
pub fn spawn_publisher(config: &PublisherConfig) -> RunningService {
    let app = publisher::Application::build(config).expect("publisher builds");
    spawn_service(app.port(), |shutdown| app.run_until_stopped(shutdown))
}

/// Starts a consumer in this process.
pub fn spawn_consumer(config: &ConsumerConfig) -> RunningService {
    let app = consumer::Application::build(config).expect("consumer builds");
    spawn_service(app.port(), |shutdown| app.run_until_stopped(shutdown))
}

fn spawn_service<F, Fut>(port: u16, run: F) -> RunningService
where
    F: FnOnce(futures::future::BoxFuture<'static, ()>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(Box::pin(async {
        let _ = stopped.await;
    })));
    RunningService {
        url: format!("http://127.0.0.1:{port}"),
        stop: Some(stop),
        task,
    }
}
