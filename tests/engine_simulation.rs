//! Seeded schedule simulation of the engine's expiry (FoundationDB / VOPR style): one seed
//! drives every choice (operation, key, clock step, janitor lateness and budget, bursts,
//! `done`), and a simple model of the contract checks every answer and, after every
//! janitor cycle, what the map still holds:
//!
//! - **safety**: no miss ends less than `expire` after the start of the key's last touch;
//!   no janitor cycle removes an entry whose last touch began less than `expire` before
//!   the cycle ended;
//! - **bound**: no hit begins more than `expire + tick` after the end of the key's last
//!   touch;
//! - **liveness**: after a janitor cycle (runs until nothing is left due) that began at
//!   `j`, no entry is held whose last touch ended `expire + wheel tick` or more before `j`,
//!   however late the cycle came and whatever came before it;
//! - at the end, past every deadline, `len() == 0` and every value has been dropped once.
//!
//! The clock ([`SimClock`]) sometimes moves on right after it is read: the caller (or the
//! janitor) acts a little later than the time it read, as when descheduled mid-call.
//!
//! `SIM_SEEDS=n` runs n seeds (default 4,000), `SIM_SEED=s` replays one seed and prints
//! its whole trace. A failure prints its seed and the last calls before it.

mod common;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::XorShift;
use download_buffer::{Builder, Clock, ExpiringMap, DEFAULT_JANITOR_BUDGET};

/// A manual clock whose every read may move it on by a random delay after the read.
#[derive(Clone)]
struct SimClock {
    nanos: Arc<AtomicU64>,
    rng: Arc<Mutex<XorShift>>,
    /// One read in `delay_one_in` is followed by a delay of up to `max_delay` ns.
    delay_one_in: u64,
    max_delay: u64,
}

impl SimClock {
    fn now_ns(&self) -> u64 {
        self.nanos.load(Ordering::SeqCst)
    }
    fn advance(&self, by: u64) {
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        let now = self.now_ns();
        let mut rng = self.rng.lock().unwrap();
        if self.delay_one_in > 0 && rng.below(self.delay_one_in) == 0 {
            let delay = rng.below(self.max_delay + 1);
            drop(rng);
            self.advance(delay);
        }
        Duration::from_nanos(now)
    }
}

/// A value that knows its tag and counts the live copies of all values.
struct Val {
    tag: u64,
    live: Arc<AtomicI64>,
}

impl Val {
    fn new(tag: u64, live: &Arc<AtomicI64>) -> Val {
        live.fetch_add(1, Ordering::SeqCst);
        Val { tag, live: Arc::clone(live) }
    }
}

impl Clone for Val {
    fn clone(&self) -> Val {
        Val::new(self.tag, &self.live)
    }
}

impl Drop for Val {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The model of one key.
#[derive(Clone, Copy, Default)]
struct Model {
    /// The tag a live entry must return; `None` once removed or seen expired.
    present: Option<u64>,
    /// Whether the table may hold an entry for the key (live or expired, not yet removed).
    in_table: bool,
    touch_start: u64,
    touch_end: u64,
}

const HOT_KEYS: u64 = 24;

struct Sim {
    seed: u64,
    rng: XorShift,
    clock: SimClock,
    map: ExpiringMap<u64, Val>,
    live: Arc<AtomicI64>,
    keys: Vec<Model>,
    tick: u64,
    expire: u64,
    wheel_tick: u64,
    tag: u64,
    done: bool,
    trace: VecDeque<String>,
    full_trace: bool,
}

/// The settings a seed picks from: (tick, expire) in nanoseconds.
const SETTINGS: [(u64, u64); 6] = [
    (1_000_000, 5_000_000),
    (10_000_000, 50_000_000),
    (80_000_000, 1_000_000_000),
    (15_000_000_000, 60_000_000_000),
    (1_000_000_000, 10_000_000),
    (8, 1_000), // a wheel tick of 1 ns
];

impl Sim {
    fn new(seed: u64, full_trace: bool) -> Sim {
        let mut rng = XorShift::new(seed);
        let (tick, expire) = SETTINGS[rng.below(SETTINGS.len() as u64) as usize];
        let wheel_tick = (tick / 8).max(1);
        let budget = [1, 7, 64, DEFAULT_JANITOR_BUDGET][rng.below(4) as usize];
        let clock = SimClock {
            nanos: Arc::new(AtomicU64::new(rng.below(expire * 3))),
            rng: Arc::new(Mutex::new(XorShift::new(seed ^ 0xC10C))),
            delay_one_in: [0, 4, 50][rng.below(3) as usize],
            max_delay: [wheel_tick, expire / 2, 3 * expire][rng.below(3) as usize],
        };
        let map = Builder::new(Duration::from_nanos(tick), Duration::from_nanos(expire))
            .clock(clock.clone())
            .manual()
            .janitor_budget(budget)
            .build()
            .expect("valid durations");
        let mut sim = Sim {
            seed,
            rng,
            clock,
            map,
            live: Arc::new(AtomicI64::new(0)),
            keys: vec![Model::default(); HOT_KEYS as usize],
            tick,
            expire,
            wheel_tick,
            tag: 0,
            done: false,
            trace: VecDeque::new(),
            full_trace,
        };
        sim.log(format!(
            "seed {seed}: tick {tick} ns, expire {expire} ns, budget {budget}, clock delays 1 in {} up to {} ns",
            sim.clock.delay_one_in, sim.clock.max_delay
        ));
        sim
    }

    fn log(&mut self, line: String) {
        if self.full_trace {
            println!("{line}");
        }
        self.trace.push_back(line);
        if self.trace.len() > 40 {
            self.trace.pop_front();
        }
    }

    fn fail(&self, what: String) -> ! {
        let trace: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        panic!(
            "seed {}: {what}\n  last calls:\n    {}\n  replay: SIM_SEED={} cargo test --test engine_simulation -- --nocapture",
            self.seed,
            trace.join("\n    "),
            self.seed
        );
    }

    fn now(&self) -> u64 {
        self.clock.now_ns()
    }

    /// The checks on an answer that returned the value tagged `seen`.
    fn check_hit(&self, key: u64, seen: u64, start: u64, what: &str) {
        let model = self.keys[key as usize];
        match model.present {
            Some(tag) if tag == seen => {}
            other => self.fail(format!("{what}({key}) returned tag {seen}, the model holds {other:?}")),
        }
        if start > model.touch_end + self.expire + self.tick {
            self.fail(format!(
                "LATE: {what}({key}) at {start} returned the entry last touched until {} (expire {} + tick {})",
                model.touch_end, self.expire, self.tick
            ));
        }
    }

    /// The check on an answer that found the key missing.
    fn check_miss(&self, key: u64, end: u64, what: &str) {
        let model = self.keys[key as usize];
        if model.present.is_some() && end < model.touch_start + self.expire {
            self.fail(format!(
                "PREMATURE: {what}({key}) missed at {end}, last touch began at {} (expire {})",
                model.touch_start, self.expire
            ));
        }
    }

    fn touched(&mut self, key: u64, start: u64, end: u64) {
        let model = &mut self.keys[key as usize];
        model.touch_start = start;
        model.touch_end = end;
    }

    fn set(&mut self, key: u64) {
        self.tag += 1;
        let value = Val::new(self.tag, &self.live);
        let start = self.now();
        self.map.set(key, value);
        let end = self.now();
        let tag = self.tag;
        self.keys[key as usize] = Model { present: Some(tag), in_table: true, touch_start: start, touch_end: end };
        self.log(format!("[{start}..{end}] set({key}) tag {tag}"));
    }

    fn get(&mut self, key: u64) {
        let start = self.now();
        let got = self.map.get(&key).map(|value| value.tag);
        let end = self.now();
        self.log(format!("[{start}..{end}] get({key}) -> {got:?}"));
        match got {
            Some(tag) => {
                self.check_hit(key, tag, start, "get");
                self.touched(key, start, end);
            }
            None => {
                self.check_miss(key, end, "get");
                self.keys[key as usize].present = None;
            }
        }
    }

    fn fetch_and_delete(&mut self, key: u64) {
        let start = self.now();
        let got = self.map.fetch_and_delete(&key).map(|value| value.tag);
        let end = self.now();
        self.log(format!("[{start}..{end}] fetch_and_delete({key}) -> {got:?}"));
        match got {
            Some(tag) => {
                self.check_hit(key, tag, start, "fetch_and_delete");
                self.keys[key as usize].present = None;
                self.keys[key as usize].in_table = false;
            }
            None => {
                self.check_miss(key, end, "fetch_and_delete");
                self.keys[key as usize].present = None;
            }
        }
    }

    fn delete(&mut self, key: u64) {
        let start = self.now();
        let live = self.map.delete(&key);
        let end = self.now();
        self.log(format!("[{start}..{end}] delete({key}) -> {live}"));
        let model = self.keys[key as usize];
        if live && (model.present.is_none() || start > model.touch_end + self.expire + self.tick) {
            self.fail(format!("LATE: delete({key}) at {start} removed a live entry the model holds dead"));
        }
        if !live {
            self.check_miss(key, end, "delete");
        }
        let model = &mut self.keys[key as usize];
        model.present = None;
        model.in_table = false;
    }

    /// Entries set once and never touched again.
    fn burst(&mut self) {
        let count = 1 + self.rng.below(300);
        let first = self.keys.len() as u64;
        self.log(format!("burst of {count} sets, keys {first}.."));
        for key in first..first + count {
            self.keys.push(Model::default());
            self.tag += 1;
            let value = Val::new(self.tag, &self.live);
            let start = self.now();
            self.map.set(key, value);
            let end = self.now();
            self.keys[key as usize] =
                Model { present: Some(self.tag), in_table: true, touch_start: start, touch_end: end };
        }
    }

    /// Janitor runs until nothing is left due; then what the map holds must match the model.
    fn janitor_cycle(&mut self) {
        let began = self.now();
        let mut runs = 0;
        loop {
            let run = self.map.run_janitor();
            runs += 1;
            if run.skipped {
                self.fail(format!("a janitor run was skipped before done: {run:?}"));
            }
            if !run.more_due {
                break;
            }
            if runs > 100_000 {
                self.fail(format!("the janitor never finished: {run:?}"));
            }
        }
        let ended = self.now();
        let len = self.map.len();
        let (expire, wheel_tick) = (self.expire, self.wheel_tick);
        let may_hold = self.keys.iter().filter(|m| m.in_table && m.touch_end + expire + wheel_tick > began).count();
        let must_hold =
            self.keys.iter().filter(|m| m.in_table && m.present.is_some() && m.touch_start + expire > ended).count();
        self.log(format!("[{began}..{ended}] janitor: {runs} runs; len {len}, model {must_hold}..={may_hold}"));
        if len > may_hold {
            let overdue: Vec<usize> = self
                .keys
                .iter()
                .enumerate()
                .filter(|(_, m)| m.in_table && m.touch_end + expire + wheel_tick <= began)
                .map(|(key, _)| key)
                .take(8)
                .collect();
            self.fail(format!(
                "STRANDED: after a janitor cycle from {began}, len {len} > {may_hold} entries that may be held \
                 (overdue keys, for instance: {overdue:?})"
            ));
        }
        if len < must_hold {
            self.fail(format!(
                "PREMATURE: a janitor cycle ending at {ended} left len {len} < {must_hold} live entries"
            ));
        }
    }

    fn step(&mut self) {
        let hot = self.rng.below(HOT_KEYS);
        match self.rng.below(100) {
            0..=24 => self.set(hot),
            25..=54 => self.get(hot),
            55..=61 => self.fetch_and_delete(hot),
            62..=66 => self.delete(hot),
            67..=84 => {
                let by = self.rng.below(2 * self.wheel_tick + 1);
                self.clock.advance(by);
            }
            85..=87 => {
                // A gap near the expiry of what was touched: both sides of the bounds.
                let by = self.expire - self.expire / 8 + self.rng.below(self.expire / 4 + self.tick + 1);
                self.clock.advance(by);
            }
            88..=93 if !self.done => self.janitor_cycle(),
            94..=96 if !self.done => {
                // A late janitor: the clock moves on a while with no run, then a cycle.
                let late = self.wheel_tick + self.rng.below(3 * (self.expire + self.tick));
                self.log(format!("janitor late by {late} ns"));
                self.clock.advance(late);
                self.janitor_cycle();
            }
            97..=98 => self.burst(),
            _ if !self.done && self.rng.below(8) == 0 => {
                self.log("done".to_string());
                self.map.done();
                self.done = true;
            }
            _ => {}
        }
    }

    /// Past every deadline: nothing held (unless `done` stopped the sweeping), and every
    /// value dropped once the map is gone.
    fn finish(mut self) {
        let last = self.keys.iter().map(|m| m.touch_end).max().unwrap_or(0);
        let now = self.now();
        let past = (last + self.expire + self.tick + 1).saturating_sub(now);
        self.clock.advance(past);
        if !self.done {
            self.janitor_cycle();
            if !self.map.is_empty() {
                let len = self.map.len();
                self.fail(format!("{len} entries held past every deadline"));
            }
        }
        let Sim { map, live, seed, .. } = self;
        drop(map);
        let alive = live.load(Ordering::SeqCst);
        assert_eq!(alive, 0, "seed {seed}: {alive} values alive after the map was dropped");
    }
}

fn run_seed(seed: u64, full_trace: bool) {
    let mut sim = Sim::new(seed, full_trace);
    let steps = 200 + sim.rng.below(400);
    for _ in 0..steps {
        sim.step();
    }
    sim.finish();
}

#[test]
fn seeded_schedules_keep_every_promise() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        run_seed(seed.parse().expect("SIM_SEED is a number"), true);
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS").map_or(4_000, |n| n.parse().expect("SIM_SEEDS is a number"));
    let mut summary = String::new();
    for seed in 0..seeds {
        run_seed(seed, false);
    }
    let _ = write!(summary, "{seeds} seeds passed");
    println!("{summary}");
}
