//! Seeded random test matrices: Gaussian, positive definite, triangular.
//!
//! Tests should use these rather than zeros or identities, which hide transposes. Their
//! sizes are not checked: as with `Array2::zeros`, a size beyond memory panics.

use crate::error::{Error, Result};
use crate::Real;
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// A seeded generator; the same seed gives the same matrices on every machine.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `rows×cols` with independent standard normal entries.
pub fn randn<T: Real>(rows: usize, cols: usize, rng: &mut StdRng) -> Array2<T> {
    Array2::from_shape_simple_fn((rows, cols), || {
        let x: f64 = StandardNormal.sample(rng);
        T::of(x)
    })
}

/// `rows×cols` with entries uniform in `[lo, hi)`.
///
/// [`Error::InvalidArgument`] unless `lo < hi` and both are finite: an empty range has
/// nothing to draw from.
pub fn uniform<T: Real>(
    rows: usize,
    cols: usize,
    lo: f64,
    hi: f64,
    rng: &mut StdRng,
) -> Result<Array2<T>> {
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(Error::InvalidArgument {
            op: "uniform",
            msg: format!("the range [{lo}, {hi}) is empty or not finite"),
        });
    }
    let d = rand_distr::Uniform::new(lo, hi);
    Ok(Array2::from_shape_simple_fn((rows, cols), || {
        T::of(d.sample(rng))
    }))
}

/// A symmetric positive definite `n×n` matrix, `GGᵀ/n + I`, well conditioned.
pub fn spd<T: Real>(n: usize, rng: &mut StdRng) -> Array2<T> {
    let g = randn::<f64>(n, n, rng);
    let mut a = g.dot(&g.t()) / n.max(1) as f64;
    for i in 0..n {
        a[(i, i)] += 1.0;
    }
    a.mapv(T::of)
}

/// A lower-triangular `n×n` matrix with a diagonal bounded away from zero.
pub fn lower<T: Real>(n: usize, rng: &mut StdRng) -> Array2<T> {
    let mut l = randn::<f64>(n, n, rng);
    for i in 0..n {
        for j in i + 1..n {
            l[(i, j)] = 0.0;
        }
        l[(i, i)] = 1.0 + l[(i, i)].abs();
    }
    l.mapv(T::of)
}
