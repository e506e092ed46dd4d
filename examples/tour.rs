//! A tour of every primitive: the shared checker's verdict on its rules at small
//! random non-square inputs, and its forward and backward times at a working size.
//!
//! Run: `cargo run --release --example tour`

use matgrad::check::{random, Checker};
use matgrad::prelude::*;
use ndarray::{Array2, ArrayView2, Order};
use rand::rngs::StdRng;
use std::time::Instant;

/// Size at which every primitive is checked.
const CHECK_N: usize = 5;

/// One row of the tour: a primitive and how to make its inputs at size `n`.
struct Entry {
    prim: Box<dyn Rule<f64>>,
    inputs: fn(usize, &mut StdRng) -> Vec<Array2<f64>>,
    /// Size used for timing (0: not timed).
    time_n: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<F: FnMut() -> matgrad::Result<()>>(reps: usize, mut f: F) -> matgrad::Result<f64> {
    f()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        t.push(start.elapsed().as_secs_f64());
    }
    Ok(median(t))
}

fn fmt_time(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}

fn two(n: usize, m: usize, rng: &mut StdRng) -> Vec<Array2<f64>> {
    vec![random::randn(n, m, rng), random::randn(n, m, rng)]
}

fn entries() -> Vec<Entry> {
    let e = |prim: Box<dyn Rule<f64>>,
             inputs: fn(usize, &mut StdRng) -> Vec<Array2<f64>>,
             time_n| Entry {
        prim,
        inputs,
        time_n,
    };
    let nonsq = |n: usize, rng: &mut StdRng| vec![random::randn(n, n + 3, rng)];
    let positive = |n: usize, rng: &mut StdRng| {
        vec![random::uniform(n, n + 3, 0.5, 2.0, rng).expect("a nonempty range")]
    };
    let spd = |n: usize, rng: &mut StdRng| vec![random::spd(n, rng)];
    let lower = |n: usize, rng: &mut StdRng| vec![random::lower(n, rng)];
    let lower_and_rhs =
        |n: usize, rng: &mut StdRng| vec![random::lower(n, rng), random::randn(n, n / 2 + 1, rng)];
    vec![
        e(
            Box::new(MatMul::nn()),
            |n, r| vec![random::randn(n, n + 2, r), random::randn(n + 2, n + 1, r)],
            512,
        ),
        e(
            Box::new(MatMul::tn()),
            |n, r| vec![random::randn(n + 2, n, r), random::randn(n + 2, n + 1, r)],
            512,
        ),
        e(
            Box::new(MatMul::nt()),
            |n, r| vec![random::randn(n, n + 2, r), random::randn(n + 1, n + 2, r)],
            512,
        ),
        e(Box::new(Add), |n, r| two(n, n + 3, r), 512),
        e(
            Box::new(AddBias),
            |n, r| vec![random::randn(n, n + 3, r), random::randn(n, 1, r)],
            512,
        ),
        e(Box::new(Transpose), nonsq, 512),
        e(Box::new(Tril::new(-1)), nonsq, 512),
        e(Box::new(Triu::new(1)), nonsq, 512),
        e(Box::new(Vectorize), nonsq, 512),
        e(
            Box::new(Reshape::new(3, 8, Order::ColumnMajor)),
            |_, r| vec![random::randn(4, 6, r)],
            0,
        ),
        e(Box::new(Map(Tanh)), nonsq, 512),
        e(Box::new(Map(Sigmoid)), nonsq, 512),
        e(Box::new(Map(Relu)), nonsq, 512),
        e(Box::new(Map(Exp)), nonsq, 512),
        e(Box::new(Map(Log)), positive, 512),
        e(Box::new(Map(Sin)), nonsq, 512),
        e(Box::new(Map(Cos)), nonsq, 512),
        e(Box::new(Map(Square)), nonsq, 512),
        e(Box::new(Hadamard), |n, r| two(n, n + 3, r), 512),
        e(Box::new(Cholesky::new()), spd, 1000),
        e(
            Box::new(Cholesky::new().convention(Convention::Lower)),
            spd,
            1000,
        ),
        e(
            Box::new(TriSolve::new(Side::Left, Trans::No, Uplo::Lower)),
            lower_and_rhs,
            1000,
        ),
        e(
            Box::new(TriSolve::new(Side::Right, Trans::Yes, Uplo::Lower)),
            |n, r| vec![random::lower(n, r), random::randn(n / 2 + 1, n, r)],
            1000,
        ),
        e(Box::new(ChoSolve), lower_and_rhs, 1000),
        e(Box::new(CholLogDet), lower, 1000),
    ]
}

fn shapes(xs: &[Array2<f64>]) -> String {
    xs.iter()
        .map(|x| format!("{}×{}", x.nrows(), x.ncols()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() -> matgrad::Result<()> {
    println!("matgrad tour: every primitive, checked in f64 at small random non-square inputs,");
    println!("then timed at a working size (median of repeated runs, BLAS threads as set by OPENBLAS_NUM_THREADS).");
    // Backend, kernel and threads, with a one-line warning when OpenBLAS runs a kernel
    // older than the CPU supports.
    println!("runs on: {}\n", matgrad::runtime());
    println!(
        "{:<26} {:<13} {:>9} {:>9} {:>9} {:>6}  {:<16} {:>10} {:>10} {:>7}",
        "primitive",
        "checked at",
        "VJP err",
        "JVP err",
        "adjoint",
        "",
        "timed at",
        "forward",
        "backward",
        "bwd/fwd"
    );
    let mut failures = 0;
    let mut rng = random::rng(2024);
    for entry in entries() {
        let p = entry.prim.as_ref();
        let xs = (entry.inputs)(CHECK_N, &mut rng);
        let views: Vec<ArrayView2<'_, f64>> = xs.iter().map(|x| x.view()).collect();
        let report = Checker::new().check(p, &views)?;
        let worst = |f: fn(&matgrad::check::InputReport) -> f64| {
            report.inputs.iter().map(f).fold(0.0, f64::max)
        };
        let status = if report.passed() { "ok" } else { "FAILED" };
        if !report.passed() {
            failures += 1;
        }
        let (timed_at, fwd, bwd) = if entry.time_n > 0 {
            let xs = (entry.inputs)(entry.time_n, &mut rng);
            let views: Vec<ArrayView2<'_, f64>> = xs.iter().map(|x| x.view()).collect();
            let y = p.forward(&views)?;
            let ys: Vec<ArrayView2<'_, f64>> = y.iter().map(|c| c.view()).collect();
            let cbar = random::randn::<f64>(y[0].nrows(), y[0].ncols(), &mut rng);
            let reps = if entry.time_n >= 1000 { 5 } else { 11 };
            let fwd = time(reps, || p.forward(&views).map(drop))?;
            let bwd = time(reps, || {
                p.backward(&views, &ys, &[Some(cbar.view())]).map(drop)
            })?;
            (
                shapes(&xs),
                fmt_time(fwd),
                format!("{} {:>7.2}", fmt_time(bwd), bwd / fwd),
            )
        } else {
            ("-".into(), "-".into(), "-".into())
        };
        println!(
            "{:<26} {:<13} {:>9.1e} {:>9.1e} {:>9.1e} {:>6}  {:<16} {:>10} {:>18}",
            p.name(),
            shapes(&xs),
            worst(|r| r.vjp_error),
            worst(|r| r.jvp_error),
            report.adjoint_error,
            status,
            timed_at,
            fwd,
            bwd
        );
        if !report.passed() {
            println!("{report}");
        }
    }
    println!("\nVJP/JVP err: relative error against Richardson-extrapolated central differences, worst over inputs and random directions.");
    println!("adjoint: relative error of ⟨C̄,Ċ⟩ = Σ⟨X̄ᵢ,Ẋᵢ⟩, exact up to rounding.");
    if failures > 0 {
        eprintln!("{failures} primitive(s) failed their checks");
        std::process::exit(1);
    }
    Ok(())
}
