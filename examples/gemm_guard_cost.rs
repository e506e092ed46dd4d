//! What guarding every product against partial-sum overflow would cost: the time of a
//! magnitude scan of both operands (the largest |aᵢⱼ| and |bᵢⱼ|, in eight running
//! maxima, as the crate's scaled solves scan) against the GEMM itself, at orders 8 to
//! 256, f64, medians of 15 rounds (`docs/math.md`, "Products near the overflow
//! threshold"):
//!
//! ```text
//! OPENBLAS_NUM_THREADS=1 cargo run --release --example gemm_guard_cost
//! ```
use matgrad::blas::gemm;
use matgrad::check::random;
use matgrad::prelude::*;
use ndarray::Array2;
use std::hint::black_box;
use std::time::Instant;

/// The largest magnitude in `x`, in eight running maxima side by side.
fn max_abs(x: &[f64]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks
        .remainder()
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = l.max(v.abs());
        }
    }
    lanes.iter().fold(rest, |m, &l| m.max(l))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    println!("| n | GEMM | scan of both operands | scan / GEMM |\n|---:|---:|---:|---:|");
    for n in [8usize, 16, 32, 64, 128, 256] {
        let mut rng = random::rng(n as u64);
        let a = random::randn::<f64>(n, n, &mut rng);
        let b = random::randn::<f64>(n, n, &mut rng);
        let mut c = Array2::<f64>::zeros((n, n));
        let (sa, sb) = (a.as_slice().unwrap(), b.as_slice().unwrap());
        let reps = (20_000_000 / (n * n * n)).max(20);
        let (mut tg, mut ts) = (vec![], vec![]);
        for _ in 0..15 {
            let s = Instant::now();
            for _ in 0..reps {
                gemm(c.view_mut(), Accum::Replace, a.view(), b.view(), 1.0).unwrap();
            }
            tg.push(s.elapsed().as_secs_f64() / reps as f64);
            let s = Instant::now();
            for _ in 0..reps {
                black_box(max_abs(black_box(sa)) * max_abs(black_box(sb)));
            }
            ts.push(s.elapsed().as_secs_f64() / reps as f64);
        }
        let (g, s) = (median(tg), median(ts));
        println!(
            "| {n} | {:.2} µs | {:.3} µs | {:.1}% |",
            g * 1e6,
            s * 1e6,
            100.0 * s / g
        );
    }
}
