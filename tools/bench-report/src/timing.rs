//! Timing: the interleaved harness of the report ([`time_together`]) and the
//! budgeted loop of the peer timings ([`measure`]), both reporting medians.

use std::hint::black_box;
use std::time::Instant;

/// One timed case: a call whose result is passed through `black_box` and dropped.
pub type Case<'a> = Box<dyn FnMut() + 'a>;

/// Wraps a call as a [`Case`].
pub fn case<'a, R>(mut f: impl FnMut() -> R + 'a) -> Case<'a> {
    Box::new(move || {
        black_box(f());
    })
}

/// The median, the mean of the two middle values for an even count (sorts `xs`).
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        0.5 * (xs[m - 1] + xs[m])
    }
}

/// Median seconds per call of each case, timed in interleaved rounds so that a change
/// in machine load shifts all of them alike (ratios between cases are what the report
/// is about). Calls under a millisecond are repeated in batches of about 2 ms so the
/// clock and the loop do not show.
///
/// Each timed batch follows one untimed call of the same case, so that every case is
/// timed in its own steady state: otherwise the case that runs after one which freed
/// more memory pays for the allocator giving pages back to the system and faulting them
/// in again (about 10% of a 1024×1024 product), and the order of the cases in a round
/// would show in the ratios. Cases of half a second or more skip that call, and their
/// first call counts as a sample.
pub fn time_together(budget: f64, cases: &mut [Case<'_>]) -> Timings {
    const LONG: f64 = 0.5;
    let mut batch = Vec::with_capacity(cases.len());
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for (c, s) in cases.iter_mut().zip(samples.iter_mut()) {
        let t = Instant::now();
        c();
        let mut first = t.elapsed().as_secs_f64();
        if first >= LONG {
            s.push(first);
        } else {
            // The batch size comes from a second call: the first one also pays for
            // faulting in pages of buffers allocated but never written (a zeroed output
            // of 2 MB takes about as long to fault in as to copy), and sized by it the
            // batches of a short case would be a single call.
            let t = Instant::now();
            c();
            first = t.elapsed().as_secs_f64();
        }
        batch.push((
            (2e-3 / first.max(1e-9)).ceil().max(1.0) as usize,
            first < LONG,
        ));
    }
    let round_cost: f64 = samples
        .iter()
        .map(|s| s.first().copied().unwrap_or(0.0))
        .sum();
    let (min_rounds, max_rounds) = if round_cost >= LONG { (3, 3) } else { (7, 41) };
    let start = Instant::now();
    loop {
        let done = samples.iter().map(Vec::len).min().unwrap_or(0);
        if done >= max_rounds || (done >= min_rounds && start.elapsed().as_secs_f64() >= budget) {
            break;
        }
        for ((c, s), &(k, warm)) in cases.iter_mut().zip(samples.iter_mut()).zip(&batch) {
            if s.len() > done {
                continue;
            }
            if warm {
                c();
            }
            let t = Instant::now();
            for _ in 0..k {
                c();
            }
            s.push(t.elapsed().as_secs_f64() / k as f64);
        }
    }
    Timings(samples)
}

/// Seconds per call, one row per case and one column per round.
pub struct Timings(Vec<Vec<f64>>);

impl Timings {
    /// Median seconds per call of `case`.
    pub fn median(&self, case: usize) -> f64 {
        median(&mut self.0[case].clone())
    }
    /// Median over rounds of `case / base` timed in the same round, steadier under a
    /// changing load than the ratio of the two medians.
    pub fn ratio(&self, case: usize, base: usize) -> f64 {
        let mut r: Vec<f64> = self.0[case]
            .iter()
            .zip(&self.0[base])
            .map(|(a, b)| a / b)
            .collect();
        median(&mut r)
    }
}

/// Median seconds per call of one case, timed on its own.
pub fn time_one(budget: f64, c: Case<'_>) -> f64 {
    time_together(budget, &mut [c]).median(0)
}

/// Median wall time of `run` after one untimed call, and the number of timed calls,
/// with the stopping rule of `benches/peers/peers.py`: at least `min_reps`, at most
/// `max_reps`, no new call once `budget` seconds are spent.
pub fn measure<R, E>(
    min_reps: usize,
    max_reps: usize,
    budget: f64,
    mut run: impl FnMut() -> Result<R, E>,
) -> Result<(f64, usize), E> {
    run()?;
    let mut times = Vec::with_capacity(max_reps);
    let mut spent = 0.0;
    while times.len() < max_reps && (times.len() < min_reps || spent < budget) {
        let t0 = Instant::now();
        black_box(run()?);
        let dt = t0.elapsed().as_secs_f64();
        times.push(dt);
        spent += dt;
    }
    let reps = times.len();
    Ok((median(&mut times), reps))
}
