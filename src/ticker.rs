//! The janitor's thread: calls a closure once per tick until stopped, sooner when the
//! closure asks for it.
//!
//! Both designs use it. Ticks and shutdown arrive on crossbeam channels and the thread
//! waits on both with `select!`, so [`Ticker::stop`] wakes it at once instead of after
//! up to one tick.

use std::cell::UnsafeCell;
use std::sync::Once;
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

#[cfg(not(crossbeam_loom))]
use crossbeam_channel::{select, Receiver, Sender};
#[cfg(crossbeam_loom)]
use std::sync::mpsc::Sender;

/// A running janitor thread. Stopping is idempotent and safe from any thread.
pub(crate) struct Ticker {
    stopped: Once,
    /// Taken exactly once, inside `stopped.call_once`.
    running: UnsafeCell<Option<Running>>,
    thread_id: ThreadId,
}

struct Running {
    /// Dropping the sender is the shutdown signal.
    shutdown: Sender<()>,
    handle: JoinHandle<()>,
}

// SAFETY: `running` is only touched inside `stopped.call_once` (which runs its closure at
// most once and makes every other caller wait until it has finished) or through `&mut self`
// in `Drop`; all other fields are `Sync`.
unsafe impl Sync for Ticker {}

/// When the janitor thread wants its next call: what each call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// At the next tick.
    OnTick,
    /// After [`HURRY`], or at the next tick if that comes first: the call found a busy
    /// intake, whose removed entries hold memory until taken.
    Soon,
    /// At once (unless the thread is being stopped): the call left work behind (due
    /// entries past its budget or its time limit).
    Now,
    /// After this long (an idle map's janitor, backing off).
    After(Duration),
}

/// How soon a call that returned [`Next::Soon`] is followed by the next one.
pub(crate) const HURRY: Duration = Duration::from_millis(10);

impl Ticker {
    /// Spawns a thread named `name` that calls `on_tick` every `tick` until stopped, and
    /// sooner when a call asks for it ([`Next::Soon`]). A tick too long to schedule (beyond
    /// a century) never fires.
    pub(crate) fn spawn<F>(name: &str, tick: Duration, on_tick: F) -> Ticker
    where
        F: FnMut() -> Next + Send + 'static,
    {
        let (shutdown, run) = janitor_loop(tick, on_tick);
        let handle =
            thread::Builder::new().name(name.to_owned()).spawn(run).expect("failed to spawn the janitor thread");
        let thread_id = handle.thread().id();
        Ticker { stopped: Once::new(), running: UnsafeCell::new(Some(Running { shutdown, handle })), thread_id }
    }

    /// Signals the thread to stop and joins it. Every caller returns after the thread
    /// has finished, except a call made on the janitor thread itself (from a value's
    /// destructor, say), which only signals: the thread ends after its current tick.
    pub(crate) fn stop(&self) {
        self.stopped.call_once(|| {
            // SAFETY: inside `call_once`: no other access to `running` can run concurrently.
            let running = unsafe { (*self.running.get()).take() };
            if let Some(Running { shutdown, handle }) = running {
                drop(shutdown);
                if thread::current().id() != self.thread_id {
                    // A janitor that panicked has nothing left to stop.
                    let _ = handle.join();
                }
            }
        });
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The janitor thread's loop: `on_tick` every `tick` until the returned sender is dropped,
/// [`HURRY`] after a call that returned [`Next::Soon`] if that comes first, and at once
/// after one that returned [`Next::Now`].
#[cfg(not(crossbeam_loom))]
fn janitor_loop<F>(tick: Duration, mut on_tick: F) -> (Sender<()>, impl FnOnce() + Send + 'static)
where
    F: FnMut() -> Next + Send + 'static,
{
    let (shutdown, shutdown_rx) = crossbeam_channel::bounded::<()>(0);
    let ticks = ticks_every(tick);
    let run = move || {
        let mut next = Next::OnTick;
        loop {
            match next {
                Next::OnTick => select! {
                    recv(ticks) -> _ => {}
                    recv(shutdown_rx) -> _ => return,
                },
                Next::Soon => select! {
                    recv(ticks) -> _ => {}
                    recv(shutdown_rx) -> _ => return,
                    default(HURRY) => {}
                },
                Next::Now => {
                    if !matches!(shutdown_rx.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                        return;
                    }
                }
                Next::After(wait) => select! {
                    recv(shutdown_rx) -> _ => return,
                    default(wait) => {}
                },
            }
            next = on_tick();
        }
    };
    (shutdown, run)
}

/// Under loom (where crossbeam-channel does not build) a plain timed wait on std's channel.
/// Loom models never start a janitor thread (they use manual mode); this only compiles.
#[cfg(crossbeam_loom)]
fn janitor_loop<F>(tick: Duration, mut on_tick: F) -> (Sender<()>, impl FnOnce() + Send + 'static)
where
    F: FnMut() -> Next + Send + 'static,
{
    let (shutdown, shutdown_rx) = std::sync::mpsc::channel::<()>();
    let run = move || {
        let mut wait = tick;
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = shutdown_rx.recv_timeout(wait) {
            wait = match on_tick() {
                Next::OnTick => tick,
                Next::Soon => HURRY.min(tick),
                Next::Now => Duration::ZERO,
                Next::After(wait) => wait,
            };
        }
    };
    (shutdown, run)
}

/// A channel that delivers a message every `tick`; never, when `tick` is beyond a century
/// (crossbeam's tick channel would overflow `Instant` arithmetic on later ticks).
#[cfg(not(crossbeam_loom))]
fn ticks_every(tick: Duration) -> Receiver<std::time::Instant> {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    if tick > CENTURY {
        crossbeam_channel::never()
    } else {
        crossbeam_channel::tick(tick)
    }
}

#[cfg(all(test, not(crossbeam_loom)))]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn a_call_that_asks_for_another_soon_gets_it_before_the_next_tick() {
        // Tick 500 ms; the first five calls ask for another soon. Five hurried calls take
        // about 5 × 10 ms; on ticks alone they would take 2.5 s.
        const TICK: Duration = Duration::from_millis(500);
        let (calls, called) = mpsc::channel();
        let mut count = 0;
        let ticker = Ticker::spawn("ticker-test", TICK, move || {
            count += 1;
            let _ = calls.send(Instant::now());
            if count <= 5 {
                Next::Soon
            } else {
                Next::OnTick
            }
        });
        let at: Vec<Instant> = called.iter().take(7).collect();
        ticker.stop();
        assert!(at[5] - at[0] < TICK, "five hurried calls took {:?}", at[5] - at[0]);
        // The sixth call asked for nothing: the seventh waits for the next tick, about
        // 450 ms later (a loaded machine only makes the gap longer; `Soon` would make it 10 ms).
        assert!(at[6] - at[5] > TICK / 4, "{:?}", at[6] - at[5]);
    }

    #[test]
    fn a_call_that_left_work_gets_the_next_at_once_and_stop_still_ends_it() {
        // Tick 200 ms; every call asks for the next at once (`Now`). A hundred calls after the
        // first tick take well under one tick (on ticks alone: 20 s); then stop ends the loop.
        const TICK: Duration = Duration::from_millis(200);
        let (calls, called) = mpsc::channel();
        let ticker = Ticker::spawn("ticker-test-now", TICK, move || {
            let _ = calls.send(Instant::now());
            Next::Now
        });
        let at: Vec<Instant> = called.iter().take(100).collect();
        assert!(at[99] - at[0] < TICK, "99 calls asked for at once took {:?}", at[99] - at[0]);
        ticker.stop(); // returns: the loop checks for shutdown between calls
    }
}
