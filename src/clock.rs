//! Time for the engine: where "now" comes from, and how durations become wheel ticks.
//!
//! Every call that dates or judges an entry reads the [`Clock`] itself (`set`, `get`, the
//! removals; the janitor once per run and now and then during a long one), so no entry's
//! life depends on when the janitor last ran. Tests and embedders
//! inject a [`ManualClock`] to make expiry deterministic. A map built without a clock reads
//! the kernel's clocks on Linux: the monotonic one dates entries, the coarse one judges them
//! where the map's `tick` leaves room for its lag ([`TimeSource`], `KernelClock`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A monotonic source of time for a buffer's expiry.
///
/// It must never go backwards. If it does (a clock stepped back by an hour), the janitor
/// keeps the time it had reached until the clock catches up: nothing expires for the
/// length of the step, and an entry set meanwhile (dated by the earlier time) is removed
/// as soon as the janitor sees it, while callers, who judge by the clock, still find
/// older entries for the length of the step. Debug builds catch it: the janitor's next run
/// panics with "the map's clock went back" (on the janitor thread, where the panic is
/// contained and reported by the panic hook; in manual mode, from
/// [`run_janitor`](crate::ExpiringMap::run_janitor)).
///
/// It may be called from many threads at once, on every `set`, hit and removal, and by the
/// janitor thread that serves every map of the process: keep it cheap (a slow clock delays
/// every map's expiry). A panic in it propagates to the caller (or is contained on the
/// janitor thread) and leaves the map as it was.
pub trait Clock: Send + Sync + 'static {
    /// Time elapsed since an origin of the clock's choosing. Must never go backwards.
    fn now(&self) -> Duration;
}

/// The CPU's time-stamp counter (through the `quanta` crate), scaled to nanoseconds, where
/// the system vouches for it; the monotonic clock (`Instant`) elsewhere. Never the wall
/// clock. The default clock off Linux; on Linux a map built without a clock runs on the
/// kernel's monotonic clock instead (`Instant`'s), and judges entries by the kernel's
/// coarse clock where its `tick` allows (docs/design.md, "Time"): twice the gets a second
/// over a large table, since every precise reading, this one's included, holds back the
/// loads after it until the ones before it are done.
///
/// Every call that dates or judges an entry reads it, so it must be cheap: an `Instant`
/// read (`clock_gettime` through the vDSO) fences the loads before it (a 1 M-entry `get`
/// paid ~0.2 µs for it in the Criterion benchmarks); the counter is read without a fence
/// (~10 ns). quanta calibrates it against the monotonic clock once per process (a busy loop
/// of up to a few milliseconds in the first `SystemClock::new`).
///
/// The counter is used only where every core's counter agrees: on Linux, when the kernel's
/// clocksource is `tsc` (the kernel checks the counters' synchronization at boot and
/// switches away from them when they disagree; quanta does not check); elsewhere quanta's
/// own choice (the counter where the CPU calls it invariant). Otherwise `Instant`.
///
/// Its time is the map's time: the contract's bounds hold exactly in it. The counter runs at
/// the calibrated rate, which may differ from `Instant`'s by some parts per million (18 ppm
/// measured here: 1 ms in a minute); measure a map against [`Clock::now`] of the clock it
/// runs on (a clone of the one given to the builder), or give it a clock of your own.
#[derive(Debug, Clone)]
pub struct SystemClock {
    source: SystemSource,
}

#[derive(Debug, Clone)]
enum SystemSource {
    /// The counter, and its reading at the origin.
    #[cfg(not(crossbeam_loom))]
    Counter(quanta::Clock, u64),
    /// The monotonic clock (and, under loom, where quanta's dependencies switch to loom's
    /// atomics, always).
    Monotonic(std::time::Instant),
}

/// Whether the counter may be used: on Linux, whether the kernel's clocksource is the
/// counter (read once per process).
#[cfg(not(crossbeam_loom))]
fn counter_is_trusted() -> bool {
    static TRUSTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRUSTED.get_or_init(|| {
        if cfg!(target_os = "linux") {
            let path = "/sys/devices/system/clocksource/clocksource0/current_clocksource";
            std::fs::read_to_string(path).is_ok_and(|source| source.trim() == "tsc")
        } else {
            true
        }
    })
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> SystemClock {
        #[cfg(not(crossbeam_loom))]
        if counter_is_trusted() {
            let counter = quanta::Clock::new();
            let origin = counter.raw();
            return SystemClock { source: SystemSource::Counter(counter, origin) };
        }
        SystemClock { source: SystemSource::Monotonic(std::time::Instant::now()) }
    }

    /// Nanoseconds since the origin, saturating at about 584 years.
    #[inline]
    pub(crate) fn nanos(&self) -> u64 {
        match &self.source {
            #[cfg(not(crossbeam_loom))]
            SystemSource::Counter(counter, origin) => counter.delta_as_nanos(*origin, counter.raw()),
            SystemSource::Monotonic(origin) => nanos(origin.elapsed()),
        }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos())
    }
}

/// A clock that moves only when told to: for deterministic expiry tests and for
/// embedders that drive the janitor from their own event loop.
///
/// Clones share one time.
#[derive(Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at zero.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ = self.nanos.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| Some(now.saturating_add(by)));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock").field("now", &self.now()).finish()
    }
}

/// Where a map reads the time: the kernel's clocks (a map built without a clock, on Linux:
/// [`KernelClock`]), a [`SystemClock`] without a virtual call (the hot path reads the time
/// on every `set`, hit and removal), or the clock a builder was given.
///
/// Two readings: [`now`](Self::now), the time, which dates entries (`set`) and drives the
/// janitor; and [`seen`](Self::seen), which judges them (is it live?): never ahead of `now`,
/// at most the lag behind it, and cheap. A hit judged by `seen` dates its move by
/// `seen + lag`, the latest the time can be (`crate::life::Life::touch_seen`). Judging by a
/// time that may trail keeps "never early" exact (an entry is judged dead only once it is);
/// with the leading date it costs "never late" up to twice the lag, which the map allows
/// only within its tick.
pub(crate) enum TimeSource {
    System(SystemClock),
    #[cfg(all(target_os = "linux", not(crossbeam_loom)))]
    Kernel(KernelClock),
    Custom(Box<dyn Clock>),
}

impl TimeSource {
    /// The clock a builder was given, as a time source: a [`SystemClock`] keeps the fast path.
    pub(crate) fn of(clock: impl Clock) -> TimeSource {
        match (&clock as &dyn std::any::Any).downcast_ref::<SystemClock>() {
            Some(system) => TimeSource::System(system.clone()),
            None => TimeSource::Custom(Box::new(clock)),
        }
    }

    /// The time source of a map built without a clock: on Linux the kernel's monotonic
    /// clock (`Instant`'s), judging by its coarse variant where that one's lag is at most
    /// half the map's wheel tick ([`KernelClock::new`]); elsewhere a [`SystemClock`].
    pub(crate) fn default_for(scale: &TimeScale) -> TimeSource {
        #[cfg(all(target_os = "linux", not(crossbeam_loom)))]
        if let Some(kernel) = KernelClock::new(scale) {
            return TimeSource::Kernel(kernel);
        }
        let _ = scale;
        TimeSource::System(SystemClock::new())
    }

    /// Nanoseconds since the clock's origin, saturating at about 584 years.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self {
            TimeSource::System(clock) => clock.nanos(),
            #[cfg(all(target_os = "linux", not(crossbeam_loom)))]
            TimeSource::Kernel(clock) => clock.now(),
            TimeSource::Custom(clock) => nanos(clock.now()),
        }
    }

    /// A reading for judging entries: at most [`now`](Self::now), and at most the lag
    /// behind it.
    #[inline]
    pub(crate) fn seen(&self) -> u64 {
        self.seen_and_lag().0
    }

    /// A reading for judging entries, and how far it may trail [`now`](Self::now), in
    /// nanoseconds (0: it is `now`), read together: the lag can drop to 0 at any time
    /// ([`check_lag`](Self::check_lag)), and a seen time must be judged with the lag it was
    /// read under.
    #[inline]
    pub(crate) fn seen_and_lag(&self) -> (u64, u64) {
        match self {
            #[cfg(all(target_os = "linux", not(crossbeam_loom)))]
            TimeSource::Kernel(clock) => clock.seen_and_lag(),
            _ => (self.now(), 0),
        }
    }

    /// How far [`seen`](Self::seen) may trail [`now`](Self::now) now, in nanoseconds.
    #[cfg(test)]
    pub(crate) fn lag(&self) -> u64 {
        self.seen_and_lag().1
    }

    /// Checks the lag the map allows for against the kernel (the janitor, once a run): a
    /// coarse clock found trailing by more than half of it is never judged by again.
    pub(crate) fn check_lag(&self) {
        #[cfg(all(target_os = "linux", not(crossbeam_loom)))]
        if let TimeSource::Kernel(clock) = self {
            clock.check_lag();
        }
    }

    /// Whether the time is the real one (the janitor thread may sleep until a deadline),
    /// not a clock that moves only when told.
    pub(crate) fn is_real(&self) -> bool {
        match self {
            TimeSource::System(_) => true,
            #[cfg(all(target_os = "linux", not(crossbeam_loom)))]
            TimeSource::Kernel(_) => true,
            TimeSource::Custom(_) => false,
        }
    }
}

/// The kernel's clocks, read through the vDSO (no system call): `CLOCK_MONOTONIC` (what
/// `Instant` reads) for [`TimeSource::now`], and, where the map's `tick` allows it,
/// `CLOCK_MONOTONIC_COARSE` for [`TimeSource::seen`]: the same time as of the kernel's last
/// timer interrupt, read with plain loads. A `get` then reads only the coarse clock, and a
/// touch that moves the deadline dates the move by the latest the time can be (the coarse
/// reading plus the lag); a precise read, the CPU counter's as much as
/// the kernel's, holds back the loads after it until the ones before it are done, so
/// consecutive gets over a large table lose the overlap of their cache misses
/// (docs/performance.md, "The coarse clock": twice the gets a second over 1 M entries).
///
/// The coarse clock trails the precise one by about one timer interrupt (1–10 ms,
/// `clock_getres`; measured here with 4 ms interrupts: 1–5.5 ms); the map allows for
/// [`KERNEL_LAG_INTERRUPTS`] of them (and at least [`KERNEL_MIN_LAG`]): a kernel whose
/// timekeeping falls further behind while callers run can make a hit skip a move it needed,
/// or date one early (docs/design.md, "Time"). It judges by the coarse clock only if that
/// lag is at most half its wheel tick (`min(tick, expire) / 8`, so a tick and an expire of
/// a second or more): then a hit comes at most twice the lag later than with exact readings
/// (judged by a trailing reading, and its move dated by a leading one, see
/// `Life::touch_seen`), and "never late" (`expire + tick`) loses at most an eighth of its
/// slack.
///
/// The janitor checks the assumption once a run ([`TimeSource::check_lag`]): if it finds
/// the coarse clock trailing by more than half the lag, the map judges by the precise clock
/// from then on (the lag drops to 0 for good). That bounds how long a kernel late with its
/// timekeeping goes unnoticed to one janitor period; it cannot undo a hit judged in it.
#[cfg(all(target_os = "linux", not(crossbeam_loom)))]
pub(crate) struct KernelClock {
    /// `CLOCK_MONOTONIC` at the origin, in nanoseconds.
    origin: u64,
    /// How far [`TimeSource::seen`] may trail [`TimeSource::now`], in nanoseconds: 0 when
    /// it reads the precise clock too. Only ever set to 0 after `new`.
    lag: AtomicU64,
}

/// Timer interrupts the coarse clock may fall behind by, as far as the map is concerned.
#[cfg(all(target_os = "linux", not(crossbeam_loom)))]
pub(crate) const KERNEL_LAG_INTERRUPTS: u64 = 16;
/// The least lag the map allows for, whatever the interrupt rate.
#[cfg(all(target_os = "linux", not(crossbeam_loom)))]
pub(crate) const KERNEL_MIN_LAG: Duration = Duration::from_millis(16);

#[cfg(all(target_os = "linux", not(crossbeam_loom)))]
impl KernelClock {
    /// The kernel's clocks for a map of `scale`, if the precise one reads; judging by the
    /// coarse one if it reads, its resolution is known, and its lag is at most half the
    /// wheel tick.
    fn new(scale: &TimeScale) -> Option<KernelClock> {
        let origin = read_clock(libc::CLOCK_MONOTONIC)?;
        let lag = Self::coarse_lag().filter(|&lag| lag <= scale.resolution_nanos / 2).unwrap_or(0);
        Some(KernelClock { origin, lag: AtomicU64::new(lag) })
    }

    /// How far the coarse clock may trail the precise one, if it can be read.
    fn coarse_lag() -> Option<u64> {
        let mut resolution = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `clock_getres` writes one `timespec` to the pointer it is given.
        if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut resolution) } != 0 {
            return None;
        }
        read_clock(libc::CLOCK_MONOTONIC_COARSE)?;
        let resolution = timespec_nanos(&resolution)?;
        Some(resolution.saturating_mul(KERNEL_LAG_INTERRUPTS).max(nanos(KERNEL_MIN_LAG)))
    }

    #[inline]
    fn now(&self) -> u64 {
        // It read once (`new`); a clock the kernel offered does not stop reading.
        let now = read_clock(libc::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC stopped reading");
        now.saturating_sub(self.origin)
    }

    #[inline]
    fn seen_and_lag(&self) -> (u64, u64) {
        // Relaxed: the lag only drops, and either value judges soundly with the reading
        // taken under it.
        let lag = self.lag.load(Ordering::Relaxed);
        if lag == 0 {
            return (self.now(), 0);
        }
        // Never ahead of `now`: the coarse clock is the precise one as of the last interrupt.
        match read_clock(libc::CLOCK_MONOTONIC_COARSE) {
            Some(coarse) => (coarse.saturating_sub(self.origin), lag),
            None => (self.now(), 0),
        }
    }

    fn check_lag(&self) {
        if self.lag.load(Ordering::Relaxed) == 0 {
            return;
        }
        // The precise time first: the coarse reading after it trails it by no more than the
        // coarse clock's trail at that moment.
        let before = self.now();
        if let Some(coarse) = read_clock(libc::CLOCK_MONOTONIC_COARSE) {
            self.observe(before, coarse.saturating_sub(self.origin));
        }
    }

    /// A coarse reading `seen` taken after the precise reading `before`: past half the lag
    /// behind it, coarse judging ends.
    fn observe(&self, before: u64, seen: u64) {
        if before.saturating_sub(seen) > self.lag.load(Ordering::Relaxed) / 2 {
            self.lag.store(0, Ordering::Relaxed);
        }
    }
}

/// One of the kernel's clocks, in nanoseconds; `None` if it cannot be read.
#[cfg(all(target_os = "linux", not(crossbeam_loom)))]
#[inline]
fn read_clock(clock: libc::clockid_t) -> Option<u64> {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `clock_gettime` writes one `timespec` to the pointer it is given.
    if unsafe { libc::clock_gettime(clock, &mut time) } != 0 {
        return None;
    }
    timespec_nanos(&time)
}

#[cfg(all(target_os = "linux", not(crossbeam_loom)))]
#[inline]
fn timespec_nanos(time: &libc::timespec) -> Option<u64> {
    let seconds = u64::try_from(time.tv_sec).ok()?;
    let nanos = u64::try_from(time.tv_nsec).ok()?;
    Some(seconds.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// `duration` in nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The wheel's unit of time and the conversions to it.
///
/// Deadlines are kept in wheel ticks (an eighth of the user's `tick`), rounded up, so that
/// an entry touched at `t` lives until at least `t + expire` and less than one wheel tick
/// longer; the janitor, which runs about every wheel tick, then removes it within
/// `expire + tick/4` of its last touch plus its runs' time and its lateness, and the lag
/// where the coarse clock judges (see `docs/design.md`, "Time").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeScale {
    /// Length of one wheel tick in nanoseconds (at least 1).
    pub(crate) resolution_nanos: u64,
    /// `expire` in nanoseconds, saturating.
    pub(crate) expire_nanos: u64,
    /// `expire` in wheel ticks, rounded up; [`NEVER`] when it does not fit, or is beyond
    /// what a clock can count (nothing expires).
    pub(crate) expire_ticks: u64,
}

/// Wheel ticks per user tick.
pub(crate) const TICKS_PER_USER_TICK: u32 = 8;

/// A deadline that never comes. Deadlines live in the low 57 bits of an entry's `life`
/// word (`crate::life`): over four years at the finest wheel tick (1 ns, a `tick` of 8 ns),
/// 570 years at a `tick` of 1 µs.
pub(crate) const NEVER: u64 = (1 << 57) - 1;

impl TimeScale {
    /// The wheel tick is an eighth of the shorter of `tick` and `expire` (so that an entry
    /// is never kept much past its `expire` because the `tick` is long: with a 60 s tick and
    /// a 1 s expire, an entry lives at most 1.125 s, not 8.5 s), and at least 1 ns. (However
    /// fine it is, the janitor's periodic runs of a map come at most once a millisecond: `scheduler::MIN_PERIOD`.)
    pub(crate) fn new(tick: Duration, expire: Duration) -> TimeScale {
        let resolution = tick.min(expire) / TICKS_PER_USER_TICK;
        let resolution_nanos = nanos(resolution).max(1);
        let expire_nanos = nanos(expire);
        // An expire the clock's ~584 years of nanoseconds cannot span never comes.
        let expire_ticks =
            if expire_nanos == u64::MAX { NEVER } else { expire_nanos.div_ceil(resolution_nanos).min(NEVER) };
        TimeScale { resolution_nanos, expire_nanos, expire_ticks }
    }

    /// The wheel tick that `now` (nanoseconds) falls in; saturates below [`NEVER`], so that
    /// time never reaches a deadline that never comes.
    pub(crate) fn ticks(&self, now: u64) -> u64 {
        (now / self.resolution_nanos).min(NEVER - 1)
    }

    /// The deadline of an entry touched at `now` (nanoseconds): the first wheel tick that
    /// starts at or after `now + expire`. Dead from then on: the entry lives at least
    /// `expire`, and less than one wheel tick more.
    pub(crate) fn deadline_after_touch(&self, now: u64) -> u64 {
        if self.expire_ticks >= NEVER {
            return NEVER;
        }
        now.saturating_add(self.expire_nanos).div_ceil(self.resolution_nanos).min(NEVER)
    }

    /// Whether an entry with `deadline` is still alive at `now` (nanoseconds): the same as
    /// `ticks(now) < deadline`, without a division (the hot path asks on every hit).
    #[inline]
    pub(crate) fn is_alive(&self, deadline: u64, now: u64) -> bool {
        deadline >= NEVER || now < deadline.saturating_mul(self.resolution_nanos)
    }

    /// Whether a touch at `now` would move `deadline` later, i.e. whether
    /// `deadline_after_touch(now) > deadline`, without a division. Touches within one wheel
    /// tick of each other give the same deadline, so a hot entry is written at most once a
    /// wheel tick.
    #[inline]
    pub(crate) fn touch_moves(&self, deadline: u64, now: u64) -> bool {
        deadline < NEVER
            && self.expire_ticks < NEVER
            && now.saturating_add(self.expire_nanos) > deadline.saturating_mul(self.resolution_nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn scale_rounds_expire_up_and_keeps_an_eighth_tick_resolution() {
        let scale = TimeScale::new(Duration::from_millis(80), Duration::from_millis(1005));
        assert_eq!(scale.resolution_nanos, 10 * MS);
        assert_eq!(scale.expire_ticks, 101);
        assert_eq!(scale.ticks(99 * MS), 9);
        // Touched at 99 ms: 99 + 1005 = 1104 ms, rounded up to the tick starting at 1110 ms.
        assert_eq!(scale.deadline_after_touch(99 * MS), 111);
        // Touched exactly on a tick boundary: no rounding.
        assert_eq!(scale.deadline_after_touch(95 * MS), 110);
    }

    #[test]
    fn an_entry_lives_at_least_expire_and_less_than_a_wheel_tick_more() {
        // Every touch time over a few wheel ticks, in odd steps: the entry is alive at every
        // instant before `touch + expire`, dead from the first tick after it, and the
        // division-free checks agree with the tick arithmetic.
        for (tick, expire) in [(80 * MS, 1005 * MS), (8, 5), (1000 * MS, 10 * MS), (3, 1)] {
            let scale = TimeScale::new(Duration::from_nanos(tick), Duration::from_nanos(expire));
            let resolution = scale.resolution_nanos;
            for touch in (0..4 * resolution + 7).step_by((resolution as usize / 7).max(1)) {
                let deadline = scale.deadline_after_touch(touch);
                for now in [touch, touch + expire - 1, touch + expire, touch + expire + resolution - 1] {
                    let by_ticks = scale.ticks(now) < deadline;
                    assert_eq!(scale.is_alive(deadline, now), by_ticks, "touch {touch}, now {now}");
                }
                assert!(scale.is_alive(deadline, touch + expire - 1), "dead before expire: touch {touch}");
                assert!(!scale.is_alive(deadline, touch + expire + resolution), "alive past a tick more");
                for earlier in [0, touch / 2, touch] {
                    let before = scale.deadline_after_touch(earlier);
                    assert_eq!(scale.touch_moves(before, touch), deadline > before, "{earlier} -> {touch}");
                }
            }
        }
    }

    #[test]
    fn huge_durations_saturate_to_never() {
        // A tick of Duration::MAX: a wheel tick is 584 years, which no clock reaches.
        let scale = TimeScale::new(Duration::MAX, Duration::MAX);
        assert_eq!(scale.resolution_nanos, u64::MAX);
        assert_eq!(scale.ticks(1_000_000 * 1_000 * MS), 0);
        let scale = TimeScale::new(Duration::from_nanos(1), Duration::MAX);
        assert_eq!(scale.resolution_nanos, 1);
        assert_eq!(scale.expire_ticks, NEVER);
        assert_eq!(scale.ticks(u64::MAX), NEVER - 1, "time never reaches NEVER");
        assert_eq!(scale.deadline_after_touch(u64::MAX), NEVER);
        assert!(scale.is_alive(NEVER, u64::MAX));
        assert!(!scale.touch_moves(NEVER, u64::MAX));
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }

    #[test]
    fn the_wheel_tick_is_an_eighth_of_the_shorter_of_tick_and_expire() {
        let resolution = |tick, expire| TimeScale::new(tick, expire).resolution_nanos;
        assert_eq!(resolution(Duration::from_secs(15), Duration::from_secs(60)), 1_875 * MS);
        assert_eq!(resolution(Duration::from_secs(60), Duration::from_secs(1)), 125 * MS);
        assert_eq!(resolution(Duration::from_nanos(1), Duration::from_secs(1)), 1);
        assert_eq!(resolution(Duration::from_secs(1), Duration::from_nanos(80)), 10);
    }

    /// The kernel's clocks: a coarse reading is never ahead of a precise one taken after it,
    /// and trails one taken before it by at most the lag the map allows for; the coarse
    /// clock is used only for a tick of twice that lag or more.
    #[test]
    #[cfg(all(target_os = "linux", not(crossbeam_loom)))]
    fn the_kernel_clocks_judge_by_a_time_never_ahead_and_at_most_lag_behind() {
        let scale = |tick, expire| TimeScale::new(Duration::from_millis(tick), Duration::from_millis(expire));
        let short = TimeSource::default_for(&scale(10, 50));
        assert!(matches!(short, TimeSource::Kernel(_)), "the default on Linux");
        assert_eq!(short.lag(), 0, "a 1.25 ms wheel tick leaves no room for the coarse clock's lag");
        let long_tick_short_expire = TimeSource::default_for(&scale(15_000, 100));
        assert_eq!(long_tick_short_expire.lag(), 0, "the wheel tick is the expire's eighth: 12.5 ms");
        let long = TimeSource::default_for(&scale(15_000, 60_000));
        let lag = long.lag();
        assert!(lag >= nanos(KERNEL_MIN_LAG) && lag <= 1_875 * MS / 2, "lag {lag} ns");
        let mut trailed = 0;
        for _ in 0..100_000 {
            let before = long.now();
            let seen = long.seen();
            let after = long.now();
            assert!(seen <= after, "seen {seen} ahead of the time after it, {after}");
            assert!(seen + lag >= before, "seen {seen} trails the time before it, {before}, by more than {lag}");
            trailed = trailed.max(before.saturating_sub(seen));
        }
        assert!(trailed > 0, "the coarse clock never trailed: is it the coarse one?");
        // The janitor's check: a trail within half the lag leaves it; one past it ends
        // coarse judging for good.
        long.check_lag();
        assert_eq!(long.lag(), lag, "this machine's coarse clock keeps within half the lag");
        let TimeSource::Kernel(kernel) = &long else { unreachable!("checked above") };
        kernel.observe(10 * lag, 10 * lag - lag / 2);
        assert_eq!(long.lag(), lag, "half the lag is allowed");
        kernel.observe(10 * lag, 10 * lag - lag / 2 - 1);
        assert_eq!(long.seen_and_lag().1, 0, "a trail past half the lag ends coarse judging");
        let (seen, now) = (long.seen(), long.now());
        assert!(seen <= now && now - seen < nanos(Duration::from_millis(1)), "judged by the precise clock");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new();
        let shared = clock.clone();
        assert_eq!(clock.now(), Duration::ZERO);
        shared.advance(Duration::from_secs(3));
        assert_eq!(clock.now(), Duration::from_secs(3));
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), Duration::from_nanos(u64::MAX));
    }
}
