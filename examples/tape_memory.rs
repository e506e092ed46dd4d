//! Peak memory and time of a training step's gradient on a deep tanh chain, on the
//! plain tape and with checkpointed segments ([`Tape::checkpoint`]).
//!
//! `OPENBLAS_NUM_THREADS=1 cargo run --release --example tape_memory`
//!
//! The model: 32 layers `H' = tanh(WH + b1ᵀ)` of width 256 on a batch of 256, then the
//! softmax cross-entropy. A step records the forward pass and sweeps it backward into
//! preallocated gradient buffers (`Tape::backward_into`); the tape is dropped at the
//! end. Peak memory is measured, not estimated: a counting global allocator follows the
//! live bytes of this thread and their peak above the level at the start of the step
//! (the parameters and the gradient buffers exist before it; OpenBLAS's own buffers
//! come from its own allocator and are not counted). Times are the median of several
//! steps.

use matgrad::check::random;
use matgrad::nn::glorot_uniform;
use matgrad::prelude::*;
use ndarray::{ArcArray2, Array2};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Instant;

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(grow: usize, shrink: usize) {
    let _ = LIVE.try_with(|l| {
        let live = l.get() + grow as isize - shrink as isize;
        l.set(live);
        let _ = PEAK.try_with(|p| p.set(p.get().max(live)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 0);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 0);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size, layout.size());
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, layout.size());
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak live bytes above the level at the start of `f`.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    (r, (PEAK.with(Cell::get) - start).max(0) as usize)
}

const DEPTH: usize = 32;
const WIDTH: usize = 256;
const RUNS: usize = 9;

struct Deep {
    x: ArcArray2<f64>,
    params: Vec<ArcArray2<f64>>,
    labels: Vec<usize>,
}

impl Deep {
    fn new(seed: u64) -> Self {
        let mut rng = random::rng(seed);
        let params = (0..DEPTH)
            .flat_map(|_| {
                [
                    glorot_uniform(WIDTH, WIDTH, &mut rng).into_shared(),
                    (random::randn(WIDTH, 1, &mut rng) * 0.1).into_shared(),
                ]
            })
            .collect();
        Deep {
            x: random::randn(WIDTH, WIDTH, &mut rng).into_shared(),
            params,
            labels: (0..WIDTH).map(|j| (j * 5 + 1) % WIDTH).collect(),
        }
    }

    /// One step: record (in segments of `segment` layers, 0 for none), then the
    /// reverse sweep into `grads`.
    fn step(&self, grads: &mut [Array2<f64>], segment: usize) -> matgrad::Result<()> {
        let mut tape = Tape::new();
        let mut h = tape.constant(self.x.clone());
        let params: Vec<Var> = self.params.iter().map(|p| tape.leaf(p.clone())).collect();
        let layer = |t: &mut Tape<f64>, h: Var, wb: &[Var]| -> matgrad::Result<Var> {
            let z = t.apply1(MatMul::nn(), &[wb[0], h])?;
            let a = t.apply1(AddBias, &[z, wb[1]])?;
            t.apply1(Map(Tanh), &[a])
        };
        if segment == 0 {
            for wb in params.chunks(2) {
                h = layer(&mut tape, h, wb)?;
            }
        } else {
            for seg in params.chunks(2 * segment) {
                let mut inputs = vec![h];
                inputs.extend_from_slice(seg);
                h = tape.checkpoint("segment", &inputs, |t, v| {
                    let mut h = v[0];
                    for wb in v[1..].chunks(2) {
                        h = layer(t, h, wb)?;
                    }
                    Ok(vec![h])
                })?[0];
            }
        }
        let loss = tape.apply1(SoftmaxCrossEntropy::new(self.labels.clone()), &[h])?;
        let one = Array2::ones((1, 1));
        let mut g: Vec<(Var, Grad<'_, f64>)> = params
            .iter()
            .zip(grads.iter_mut())
            .map(|(&v, g)| (v, Grad::Write(g.view_mut())))
            .collect();
        tape.backward_into(&[(loss, one.view())], &mut g)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> matgrad::Result<()> {
    let threads = std::env::var("OPENBLAS_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    println!(
        "{DEPTH}-layer tanh chain, width {WIDTH}, batch {WIDTH}; OPENBLAS_NUM_THREADS={threads}"
    );
    let deep = Deep::new(8);
    let mut grads: Vec<Array2<f64>> = deep
        .params
        .iter()
        .map(|p| Array2::zeros(p.raw_dim()))
        .collect();
    let (r, plain_peak) = peak_of(|| deep.step(&mut grads, 0));
    r?;
    let mut rows = vec![("plain", 0, plain_peak)];
    for segment in [4, 6, 8] {
        let (r, peak) = peak_of(|| deep.step(&mut grads, segment));
        r?;
        rows.push(("checkpointed", segment, peak));
    }
    let time = |segment: usize, grads: &mut [Array2<f64>]| -> matgrad::Result<f64> {
        let mut t = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let start = Instant::now();
            deep.step(grads, segment)?;
            t.push(start.elapsed().as_secs_f64());
        }
        Ok(median(t))
    };
    // Interleaved, so that drift of a shared machine hits both alike.
    let mut times = vec![Vec::new(); rows.len()];
    for _ in 0..3 {
        for (k, &(_, segment, _)) in rows.iter().enumerate() {
            times[k].push(time(segment, &mut grads)?);
        }
    }
    let plain_time = median(times[0].clone());
    println!(
        "{:<14} {:>8} {:>12} {:>8} {:>10} {:>8}",
        "tape", "segment", "peak bytes", "memory", "median ms", "time"
    );
    for (k, &(name, segment, peak)) in rows.iter().enumerate() {
        let t = median(times[k].clone());
        println!(
            "{:<14} {:>8} {:>12} {:>7.1}% {:>10.2} {:>7.2}×",
            name,
            segment,
            peak,
            100.0 * peak as f64 / plain_peak as f64,
            1e3 * t,
            t / plain_time
        );
    }
    Ok(())
}
