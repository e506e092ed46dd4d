//! Transpose, Add, Tril and Vectorize through the primitives against the naive loops,
//! forward and backward. These move memory and do almost no arithmetic, so the
//! interesting number is bytes per second, not a BLAS speed-up; the transpose group
//! also times a plain copy of the same matrix and the forward pass into a preallocated
//! buffer, the bandwidth the tiled transpose is held to.
//!
//! `cargo bench --bench structural`; sample counts are small so it runs in about a
//! minute.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use matgrad::check::random;
use matgrad::naive;
use matgrad::prelude::*;
use std::hint::black_box;
use std::time::Duration;

const SIZES: [usize; 5] = [16, 64, 256, 512, 1024];

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500))
}

fn bytes(n: usize) -> Throughput {
    Throughput::Bytes((n * n * std::mem::size_of::<f64>()) as u64)
}

fn transpose(c: &mut Criterion) {
    let mut g = c.benchmark_group("transpose");
    for n in SIZES {
        let mut rng = random::rng(10);
        let a = random::randn::<f64>(n, n + 1, &mut rng);
        let cbar = random::randn::<f64>(n + 1, n, &mut rng);
        g.throughput(bytes(n));
        let out = Transpose.apply([a.view()]).unwrap();
        let mut dst = ndarray::Array2::<f64>::zeros((n, n + 1));
        g.bench_with_input(BenchmarkId::new("copy", n), &n, |b, _| {
            b.iter(|| dst.assign(black_box(&a)))
        });
        let mut dst_t = ndarray::Array2::<f64>::zeros((n + 1, n));
        g.bench_with_input(BenchmarkId::new("forward_into", n), &n, |b, _| {
            b.iter(|| {
                Transpose
                    .forward_into(&[black_box(a.view())], &mut [dst_t.view_mut()], None)
                    .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
            b.iter(|| Transpose.apply([black_box(a.view())]).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("naive_forward", n), &n, |b, _| {
            b.iter(|| naive::transpose(black_box(a.view())))
        });
        g.bench_with_input(BenchmarkId::new("backward", n), &n, |b, _| {
            b.iter(|| out.backward(black_box(cbar.view())).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("naive_backward", n), &n, |b, _| {
            b.iter(|| naive::transpose_backward(black_box(cbar.view())))
        });
    }
    g.finish();
}

fn add(c: &mut Criterion) {
    let mut g = c.benchmark_group("add");
    for n in SIZES {
        let mut rng = random::rng(11);
        let a = random::randn::<f64>(n, n, &mut rng);
        let bm = random::randn::<f64>(n, n, &mut rng);
        let cbar = random::randn::<f64>(n, n, &mut rng);
        g.throughput(bytes(n));
        let out = Add.apply([a.view(), bm.view()]).unwrap();
        g.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
            b.iter(|| {
                Add.apply([black_box(a.view()), black_box(bm.view())])
                    .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("naive_forward", n), &n, |b, _| {
            b.iter(|| naive::add(black_box(a.view()), black_box(bm.view())).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("backward", n), &n, |b, _| {
            b.iter(|| out.backward(black_box(cbar.view())).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("naive_backward", n), &n, |b, _| {
            b.iter(|| naive::add_backward(black_box(cbar.view())))
        });
    }
    g.finish();
}

fn tril(c: &mut Criterion) {
    let mut g = c.benchmark_group("tril");
    for n in SIZES {
        let mut rng = random::rng(12);
        let a = random::randn::<f64>(n, n, &mut rng);
        let cbar = random::randn::<f64>(n, n, &mut rng);
        g.throughput(bytes(n));
        let op = Tril::new(0);
        let out = op.apply([a.view()]).unwrap();
        g.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
            b.iter(|| op.apply([black_box(a.view())]).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("naive_forward", n), &n, |b, _| {
            b.iter(|| naive::tril(black_box(a.view()), 0))
        });
        g.bench_with_input(BenchmarkId::new("backward", n), &n, |b, _| {
            b.iter(|| out.backward(black_box(cbar.view())).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("naive_backward", n), &n, |b, _| {
            b.iter(|| naive::tril_backward(black_box(cbar.view()), 0))
        });
    }
    g.finish();
}

fn vec(c: &mut Criterion) {
    let mut g = c.benchmark_group("vec");
    for n in SIZES {
        let mut rng = random::rng(13);
        let a = random::randn::<f64>(n, n, &mut rng);
        let cbar = random::randn::<f64>(n * n, 1, &mut rng);
        g.throughput(bytes(n));
        let out = Vectorize.apply([a.view()]).unwrap();
        g.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
            b.iter(|| Vectorize.apply([black_box(a.view())]).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("naive_forward", n), &n, |b, _| {
            b.iter(|| naive::vec(black_box(a.view())))
        });
        g.bench_with_input(BenchmarkId::new("backward", n), &n, |b, _| {
            b.iter(|| out.backward(black_box(cbar.view())).unwrap())
        });
        g.bench_with_input(BenchmarkId::new("naive_backward", n), &n, |b, _| {
            b.iter(|| naive::vec_backward(black_box(cbar.view()), n, n).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = transpose, add, tril, vec
}
criterion_main!(benches);
