//! The reports' consumer of the conversation event log (PROTOCOL §5,
//! docs/reports.md): one task owns the projection (`reports::Projection`)
//! and the `reports` cursor. It follows the log's head, applies each new
//! event, and commits the rows it changed (rollup buckets, conversations
//! being followed) with the cursor in one batch, so what is stored is
//! always the projection of the log up to the cursor. A report is answered
//! by the task after it caught up with everything committed before the
//! request (a client reads its own writes), from memory.
//!
//! Rows: `b` + the bucket's key as JSON → the bucket (MessagePack);
//! `c` + a conversation id → what the reports follow of it (MessagePack),
//! deleted when it closes; `v` → the projection's version
//! (`reports::projection::VERSION`, decimal). `switchboard reports rebuild`
//! deletes them all and projects the whole log again, and so does the
//! start when the stored projection is of another version (one counting
//! less than this build does).

use std::sync::Arc;
use std::time::Duration;

use reports::projection::{Changes, Conversation, ReportSettings, VERSION};
use reports::rollup::{Bucket, BucketKey};
use reports::{Projection, Report};
use storage::{Op, Store};
use tokio::sync::{mpsc, oneshot, watch};

/// The consumer's name in the store's cursors.
pub const CONSUMER: &str = "reports";
/// Events read and committed at a time.
const PAGE: usize = 4096;
/// How often new events are taken in (when there are any).
const TAKE_IN_EVERY: Duration = Duration::from_millis(500);
/// After a failure (the store cannot write), wait this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A failure of this consumer, as a sentence.
pub use crate::consumer::ConsumerError as ReportsError;

fn bucket_row(key: &BucketKey) -> String {
    format!("b{}", serde_json::to_string(key).unwrap_or_default())
}

fn encode<T: serde::Serialize>(value: &T) -> Option<Vec<u8>> {
    rmp_serde::to_vec_named(value).ok()
}

/// The rows a projection's changes are stored as.
fn rows_of(changes: Changes) -> Vec<(String, Option<Vec<u8>>)> {
    let buckets = changes.buckets.into_iter().map(|(key, bucket)| (bucket_row(&key), encode(&bucket)));
    let conversations =
        changes.conversations.into_iter().map(|(id, now)| (format!("c{id}"), now.as_ref().and_then(encode)));
    buckets.chain(conversations).collect()
}

struct Consumer {
    store: Arc<Store>,
    settings: ReportSettings,
    projection: Projection,
    cursor: u64,
    /// The projection in memory went past what is stored (a commit
    /// failed): read it back before going on.
    stale: bool,
}

/// The row holding the stored projection's version.
const VERSION_ROW: &str = "v";

impl Consumer {
    /// The stored projection; one of another version is deleted first, to
    /// be projected again from the start of the log.
    async fn open(store: Arc<Store>, settings: ReportSettings) -> Result<Consumer, ReportsError> {
        let (mut projection, mut cursor, version) = load(&store, settings.clone()).await?;
        if version != Some(VERSION) {
            if cursor > 0 {
                tracing::info!(
                    stored = ?version,
                    now = VERSION,
                    "the stored reports were counted by another version; projecting the event log again"
                );
            }
            reset(&store).await?;
            (projection, cursor, _) = load(&store, settings.clone()).await?;
        }
        Ok(Consumer { store, settings, projection, cursor, stale: false })
    }

    /// Applies every event after the cursor and commits what changed with
    /// the cursor. `hurry`: read as soon as the tables can (a request
    /// waits); otherwise in the materializer's own time.
    async fn catch_up(&mut self, hurry: bool) -> Result<usize, ReportsError> {
        if self.stale {
            let (projection, cursor, _) = load(&self.store, self.settings.clone()).await?;
            self.projection = projection;
            self.cursor = cursor;
            self.stale = false;
        }
        let mut applied = 0;
        loop {
            let base = self.store.reader();
            let reader = if hurry { base.caught_up().await? } else { base.settled().await? };
            let events = reader.events_after(self.cursor, PAGE)?;
            let Some(&(last, _)) = events.last() else { break };
            for (_, event) in &events {
                self.projection.apply(event);
            }
            let rows = rows_of(self.projection.take_changes());
            let written = rows.len();
            let committed = self
                .store
                .commit(vec![Op::PutReportRows(rows), Op::SetCursor { consumer: CONSUMER.to_owned(), seq: last }])
                .await;
            if let Err(error) = committed {
                self.stale = true;
                return Err(error.into());
            }
            self.cursor = last;
            applied += events.len();
            metrics::counter!(crate::metrics::REPORT_EVENTS_TOTAL).increment(events.len() as u64);
            metrics::counter!(crate::metrics::REPORT_ROWS_WRITTEN_TOTAL).increment(written as u64);
            if events.len() < PAGE {
                break;
            }
        }
        Ok(applied)
    }
}

/// The stored projection, its cursor and its version.
async fn load(store: &Store, settings: ReportSettings) -> Result<(Projection, u64, Option<u32>), ReportsError> {
    let reader = store.reader().caught_up().await?;
    let mut projection = Projection::new(settings);
    let mut unreadable = 0usize;
    let mut version = None;
    reader.report_rows(|key, value| {
        if key == VERSION_ROW {
            version = std::str::from_utf8(value).ok().and_then(|text| text.parse().ok());
        } else if let Some(key) = key.strip_prefix('b') {
            match (serde_json::from_str::<BucketKey>(key), rmp_serde::from_slice::<Bucket>(value)) {
                (Ok(key), Ok(bucket)) => projection.rollups.load(key, bucket),
                _ => unreadable += 1,
            }
        } else if let Some(id) = key.strip_prefix('c') {
            match rmp_serde::from_slice::<Conversation>(value) {
                Ok(conversation) => projection.load_conversation(id.to_owned(), conversation),
                Err(_) => unreadable += 1,
            }
        }
        Ok(())
    })?;
    if unreadable > 0 {
        tracing::error!(rows = unreadable, "report rows cannot be read; run `switchboard reports rebuild`");
    }
    Ok((projection, reader.cursor(CONSUMER)?, version))
}

/// Deletes the stored projection and sets the cursor to the log's start,
/// under this build's version.
async fn reset(store: &Store) -> Result<(), ReportsError> {
    let reader = store.reader().caught_up().await?;
    let mut stale = Vec::new();
    reader.report_rows(|key, _| {
        stale.push((key.to_owned(), None));
        Ok(())
    })?;
    for chunk in stale.chunks(PAGE) {
        store.commit(vec![Op::PutReportRows(chunk.to_vec())]).await?;
    }
    let version = vec![(VERSION_ROW.to_owned(), Some(VERSION.to_string().into_bytes()))];
    store.commit(vec![Op::PutReportRows(version), Op::SetCursor { consumer: CONSUMER.to_owned(), seq: 0 }]).await?;
    Ok(())
}

type Question = Box<dyn FnOnce(&Projection) -> Report + Send>;

enum Request {
    Query { question: Question, reply: oneshot::Sender<Result<Report, String>> },
    Stop { reply: oneshot::Sender<()> },
}

/// The running reports consumer.
pub struct Reports {
    task: crate::consumer::TaskHandle<Request>,
}

impl Reports {
    /// Opens the projection where it left off and follows `log_head`
    /// (every `TAKE_IN_EVERY` while it grows).
    pub async fn start(
        store: Arc<Store>,
        settings: ReportSettings,
        mut log_head: watch::Receiver<u64>,
    ) -> Result<Reports, ReportsError> {
        let mut consumer = Consumer::open(store, settings).await?;
        let (requests, mut incoming) = mpsc::channel::<Request>(64);
        let task = tokio::spawn(async move {
            // Every event changes a few buckets, and a bucket is rewritten
            // whole: taking the log in at most every `TAKE_IN_EVERY` (not at
            // every commit) writes each bucket once for many events. A
            // report asked meanwhile catches up first.
            let mut tick = tokio::time::interval(TAKE_IN_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    request = incoming.recv() => match request {
                        Some(Request::Query { question, reply }) => {
                            let answer = match consumer.catch_up(true).await {
                                Ok(_) => Ok(question(&consumer.projection)),
                                Err(error) => Err(error.to_string()),
                            };
                            let _ = reply.send(answer);
                        }
                        Some(Request::Stop { reply }) => {
                            if let Err(error) = consumer.catch_up(true).await {
                                tracing::warn!(%error, "the reports could not catch up before stopping; they will at the next start");
                            }
                            let _ = reply.send(());
                            break;
                        }
                        None => break,
                    },
                    _ = tick.tick() => {
                        if *log_head.borrow_and_update() <= consumer.cursor && !consumer.stale {
                            continue;
                        }
                        if let Err(error) = consumer.catch_up(false).await {
                            tracing::warn!(%error, "the reports could not take in the event log; retrying");
                            tokio::time::sleep(RETRY_AFTER).await;
                        }
                    }
                }
            }
        });
        Ok(Reports { task: crate::consumer::TaskHandle::new(requests, task) })
    }

    /// Answers `question` once every event committed before the call is in.
    pub async fn ask(&self, question: Question) -> Result<Report, ReportsError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || ReportsError("the reports have stopped".to_owned());
        self.task.requests.send(Request::Query { question, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?.map_err(ReportsError)
    }

    /// Catches up and stops the task.
    pub async fn stop(&self) {
        self.task.stop(|reply| Request::Stop { reply }).await;
    }
}

/// For the command line, with the engine stopped: deletes the stored
/// projection and projects the whole log again. Returns the events applied
/// and the rows the projection holds.
pub async fn rebuild(store: Arc<Store>, settings: ReportSettings) -> Result<(usize, usize), ReportsError> {
    reset(&store).await?;
    let mut consumer = Consumer::open(store, settings).await?;
    let applied = consumer.catch_up(true).await?;
    Ok((applied, consumer.projection.rollups.len() + consumer.projection.open_conversations()))
}
