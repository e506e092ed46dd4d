//! Fuzzing every primitive and method: random primitives and configurations, shapes
//! (empty, 1×1, mismatched), layouts (transposed, stepped, reversed, windows, zero-stride
//! broadcasts), values (NaN, ±∞, subnormal, near the overflow threshold, singular,
//! indefinite) and methods (forward, `forward_into`, backward in every buffer mode,
//! `backward_add`, jvp, `jvp_into`, the typed layer, the checker), each call judged as
//!
//! - a typed error, for an input the harness knows to be invalid (its own shape rule
//!   and value checks, `prims.rs`), or
//! - an answer that agrees with `f64` references from scalar loops (`naive` and
//!   `linalg.rs`), residual checks, finite differences, the adjoint identity, and the
//!   invariants (views and contiguous copies, first writes and additions, caller
//!   workspaces), with no NaN or infinity from finite inputs where the reference is
//!   finite;
//!
//! and anything else, a panic included, is a failure reported with its seed.
//!
//! `cargo test` runs a short deterministic run. A long one, for ten minutes:
//!
//! ```text
//! cargo test --release --test fuzz -- --seconds 600
//! ```
//!
//! Options: `--seconds N`, `--cases N`, `--seed S` (of the run), `--replay SEED` (one
//! case, verbosely, as printed with a failure), `--f32` or `--f64` only, `--strict`
//! (the known failures listed below fail the run too), `--threads N` (one per core
//! unless given; the cases are shared out among them).

// `!(error <= allowed)` is the point: a NaN error must fail every comparison.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod gen;
mod linalg;
mod prims;
mod run;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Failures found and not yet fixed: (primitive, failure class, method, value class of
/// an input that triggers it; "" matches any). Reported as known, they fail the run
/// only with `--strict`. Each entry is to be deleted with its fix.
const KNOWN: &[(&str, &str, &str, &str)] = &[
    // Triangular solves with a subnormal diagonal (TRSM through its reciprocal, which
    // overflows) would give NaN where the solution is finite (zero for a zero right
    // side). They are rejected instead, as IllConditioned at that diagonal entry, which
    // the harness accepts (the inverse overflows): solving with an exactly scaled
    // factor, so that such solutions are returned, is not done yet.
    ("ChoSolve", "non-finite from finite", "", "Subnormal"),
    ("TriSolve", "non-finite from finite", "", "Subnormal"),
];

fn known(prim: &str, what: &str, method: &str, classes: &[gen::Values]) -> bool {
    KNOWN.iter().any(|&(p, w, m, c)| {
        p == prim
            && w == what
            && method.starts_with(m)
            && (c.is_empty() || classes.iter().any(|v| format!("{v:?}") == c))
    })
}

/// Cases of the run under `cargo test`: a few seconds.
const DEFAULT_CASES: u64 = 3000;

thread_local! {
    static PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

struct Options {
    seconds: Option<f64>,
    cases: Option<u64>,
    seed: u64,
    replay: Option<u64>,
    only: Option<&'static str>,
    strict: bool,
    threads: Option<usize>,
}

fn parse() -> Option<Options> {
    let mut o = Options {
        seconds: None,
        cases: None,
        seed: 0x6675_7a7a,
        replay: None,
        only: None,
        strict: false,
        threads: None,
    };
    let mut args = std::env::args().skip(1);
    let num = |s: Option<String>| -> u64 {
        let s = s.expect("a number after the option");
        match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).expect("a hexadecimal number"),
            None => s.parse().expect("a number"),
        }
    };
    let mut filters = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => {
                o.seconds = Some(args.next().and_then(|s| s.parse().ok()).expect("seconds"))
            }
            "--cases" => o.cases = Some(num(args.next())),
            "--threads" => o.threads = Some(num(args.next()).max(1) as usize),
            "--seed" => o.seed = num(args.next()),
            "--replay" => o.replay = Some(num(args.next())),
            "--f32" => o.only = Some("f32"),
            "--f64" => o.only = Some("f64"),
            "--strict" => o.strict = true,
            "--list" => {
                println!("fuzz: test");
                return None;
            }
            "--ignored" => return None,
            s if s.starts_with('-') => {}
            s => filters.push(s.to_string()),
        }
    }
    // As a test binary it honours `cargo test FILTER`: run only if a filter matches.
    if !filters.is_empty() && !filters.iter().any(|f| "fuzz".contains(f.as_str())) {
        return None;
    }
    Some(o)
}

fn precision(seed: u64, only: Option<&str>) -> &'static str {
    match only {
        Some("f32") => "f32",
        Some(_) => "f64",
        None if seed & 1 == 0 => "f64",
        None => "f32",
    }
}

fn run_one(seed: u64, prec: &str, verbose: bool) -> Result<run::Case, (String, String)> {
    PANIC.with(|p| p.borrow_mut().take());
    let r = panic::catch_unwind(AssertUnwindSafe(|| {
        if prec == "f32" {
            run::run_case::<f32>(seed, verbose)
        } else {
            run::run_case::<f64>(seed, verbose)
        }
    }));
    r.map_err(|_| {
        PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| ("?".into(), "panic without a message".into()))
    })
}

/// Failures of one kind: how many, and the first case (by index in the run) that
/// showed it.
struct Group {
    count: u64,
    first: u64,
    seed: u64,
    prec: &'static str,
    spec: String,
    detail: String,
    known: bool,
}

/// What the cases a thread ran found.
#[derive(Default)]
struct Tally {
    cases: u64,
    calls: u64,
    outcomes: BTreeMap<String, BTreeMap<&'static str, u64>>,
    groups: BTreeMap<(String, &'static str, String), Group>,
    scenarios: BTreeMap<&'static str, u64>,
}

impl Tally {
    /// Counts case `i` of the run, of this seed and precision.
    fn add(
        &mut self,
        i: u64,
        seed: u64,
        prec: &'static str,
        result: Result<run::Case, (String, String)>,
    ) {
        self.cases += 1;
        match result {
            Ok(case) => {
                self.calls += case.calls;
                *self.scenarios.entry(case.scenario).or_default() += 1;
                let per = self.outcomes.entry(case.prim.clone()).or_default();
                for oc in &case.outcomes {
                    *per.entry(oc).or_default() += 1;
                }
                for f in case.failures {
                    *per.entry("FAILED").or_default() += 1;
                    let key = (case.prim.clone(), f.what, f.method.to_string());
                    let known = known(&case.prim, f.what, f.method, &case.classes);
                    let g = self.groups.entry(key).or_insert_with(|| Group {
                        count: 0,
                        first: i,
                        seed,
                        prec,
                        spec: format!(
                            "{} shapes {:?} classes {:?} layouts {:?} [{}]",
                            case.spec, case.shapes, case.classes, case.layouts, case.scenario
                        ),
                        detail: f.detail.clone(),
                        known,
                    });
                    g.count += 1;
                }
            }
            Err((loc, msg)) => {
                self.calls += 1;
                let harness = loc.contains("tests/fuzz");
                let what = if harness {
                    "panic in the harness"
                } else {
                    "panic"
                };
                let (prim, spec) = run::describe(seed);
                let key = (prim, what, loc.clone());
                let g = self.groups.entry(key).or_insert_with(|| Group {
                    count: 0,
                    first: i,
                    seed,
                    prec,
                    spec,
                    detail: format!("{loc}: {msg}"),
                    known: false,
                });
                g.count += 1;
            }
        }
    }

    /// Both tallies in one; of a kind of failure both saw, the first case of the run
    /// is the one reported.
    fn merge(mut self, other: Tally) -> Tally {
        self.cases += other.cases;
        self.calls += other.calls;
        for (prim, per) in other.outcomes {
            let mine = self.outcomes.entry(prim).or_default();
            for (k, v) in per {
                *mine.entry(k).or_default() += v;
            }
        }
        for (k, v) in other.scenarios {
            *self.scenarios.entry(k).or_default() += v;
        }
        for (key, g) in other.groups {
            match self.groups.get_mut(&key) {
                Some(mine) if mine.first < g.first => mine.count += g.count,
                Some(mine) => {
                    let count = mine.count + g.count;
                    *mine = Group { count, ..g };
                }
                None => {
                    self.groups.insert(key, g);
                }
            }
        }
        self
    }
}

fn main() {
    let Some(o) = parse() else { return };
    panic::set_hook(Box::new(|info| {
        let loc = info
            .location()
            .map_or_else(|| "?".to_string(), |l| format!("{}:{}", l.file(), l.line()));
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        PANIC.with(|p| *p.borrow_mut() = Some((loc, msg)));
    }));

    if let Some(seed) = o.replay {
        let prec = precision(seed, o.only);
        match run_one(seed, prec, true) {
            Ok(case) => {
                for l in &case.log {
                    println!("{l}");
                }
                println!(
                    "{} calls; outcomes {:?}; {} failures",
                    case.calls,
                    case.outcomes,
                    case.failures.len()
                );
                std::process::exit(i32::from(!case.failures.is_empty()));
            }
            Err((loc, msg)) => {
                println!("panic at {loc}: {msg}");
                std::process::exit(1);
            }
        }
    }

    let deadline = o.seconds.map(Duration::from_secs_f64);
    let max_cases = o.cases.unwrap_or(if deadline.is_some() {
        u64::MAX
    } else {
        DEFAULT_CASES
    });
    // The cases are shared out among one thread per core, each taking the next case
    // index as it finishes one; the tallies are merged by case index, so that a run of
    // a given number of cases reports the same whatever the number of threads.
    let threads = o
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let next = AtomicU64::new(0);
    let start = Instant::now();
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let next = &next;
                scope.spawn(move || {
                    // The case each thread is running, for a process that dies
                    // without returning.
                    let marker = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                        .join(format!("fuzz-current-case-{t}"));
                    let mut marker_file = std::fs::File::create(&marker).ok();
                    let mut tally = Tally::default();
                    while deadline.map_or(true, |d| start.elapsed() < d) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= max_cases {
                            break;
                        }
                        let seed = splitmix(o.seed ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d));
                        let prec = precision(seed, o.only);
                        if let Some(f) = marker_file.as_mut() {
                            use std::io::Seek;
                            let _ = f.seek(std::io::SeekFrom::Start(0));
                            let _ = writeln!(f, "--replay {seed:#018x}");
                        }
                        tally.add(i, seed, prec, run_one(seed, prec, false));
                    }
                    let _ = std::fs::remove_file(&marker);
                    tally
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a fuzz thread panicked outside a case"))
            .collect()
    });
    let Tally {
        cases,
        calls,
        outcomes,
        groups,
        scenarios,
    } = tallies.into_iter().fold(Tally::default(), Tally::merge);
    let secs = start.elapsed().as_secs_f64();

    println!(
        "fuzz: {cases} cases, {calls} calls in {secs:.1} s on {threads} threads ({:.0} calls per minute), run seed {:#x}",
        calls as f64 / secs * 60.0,
        o.seed
    );
    println!("scenarios: {scenarios:?}");
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    for per in outcomes.values() {
        for (k, v) in per {
            *totals.entry(k).or_default() += v;
        }
    }
    println!("outcomes: {totals:?}");
    if std::env::var_os("FUZZ_PER_PRIMITIVE").is_some() {
        for (p, per) in &outcomes {
            println!("  {p}: {per:?}");
        }
    }
    let mut failed = 0;
    for ((prim, what, method), g) in &groups {
        let tag = if g.known && !o.strict {
            "known"
        } else {
            "FAILURE"
        };
        if !g.known || o.strict {
            failed += g.count;
        }
        println!(
            "{tag}: {what} in {prim} ({method}) ×{}\n    reproduce: cargo test --release --test fuzz -- --replay {:#018x}{}\n    {} [{}]\n    {}",
            g.count,
            g.seed,
            if o.only.is_some() { format!(" --{}", g.prec) } else { String::new() },
            g.spec,
            g.prec,
            g.detail
        );
    }
    if failed > 0 {
        println!("fuzz: {failed} failures");
        std::process::exit(1);
    }
}
