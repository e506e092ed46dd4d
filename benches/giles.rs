//! Giles' collection (Giles 2008, "An extended collection of matrix derivative
//! results"): forward and reverse of the symmetric eigendecomposition, the SVD and the
//! LU solve, each through the buffer-passing calls a training loop uses, so that the
//! reverse/forward ratio is the rule's cost and not the allocator's.
//!
//! `OPENBLAS_NUM_THREADS=1 cargo bench --bench giles`; pass a filter such as
//! `-- svd/` to run one primitive. Forward is `Primitive::forward_into` into
//! preallocated outputs (residuals included); reverse is `backward_into` with
//! `Grad::Write` into preallocated gradients, a cotangent for every differentiable
//! output, and a preallocated workspace of `Rule::workspace` elements.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use matgrad::check::random;
use matgrad::prelude::*;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use std::hint::black_box;
use std::time::Duration;

const SIZES: [usize; 2] = [100, 500];

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

/// Times `p` forward and reverse at the inputs `x`, under `group/forward/n` and
/// `group/reverse/n`.
fn forward_and_reverse<P: Primitive<f64>>(
    c: &mut Criterion,
    group: &str,
    p: &P,
    x: &[Array2<f64>],
    seed: u64,
) {
    let n = x[0].nrows();
    let xv: Vec<ArrayView2<'_, f64>> = x.iter().map(|a| a.view()).collect();
    let shapes: Vec<Shape> = x.iter().map(|a| Shape(a.nrows(), a.ncols())).collect();
    let mut ws = vec![0.0; p.workspace(&shapes)];
    let mut y: Vec<Array2<f64>> = p
        .output_shapes(&xv)
        .unwrap()
        .iter()
        .map(|s| Array2::zeros((s.0, s.1)))
        .collect();
    // One forward pass fills the outputs (and residuals) the reverse pass reads.
    {
        let mut yv: Vec<ArrayViewMut2<'_, f64>> = y.iter_mut().map(|a| a.view_mut()).collect();
        p.forward_into(&xv, &mut yv, Some(&mut ws)).unwrap();
    }
    let mut rng = random::rng(seed);
    let ybar: Vec<Array2<f64>> = y[..p.outputs()]
        .iter()
        .map(|a| random::randn::<f64>(a.nrows(), a.ncols(), &mut rng))
        .collect();
    let mut grads: Vec<Array2<f64>> = x.iter().map(|a| Array2::zeros(a.raw_dim())).collect();

    let mut g = c.benchmark_group(group);
    g.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
        let mut out: Vec<Array2<f64>> = y.clone();
        b.iter(|| {
            let mut yv: Vec<ArrayViewMut2<'_, f64>> =
                out.iter_mut().map(|a| a.view_mut()).collect();
            p.forward_into(black_box(&xv), &mut yv, Some(&mut ws))
                .unwrap()
        })
    });
    let yv: Vec<ArrayView2<'_, f64>> = y.iter().map(|a| a.view()).collect();
    let ybv: Vec<Option<ArrayView2<'_, f64>>> = ybar.iter().map(|a| Some(a.view())).collect();
    g.bench_with_input(BenchmarkId::new("reverse", n), &n, |b, _| {
        b.iter(|| {
            let mut gv: Vec<Grad<'_, f64>> = grads
                .iter_mut()
                .map(|a| Grad::Write(a.view_mut()))
                .collect();
            p.backward_into(
                black_box(&xv),
                black_box(&yv),
                black_box(&ybv),
                &mut gv,
                Some(&mut ws),
            )
            .unwrap()
        })
    });
    g.finish();
}

fn symeig(c: &mut Criterion) {
    for n in SIZES {
        let mut rng = random::rng(n as u64);
        let a = random::spd::<f64>(n, &mut rng);
        forward_and_reverse(c, "symeig", &SymEig::new(), &[a], 1000 + n as u64);
    }
}

fn svd(c: &mut Criterion) {
    for n in SIZES {
        let mut rng = random::rng(n as u64 + 1);
        let a = random::randn::<f64>(n, n, &mut rng);
        forward_and_reverse(c, "svd", &Svd, &[a], 2000 + n as u64);
    }
}

fn lu_solve(c: &mut Criterion) {
    for n in SIZES {
        let mut rng = random::rng(n as u64 + 2);
        let a = random::randn::<f64>(n, n, &mut rng);
        let b = random::randn::<f64>(n, n, &mut rng);
        forward_and_reverse(c, "lu_solve", &LuSolve::new(), &[a, b], 3000 + n as u64);
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = symeig, svd, lu_solve
}
criterion_main!(benches);
