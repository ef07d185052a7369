//! What the event log's consumers (the audit log, the reports, the outbox)
//! share: each is one task fed by requests, with an error that is a
//! sentence.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use storage::StorageError;

/// A consumer's failure, as a sentence.
#[derive(Debug)]
pub struct ConsumerError(pub String);

impl std::fmt::Display for ConsumerError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for ConsumerError {}

impl From<StorageError> for ConsumerError {
    fn from(error: StorageError) -> Self {
        ConsumerError(error.to_string())
    }
}

/// A consumer's task and the way to ask it things.
pub struct TaskHandle<R> {
    pub requests: mpsc::Sender<R>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl<R> TaskHandle<R> {
    pub fn new(requests: mpsc::Sender<R>, task: JoinHandle<()>) -> TaskHandle<R> {
        TaskHandle { requests, task: std::sync::Mutex::new(Some(task)) }
    }

    /// Sends the stop request `stop` makes, waits for its answer, then for
    /// the task to end (at once if it had already).
    pub async fn stop(&self, stop: impl FnOnce(oneshot::Sender<()>) -> R) {
        let (reply, done) = oneshot::channel();
        if self.requests.send(stop(reply)).await.is_ok() {
            let _ = done.await;
        }
        let task = self.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}
