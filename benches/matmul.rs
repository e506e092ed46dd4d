//! MatMul through the primitive (BLAS) against the naive loops, against raw ndarray
//! `dot`, backward against forward, and the fixed cost of the primitive at small n.
//!
//! `cargo bench --bench matmul`. The OpenBLAS thread count follows
//! `OPENBLAS_NUM_THREADS` and its kernel `OPENBLAS_CORETYPE`: Debian's OpenBLAS 0.3.21
//! runs recent Intel CPUs on its generic Prescott kernel unless told `SkylakeX` or
//! `Haswell` (the report program chooses by itself). Sample counts are small so the
//! whole file runs in a few minutes on two cores; `cargo run --release -p bench-report`
//! (`tools/bench-report`) gives the summary table.

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use matgrad::check::random;
use matgrad::naive;
use matgrad::prelude::*;
use ndarray::{Array2, ArrayView2};
use std::hint::black_box;
use std::time::Duration;

const SIZES: [usize; 5] = [16, 64, 256, 512, 1024];
/// Beyond these sizes one naive call takes seconds; the report extrapolates nothing.
const NAIVE_IJK_MAX: usize = 512;
const NAIVE_IKJ_MAX: usize = 1024;
const NAIVE_BACKWARD_MAX: usize = 512;

fn inputs(n: usize, seed: u64) -> (Array2<f64>, Array2<f64>, Array2<f64>) {
    let mut rng = random::rng(seed);
    let a = random::randn(n, n, &mut rng);
    let b = random::randn(n, n, &mut rng);
    let cbar = random::randn(n, n, &mut rng);
    (a, b, cbar)
}

fn flops(n: usize) -> u64 {
    2 * (n as u64).pow(3)
}

/// `Ā` and `B̄` first-written into the caller's buffers (`Grad::Write`): no allocation,
/// and the buffers' previous contents are never read.
fn write_grads(
    out: &Applied<'_, MatMul, f64, 2>,
    cbar: ArrayView2<'_, f64>,
    abar: &mut Array2<f64>,
    bbar: &mut Array2<f64>,
) {
    out.backward_into(
        &[Some(black_box(cbar))],
        &mut [Grad::Write(abar.view_mut()), Grad::Write(bbar.view_mut())],
        None,
    )
    .unwrap()
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

fn blas_vs_naive(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul_forward");
    // Ten samples of one call each: linear sampling would run a naive call 55 times.
    g.sampling_mode(SamplingMode::Flat);
    for n in SIZES {
        let (a, b, _) = inputs(n, 1);
        g.throughput(Throughput::Elements(flops(n)));
        g.bench_with_input(BenchmarkId::new("blas", n), &n, |bch, _| {
            bch.iter(|| {
                MatMul::nn()
                    .apply([black_box(a.view()), black_box(b.view())])
                    .unwrap()
            })
        });
        if n <= NAIVE_IKJ_MAX {
            g.bench_with_input(BenchmarkId::new("naive_ikj", n), &n, |bch, _| {
                bch.iter(|| naive::matmul_ikj(black_box(a.view()), black_box(b.view())).unwrap())
            });
        }
        if n <= NAIVE_IJK_MAX {
            g.bench_with_input(BenchmarkId::new("naive_ijk", n), &n, |bch, _| {
                bch.iter(|| naive::matmul_ijk(black_box(a.view()), black_box(b.view())).unwrap())
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("matmul_backward");
    g.sampling_mode(SamplingMode::Flat);
    for n in SIZES {
        let (a, b, cbar) = inputs(n, 2);
        g.throughput(Throughput::Elements(2 * flops(n)));
        let out = MatMul::nn().apply([a.view(), b.view()]).unwrap();
        g.bench_with_input(BenchmarkId::new("blas", n), &n, |bch, _| {
            bch.iter(|| out.backward(black_box(cbar.view())).unwrap())
        });
        // First write into buffers the caller keeps: GEMM with beta = 0, no allocation
        // and no zero fill.
        let (mut abar, mut bbar) = (Array2::<f64>::zeros((n, n)), Array2::<f64>::zeros((n, n)));
        g.bench_with_input(BenchmarkId::new("blas_into", n), &n, |bch, _| {
            bch.iter(|| write_grads(&out, cbar.view(), &mut abar, &mut bbar))
        });
        if n <= NAIVE_BACKWARD_MAX {
            g.bench_with_input(BenchmarkId::new("naive", n), &n, |bch, _| {
                bch.iter(|| {
                    naive::matmul_backward(
                        black_box(a.view()),
                        black_box(b.view()),
                        black_box(cbar.view()),
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
}

/// The primitive's forward against the `dot` it wraps, and its backward (Ā and B̄,
/// two GEMMs of the same size) against its forward: ideally 1× and 2×.
fn against_dot(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul_vs_dot");
    for n in [64, 256, 1024] {
        let (a, b, cbar) = inputs(n, 3);
        g.throughput(Throughput::Elements(flops(n)));
        g.bench_with_input(BenchmarkId::new("ndarray_dot", n), &n, |bch, _| {
            bch.iter(|| black_box(&a).dot(black_box(&b)))
        });
        g.bench_with_input(BenchmarkId::new("forward", n), &n, |bch, _| {
            bch.iter(|| {
                MatMul::nn()
                    .apply([black_box(a.view()), black_box(b.view())])
                    .unwrap()
            })
        });
        let out = MatMul::nn().apply([a.view(), b.view()]).unwrap();
        g.bench_with_input(BenchmarkId::new("backward", n), &n, |bch, _| {
            bch.iter(|| out.backward(black_box(cbar.view())).unwrap())
        });
        // Into buffers the caller keeps, as a training loop does, so only the two
        // products are timed: first writes (`Grad::Write`, GEMM with beta = 0, the
        // buffers are not read), and accumulation (`backward_add`, beta = 1).
        let mut abar = Array2::<f64>::zeros(a.raw_dim());
        let mut bbar = Array2::<f64>::zeros(b.raw_dim());
        g.bench_with_input(BenchmarkId::new("backward_into", n), &n, |bch, _| {
            bch.iter(|| write_grads(&out, cbar.view(), &mut abar, &mut bbar))
        });
        g.bench_with_input(BenchmarkId::new("backward_add", n), &n, |bch, _| {
            bch.iter(|| {
                out.backward_add(
                    black_box(cbar.view()),
                    &mut [Some(abar.view_mut()), Some(bbar.view_mut())],
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

/// Fixed per-call cost at small n: forward and backward through the primitive
/// against the three `dot` calls they consist of (C = AB, C̄Bᵀ, AᵀC̄).
fn small_overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul_small_fwd_bwd");
    for n in [8, 32] {
        let (a, b, cbar) = inputs(n, 4);
        g.bench_with_input(BenchmarkId::new("raw_dot_x3", n), &n, |bch, _| {
            bch.iter(|| {
                let (a, b, cbar) = (black_box(&a), black_box(&b), black_box(&cbar));
                (a.dot(b), cbar.dot(&b.t()), a.t().dot(cbar))
            })
        });
        g.bench_with_input(BenchmarkId::new("primitive", n), &n, |bch, _| {
            bch.iter(|| {
                let out = MatMul::nn()
                    .apply([black_box(a.view()), black_box(b.view())])
                    .unwrap();
                out.backward(black_box(cbar.view())).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = blas_vs_naive, against_dot, small_overhead
}
criterion_main!(benches);
