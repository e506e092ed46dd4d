//! Training losses with a `1×1` result: the softmax cross-entropy of logits against
//! class labels, fused and stable, and the mean squared error (`docs/math.md`,
//! "Reductions and losses").
//!
//! Examples are columns, as in the seed's section 4: logits `Z` are `k×n` for `k`
//! classes and `n` examples, and the loss is the mean over the examples.
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! // Three classes, two examples (columns), labels 2 and 0.
//! let z: ndarray::Array2<f64> = array![[0.5, 800.0], [-1.0, 0.0], [2.0, -800.0]];
//! let loss = SoftmaxCrossEntropy::new(vec![2, 0]);
//! let c = (&loss).apply([z.view()])?;
//! assert!(c.value()[(0, 0)].is_finite());
//! let [zbar] = c.backward(ndarray::arr2(&[[1.0]]).view())?;   // (softmax(Z) − Y)/n
//! assert!(zbar.iter().all(|g| g.is_finite()));
//!
//! // A label outside 0..3 is a typed error.
//! let bad = SoftmaxCrossEntropy::new(vec![3, 0]);
//! assert!(matches!(
//!     (&bad).apply([z.view()]),
//!     Err(Error::LabelOutOfRange { label: 3, classes: 3, .. })
//! ));
//! # Ok::<(), matgrad::Error>(())
//! ```

use super::reduce::{max_nan, nonempty};
use super::same_shape;
use crate::error::{Error, Result, Shape};
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2, Zip};
use smallvec::smallvec;
use std::sync::Arc;

const SOFTMAX_CROSS_ENTROPY: &str = "SoftmaxCrossEntropy";
const MEAN_SQUARED_ERROR: &str = "MeanSquaredError";

/// `c = (1/n) Σⱼ (log Σᵢ exp(Zᵢⱼ) − Z_{yⱼ,j})`: the mean over the `n` columns of the
/// `k×n` logits `Z` of the cross-entropy between the softmax of the column and its
/// class label `yⱼ ∈ 0..k`, fused into one primitive.
///
/// With `P = softmax(Z)` column-wise and `Y` the one-hot `k×n` matrix of the labels:
/// forward `ċ = (1/n)⟨P − Y, Ż⟩`; reverse `Z̄ = c̄·(P − Y)/n` (the log-sum-exp rule
/// minus the picked logit; `docs/math.md`, "Reductions and losses"). The labels are
/// configuration, not an input: they have no gradient.
///
/// Stable at any finite logits (`±800`, where `exp` overflows): each column's largest
/// logit `M` is taken out, the loss of a column is `(M − Z_{y,j}) + log Σᵢ exp(Zᵢⱼ − M)`
/// and `P = exp(Z − M)/Σᵢ exp(Zᵢⱼ − M)`. The forward pass keeps `P` as a residual
/// output ([`Rule::residuals`], output 1, `k×n`), and both the reverse and the
/// forward-mode rule read only `P`, not `Z`: nothing is recomputed.
///
/// The shape rule checks the labels: one per column of `Z`
/// ([`Error::ShapeMismatch`]), each below `k` ([`Error::LabelOutOfRange`]), and at
/// least one example ([`Error::Empty`]).
///
/// Apply it by reference to keep the labels: `(&loss).apply([z])`.
#[derive(Clone, PartialEq, Eq, Debug, Default, Hash)]
pub struct SoftmaxCrossEntropy {
    /// The class of each example (column of `Z`), in `0..k`; shared, so that a loss
    /// made anew every training step does not copy them.
    pub labels: Arc<[usize]>,
}

impl SoftmaxCrossEntropy {
    /// The loss for these labels, one per column of the logits (a `Vec`, a slice, or
    /// an `Arc<[usize]>` shared between steps without a copy).
    pub fn new(labels: impl Into<Arc<[usize]>>) -> Self {
        SoftmaxCrossEntropy {
            labels: labels.into(),
        }
    }
}

impl<T: Real> Rule<T> for SoftmaxCrossEntropy {
    fn name(&self) -> &'static str {
        SOFTMAX_CROSS_ENTROPY
    }
    fn arity(&self) -> usize {
        1
    }
    fn residuals(&self) -> usize {
        1
    }
    fn input_name(&self, _i: usize) -> &'static str {
        "Z"
    }
    fn output_name(&self, k: usize) -> &'static str {
        if k == 0 {
            "c"
        } else {
            "P"
        }
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        let z = x[0];
        if self.labels.len() != z.1 {
            return Err(Error::ShapeMismatch {
                op: SOFTMAX_CROSS_ENTROPY,
                what: "one label per column (example) of Z",
                lhs_name: "Z",
                lhs: z,
                rhs_name: "labels",
                rhs: Shape(self.labels.len(), 1),
            });
        }
        if z.1 == 0 {
            return Err(Error::Empty {
                op: SOFTMAX_CROSS_ENTROPY,
                name: "Z",
                got: z,
                what: "a mean over examples needs at least one column",
            });
        }
        if let Some((index, &label)) = self.labels.iter().enumerate().find(|(_, &l)| l >= z.0) {
            return Err(Error::LabelOutOfRange {
                op: SOFTMAX_CROSS_ENTROPY,
                index,
                label,
                classes: z.0,
            });
        }
        Ok(smallvec![Shape(1, 1), z])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        if wanted[0] {
            Saves::NONE.output(1)
        } else {
            Saves::NONE
        }
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let z = &x[0];
        let (loss, p) = y.split_at_mut(1);
        let p = &mut p[0];
        let mut total = T::zero();
        for (j, (zc, mut pc)) in z.columns().into_iter().zip(p.columns_mut()).enumerate() {
            let m = max_nan(zc.view());
            Zip::from(&mut pc)
                .and(&zc)
                .for_each(|p, &v| *p = (v - m).exp());
            let s = pc.sum();
            let inv = T::one() / s;
            pc.map_inplace(|p| *p *= inv);
            total += (m - zc[self.labels[j]]) + s.ln();
        }
        loss[0][(0, 0)] = total / T::of(z.ncols() as f64);
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let Some((mut g, acc)) = grads[0].target() else {
            return Ok(());
        };
        let p = &y[1];
        let scale = ybar.view(0)[(0, 0)] / T::of(p.ncols() as f64);
        for (j, (gc, pc)) in g.columns_mut().into_iter().zip(p.columns()).enumerate() {
            let label = self.labels[j];
            for (i, (g, &p)) in gc.into_iter().zip(pc).enumerate() {
                let v = if i == label { p - T::one() } else { p };
                acc.store(g, scale * v);
            }
        }
        Ok(())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let (p, zd) = (&y[1], xdot.view(0));
        let mut total = T::zero();
        for (j, (pc, zc)) in p.columns().into_iter().zip(zd.columns()).enumerate() {
            let dot = Zip::from(pc).and(zc).fold(T::zero(), |s, &p, &z| s + p * z);
            total += dot - zc[self.labels[j]];
        }
        ydot[0][(0, 0)] = total / T::of(p.ncols() as f64);
        Ok(())
    }
}

/// `c = (1/mn) Σᵢⱼ (Yᵢⱼ − Tᵢⱼ)²` for predictions `Y` and targets `T` of the same
/// `m×n` shape (at least one entry), a `1×1` result.
///
/// Forward `ċ = (2/mn)⟨Y − T, Ẏ − Ṫ⟩`; reverse `Ȳ = (2c̄/mn)(Y − T)`, `T̄ = −Ȳ`
/// (Giles 2008, §3.1, a sum of squares of a difference; `docs/math.md`, "Reductions
/// and losses"). The reverse rule reads both inputs for either gradient.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct MeanSquaredError;

impl<T: Real> Rule<T> for MeanSquaredError {
    fn name(&self) -> &'static str {
        MEAN_SQUARED_ERROR
    }
    fn arity(&self) -> usize {
        2
    }
    fn input_name(&self, i: usize) -> &'static str {
        ["Y", "T"].get(i).copied().unwrap_or("X")
    }
    fn output_name(&self, _k: usize) -> &'static str {
        "c"
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        same_shape(MEAN_SQUARED_ERROR, "Y", x[0], "T", x[1])?;
        nonempty(
            MEAN_SQUARED_ERROR,
            "Y",
            x[0],
            "a mean needs at least one entry",
        )?;
        Ok(smallvec![Shape(1, 1)])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        if wanted.iter().any(|&w| w) {
            Saves::NONE.input(0).input(1)
        } else {
            Saves::NONE
        }
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let n = T::of(x[0].len() as f64);
        let s = Zip::from(&x[0]).and(&x[1]).fold(T::zero(), |s, &p, &t| {
            let d = p - t;
            s + d * d
        });
        y[0][(0, 0)] = if s.is_finite() {
            s / n
        } else {
            // The squares overflow where their mean need not: m·(m·Σ(dᵢ/m)²/n) with
            // m = max|dᵢ| overflows only when the mean does.
            let m = Zip::from(&x[0])
                .and(&x[1])
                .fold(T::zero(), |m, &p, &t| m.max((p - t).abs()));
            let q = Zip::from(&x[0]).and(&x[1]).fold(T::zero(), |q, &p, &t| {
                let d = (p - t) / m;
                q + d * d
            });
            m * (m * (q / n))
        };
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        // 2c̄(p − t)/n in f64, ordered so that it rounds to zero or overflows only when
        // its value does: for |c̄| ≥ 1 the factor 2c̄/n first (c̄/n before the 2), for a
        // smaller c̄ the product c̄(p − t) first, since 2c̄/n of a tiny c̄ would lose its
        // digits below the smallest normal number.
        let cbar = ybar.view(0)[(0, 0)].to64();
        let n = x[0].len() as f64;
        let grad = |p: T, t: T| {
            let d = p.to64() - t.to64();
            if cbar.abs() >= 1.0 {
                cbar / n * 2.0 * d
            } else {
                cbar * d * (2.0 / n)
            }
        };
        for (i, sign) in [(0, 1.0), (1, -1.0)] {
            if let Some((g, acc)) = grads[i].target() {
                Zip::from(g)
                    .and(&x[0])
                    .and(&x[1])
                    .for_each(|g, &p, &t| acc.store(g, T::of(sign * grad(p, t))));
            }
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let n = T::of(x[0].len() as f64);
        let (yd, td) = (xdot.view(0), xdot.view(1));
        let z = Zip::from(&x[0]).and(&x[1]).and(&yd).and(&td);
        let s = z.fold(T::zero(), |s, &p, &t, &pd, &td| s + (p - t) * (pd - td));
        ydot[0][(0, 0)] = if s.is_finite() {
            s / n * T::of(2.0)
        } else {
            // The sum overflows where its mean need not: divide each term by n first.
            let z = Zip::from(&x[0]).and(&x[1]).and(&yd).and(&td);
            z.fold(T::zero(), |s, &p, &t, &pd, &td| s + (p - t) / n * (pd - td)) * T::of(2.0)
        };
        Ok(())
    }
}
