//! Deadlines: many armed timers, a few tasks.
//!
//! Deadlines are absolute unix milliseconds (they come from the store and
//! survive restarts). They are spread over a few shards by conversation; each
//! shard is one task that owns a binary heap of 24-byte entries and sleeps until
//! the earliest is due. Nothing is cancelled: when a deadline fires, its owner
//! checks it against its persisted state and ignores it if it no longer
//! applies (the agent replied, the window was refreshed). So arming is a
//! channel send, and one conversation never costs a task.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use protocol::time::UnixMs;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock::SharedClock;

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DeadlineKind {
    ServiceWindowClose,
    FreeEntryClose,
    FirstResponseWarning,
    FirstResponseBreach,
    NextResponseWarning,
    NextResponseBreach,
    ResolutionWarning,
    ResolutionBreach,
    IdleReassign,
    /// The co-pilot's deadline (`clocks.copilot_at`): its flow's
    /// `handoff_after_s`, or the team's opening when a hand-over waits.
    Copilot,
}

impl DeadlineKind {
    const ALL: [DeadlineKind; 10] = [
        DeadlineKind::ServiceWindowClose,
        DeadlineKind::FreeEntryClose,
        DeadlineKind::FirstResponseWarning,
        DeadlineKind::FirstResponseBreach,
        DeadlineKind::NextResponseWarning,
        DeadlineKind::NextResponseBreach,
        DeadlineKind::ResolutionWarning,
        DeadlineKind::ResolutionBreach,
        DeadlineKind::IdleReassign,
        DeadlineKind::Copilot,
    ];

    fn from_u8(value: u8) -> DeadlineKind {
        Self::ALL[usize::from(value).min(Self::ALL.len() - 1)]
    }
}

/// A deadline of one conversation (by its number: `cv000000000042` → 42).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Deadline {
    pub due: UnixMs,
    pub conversation: u64,
    pub kind: DeadlineKind,
}

/// Receives fired deadlines, on the shard's task. Must not block.
pub type FireFn = Arc<dyn Fn(Deadline, UnixMs) + Send + Sync>;

enum Command {
    Arm(Deadline),
    ArmMany(Vec<Deadline>),
    /// Re-check against the clock (a manual clock moved).
    Poll,
    /// Re-check against the clock, then answer once every due deadline was
    /// handed to `fire`.
    Settle(tokio::sync::oneshot::Sender<()>),
}

/// The shards; cheap to clone.
#[derive(Clone)]
pub struct Timers {
    shards: Arc<Vec<mpsc::UnboundedSender<Command>>>,
}

/// The heap entry: (due, conversation, kind) — 24 bytes with padding.
type Entry = Reverse<(UnixMs, u64, u8)>;

impl Timers {
    /// Starts `shards` tasks. `fire` is called with each due deadline and the
    /// time it fired at.
    pub fn start(shards: usize, clock: SharedClock, fire: FireFn) -> (Timers, Vec<JoinHandle<()>>) {
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..shards.max(1) {
            let (sender, receiver) = mpsc::unbounded_channel();
            senders.push(sender);
            tasks.push(tokio::spawn(run_shard(receiver, clock.clone(), fire.clone())));
        }
        (Timers { shards: Arc::new(senders) }, tasks)
    }

    pub fn arm(&self, deadline: Deadline) {
        let shard = (deadline.conversation % self.shards.len() as u64) as usize;
        let _ = self.shards[shard].send(Command::Arm(deadline));
    }

    /// Arms many at once (a start re-arms every open conversation's): one
    /// message per shard instead of one per deadline.
    pub fn arm_many(&self, deadlines: impl IntoIterator<Item = Deadline>) {
        let mut per_shard: Vec<Vec<Deadline>> = vec![Vec::new(); self.shards.len()];
        for deadline in deadlines {
            per_shard[(deadline.conversation % self.shards.len() as u64) as usize].push(deadline);
        }
        for (shard, deadlines) in self.shards.iter().zip(per_shard) {
            if !deadlines.is_empty() {
                let _ = shard.send(Command::ArmMany(deadlines));
            }
        }
    }

    /// Makes every shard compare its earliest deadline with the clock now
    /// (needed only when the clock can jump, as a manual clock does).
    pub fn poll(&self) {
        for shard in self.shards.iter() {
            let _ = shard.send(Command::Poll);
        }
    }

    /// Fires every deadline due by the clock now and returns once each was
    /// handed to `fire` (with a manual clock: time moved, now let its
    /// consequences start). Whatever `fire` sends goes before anything sent
    /// after this returns.
    pub async fn settle(&self) {
        let mut answers = Vec::new();
        for shard in self.shards.iter() {
            let (answer, answered) = tokio::sync::oneshot::channel();
            if shard.send(Command::Settle(answer)).is_ok() {
                answers.push(answered);
            }
        }
        for answered in answers {
            let _ = answered.await;
        }
    }
}

async fn run_shard(mut commands: mpsc::UnboundedReceiver<Command>, clock: SharedClock, fire: FireFn) {
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    let mut settling = Vec::new();
    loop {
        let now = clock.now_ms();
        while let Some(Reverse((due, conversation, kind))) = heap.peek().copied() {
            if due > now {
                break;
            }
            heap.pop();
            fire(Deadline { due, conversation, kind: DeadlineKind::from_u8(kind) }, now);
        }
        for answer in settling.drain(..) {
            let _: Result<(), ()> = tokio::sync::oneshot::Sender::send(answer, ());
        }
        if heap.capacity() > 1024 && heap.len() < heap.capacity() / 4 {
            heap.shrink_to(heap.len() * 2);
        }
        let wait = heap.peek().map(|Reverse((due, _, _))| Duration::from_millis((due - now).max(0) as u64));
        let command = match wait {
            Some(wait) => tokio::select! {
                command = commands.recv() => command,
                () = tokio::time::sleep(wait) => continue,
            },
            None => commands.recv().await,
        };
        let Some(command) = command else { return };
        let mut next = Some(command);
        // Take everything already queued before looking at the clock again.
        while let Some(command) = next {
            match command {
                Command::Arm(deadline) => {
                    heap.push(Reverse((deadline.due, deadline.conversation, deadline.kind as u8)))
                }
                Command::ArmMany(deadlines) => heap.extend(
                    deadlines
                        .into_iter()
                        .map(|deadline| Reverse((deadline.due, deadline.conversation, deadline.kind as u8))),
                ),
                Command::Poll => {}
                Command::Settle(answer) => settling.push(answer),
            }
            next = commands.try_recv().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;
    use std::sync::Mutex;

    #[tokio::test(start_paused = true)]
    async fn deadlines_fire_in_order_at_their_time_in_paused_time() {
        let clock: SharedClock = TokioClock::starting_at(1_000_000);
        let fired = Arc::new(Mutex::new(Vec::new()));
        let sink = fired.clone();
        let (timers, _) =
            Timers::start(2, clock.clone(), Arc::new(move |deadline, at| sink.lock().unwrap().push((deadline, at))));
        let day = 24 * 3_600_000;
        for (conversation, due) in
            [(1, 1_000_000 + day), (2, 1_000_000 + 3 * day), (3, 1_000_000 + day - 1), (4, 999_000)]
        {
            timers.arm(Deadline { due, conversation, kind: DeadlineKind::ServiceWindowClose });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(fired.lock().unwrap().len(), 1, "an overdue deadline fires at once");
        tokio::time::sleep(Duration::from_millis(day as u64 - 2)).await;
        assert_eq!(fired.lock().unwrap().len(), 1, "23:59:59.999 later: not yet");
        tokio::time::sleep(Duration::from_millis(1)).await;
        let count_after_day = fired.lock().unwrap().len();
        assert_eq!(count_after_day, 2, "24 h minus 1 ms fired, 24 h not yet");
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(fired.lock().unwrap().len(), 3, "24 h fired");
        tokio::time::sleep(Duration::from_millis(2 * day as u64)).await;
        let fired = fired.lock().unwrap();
        assert_eq!(fired.len(), 4);
        for (deadline, at) in fired.iter() {
            assert!(*at >= deadline.due, "never early");
            assert!(*at - deadline.due.max(1_000_000) <= 1, "on time in paused time: {deadline:?} at {at}");
        }
    }

    #[tokio::test]
    async fn settle_fires_what_is_due_by_a_manual_clock_before_it_returns() {
        let clock = crate::clock::ManualClock::new(1_000);
        let fired = Arc::new(Mutex::new(Vec::new()));
        let sink = fired.clone();
        let (timers, _) = Timers::start(
            2,
            clock.clone(),
            Arc::new(move |deadline: Deadline, _| sink.lock().unwrap().push(deadline.due)),
        );
        for conversation in 0..4 {
            timers.arm(Deadline { due: 2_000 + conversation as i64, conversation, kind: DeadlineKind::IdleReassign });
        }
        clock.set(2_001);
        timers.settle().await;
        let mut due_by_then = fired.lock().unwrap().clone();
        due_by_then.sort();
        assert_eq!(due_by_then, vec![2_000, 2_001], "due by 2,001: both fired, nothing later");
        clock.set(2_002);
        timers.settle().await;
        assert_eq!(fired.lock().unwrap().len(), 3);
        timers.settle().await;
        assert_eq!(fired.lock().unwrap().len(), 3, "settling again fires nothing new");
    }
}
