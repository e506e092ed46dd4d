//! Cholesky: LAPACK forward against the four reverse passes (recursive, symbolic,
//! blocked, unblocked), the block size of the blocked pass, the crossover that
//! `Method::Auto` uses at small n, and a DGEMM rate to put the reverse pass's GFLOP/s in
//! context.
//!
//! `OPENBLAS_NUM_THREADS=1 cargo bench --bench cholesky`; pass a filter such as
//! `-- /2000` to run one size. Flop counts (criterion's "elements"): forward `n³/3`;
//! every reverse pass `(2/3)n³`, the count of the recursive and the blocked passes, so
//! that the rates compare algorithms doing the same job; DGEMM `2n³`. The forward pass
//! and the recursive one (through the primitive, as `Method::Auto` runs it) each
//! allocate their result, as the blocked one's clone of `L̄` does.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use matgrad::blas::gemm;
use matgrad::check::random;
use matgrad::naive;
use matgrad::ops::cholesky::{backward_blocked, backward_symbolic, cholesky};
use matgrad::prelude::*;
use ndarray::Array2;
use std::hint::black_box;
use std::time::Duration;

const SIZES: [usize; 4] = [100, 500, 1000, 2000];
/// One unblocked call at n = 2000 takes several seconds.
const UNBLOCKED_MAX: usize = 1000;
const BLOCKS: [usize; 4] = [32, 64, 128, 256];
const SMALL: [usize; 6] = [16, 24, 32, 40, 48, 64];
const CONV: Convention = Convention::Symmetric;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

/// `(A, L, L̄)` at order `n`.
fn point(n: usize) -> (Array2<f64>, Array2<f64>, Array2<f64>) {
    let mut rng = random::rng(n as u64);
    let a = random::spd::<f64>(n, &mut rng);
    let l = cholesky(a.view()).unwrap();
    let lbar = random::randn::<f64>(n, n, &mut rng);
    (a, l, lbar)
}

fn cube(n: usize) -> u64 {
    (n as u64).pow(3)
}

fn forward_and_backward(c: &mut Criterion) {
    let mut g = c.benchmark_group("cholesky");
    for n in SIZES {
        let (a, l, lbar) = point(n);
        g.throughput(Throughput::Elements(cube(n) / 3));
        g.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
            b.iter(|| cholesky(black_box(a.view())).unwrap())
        });
        g.throughput(Throughput::Elements(2 * cube(n) / 3));
        let out = Cholesky::new()
            .convention(CONV)
            .method(Method::Recursive)
            .apply([a.view()])
            .unwrap();
        g.bench_with_input(BenchmarkId::new("recursive", n), &n, |b, _| {
            b.iter(|| out.backward(black_box(lbar.view())).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("symbolic", n), &n, |b, _| {
            b.iter(|| backward_symbolic(black_box(l.view()), black_box(lbar.view()), CONV).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("blocked", n), &n, |b, _| {
            b.iter_batched(
                || lbar.clone(),
                |lb| {
                    backward_blocked(black_box(l.view()), lb, Method::DEFAULT_BLOCK, CONV).unwrap()
                },
                BatchSize::LargeInput,
            )
        });
        if n <= UNBLOCKED_MAX {
            g.bench_with_input(BenchmarkId::new("unblocked", n), &n, |b, _| {
                b.iter(|| {
                    naive::cholesky::cholesky_backward(black_box(l.view()), black_box(lbar.view()))
                        .unwrap()
                })
            });
        }
    }
    g.finish();
}

fn block_size(c: &mut Criterion) {
    let mut g = c.benchmark_group("cholesky_block");
    for n in [500, 2000] {
        let (_, l, lbar) = point(n);
        g.throughput(Throughput::Elements(2 * cube(n) / 3));
        for block in BLOCKS {
            g.bench_with_input(
                BenchmarkId::new(format!("n{n}"), block),
                &block,
                |b, &block| {
                    b.iter_batched(
                        || lbar.clone(),
                        |lb| backward_blocked(black_box(l.view()), lb, block, CONV).unwrap(),
                        BatchSize::LargeInput,
                    )
                },
            );
        }
    }
    g.finish();
}

/// The whole reverse pass through the primitive, as `Method::Auto` would choose it.
fn small_sizes(c: &mut Criterion) {
    let mut g = c.benchmark_group("cholesky_small");
    for n in SMALL {
        let (a, _, lbar) = point(n);
        for (name, method) in [
            ("unblocked", Method::Unblocked),
            ("recursive", Method::Recursive),
            ("blocked", Method::blocked()),
        ] {
            let out = Cholesky::new().method(method).apply([a.view()]).unwrap();
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| out.backward(black_box(lbar.view())).unwrap())
            });
        }
    }
    g.finish();
}

fn dgemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("dgemm");
    for n in [500, 2000] {
        let mut rng = random::rng(7);
        let x = random::randn::<f64>(n, n, &mut rng);
        let y = random::randn::<f64>(n, n, &mut rng);
        let mut z = Array2::<f64>::zeros((n, n));
        g.throughput(Throughput::Elements(2 * cube(n)));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| gemm(z.view_mut(), Accum::Replace, x.view(), y.view(), 1.0).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = forward_and_backward, block_size, small_sizes, dgemm
}
criterion_main!(benches);
