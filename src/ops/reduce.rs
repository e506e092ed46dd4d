//! Reductions: the sum and the mean of all entries, and the column-wise log-sum-exp and
//! log-softmax of a matrix whose columns are examples (`docs/math.md`, "Reductions and
//! losses").
//!
//! The column-wise ones are computed stably: each column's largest entry `M` is taken
//! out first, `log Σᵢ e^{aᵢ} = M + log Σᵢ e^{aᵢ − M}`, so no exponential overflows and
//! the sum is at least 1 (its logarithm never underflows to `−∞`).
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! // Two examples (columns) of three logits each, one of them huge.
//! let z: ndarray::Array2<f64> = array![[1.0, 1000.0], [2.0, 0.0], [3.0, -1000.0]];
//! let lse = LogSumExp.apply([z.view()])?;
//! assert!((lse.value()[(0, 1)] - 1000.0).abs() < 1e-12);
//! let logp = LogSoftmax.apply([z.view()])?;
//! assert!(logp.value().iter().all(|v| v.is_finite()));
//! # Ok::<(), matgrad::Error>(())
//! ```

use crate::error::{Error, Result, Shape};
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes};
use crate::Real;
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2, Zip};
use smallvec::smallvec;

const SUM: &str = "Sum";
const MEAN: &str = "Mean";
const LOG_SUM_EXP: &str = "LogSumExp";
const LOG_SOFTMAX: &str = "LogSoftmax";

/// `c = Σᵢⱼ Aᵢⱼ = 1ᵀA1`, a `1×1` result; the sum of an empty matrix is 0.
///
/// Forward `ċ = Σᵢⱼ Ȧᵢⱼ`; reverse `Ā = c̄·11ᵀ`, every entry `c̄` (Giles 2008, §3.1,
/// the sum written as products by `1`; `docs/math.md`). The reverse rule reads nothing
/// but `c̄`.
///
/// Summed in `f64` (for `f32` too), and again with exactly scaled entries when the
/// partial sums overflow: `c` (and `ċ`) is infinite only where its value is, whatever
/// the order of the entries in memory. [`Mean`] likewise.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Sum;

impl<T: Real> Rule<T> for Sum {
    fn name(&self) -> &'static str {
        SUM
    }
    fn arity(&self) -> usize {
        1
    }
    fn output_name(&self, _k: usize) -> &'static str {
        "c"
    }
    fn shapes(&self, _x: &[Shape]) -> Result<Shapes> {
        Ok(smallvec![Shape(1, 1)])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        y[0][(0, 0)] = T::of(total(&x[0], 1.0));
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let cbar = ybar.view(0)[(0, 0)];
        if let Some((mut g, acc)) = grads[0].target() {
            g.map_inplace(|g| acc.store(g, cbar));
        }
        Ok(())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        ydot[0][(0, 0)] = T::of(total(&xdot.view(0), 1.0));
        Ok(())
    }
}

/// `c = (1/mn) Σᵢⱼ Aᵢⱼ` for an `m×n` matrix `A` with at least one entry, a `1×1`
/// result.
///
/// Forward `ċ = (1/mn) Σᵢⱼ Ȧᵢⱼ`; reverse `Ā = (c̄/mn)·11ᵀ` (Giles 2008, §3.1;
/// `docs/math.md`). The reverse rule reads nothing but `c̄`. An empty `A` is
/// [`Error::Empty`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Mean;

/// `1/(m·n)` in `T`.
/// `(Σᵢⱼ Aᵢⱼ)/d`, summed in `f64` (widened from `f32`, so an `f32` sum overflows only
/// when its value does), never infinite where the value is finite: when the plain sum
/// of finite entries overflows (its partial sums can, in any order, while the total or
/// the mean does not), it is summed again with the entries scaled by an exact `2⁻⁶⁰⁰`
/// and scaled back after the division.
fn total<T: Real>(a: &ArrayView2<'_, T>, d: f64) -> f64 {
    let (s, e) = wide_sum(a.iter());
    pow2(s / d, e)
}

/// `Σ v` in `f64` as `s·2ᵉ`: `e = 0` unless the plain sum of finite entries overflows,
/// in which case `s` is the sum of the entries scaled by an exact `2⁻⁶⁰⁰`.
fn wide_sum<'a, T: Real, I: Iterator<Item = &'a T> + Clone>(v: I) -> (f64, i32) {
    const E: i32 = 600;
    let s = v.clone().fold(0.0f64, |acc, &x| acc + x.to64());
    if s.is_finite() || v.clone().any(|x| !x.to64().is_finite()) {
        return (s, 0);
    }
    let f = pow2(1.0, -E);
    (v.fold(0.0f64, |acc, &x| acc + x.to64() * f), E)
}

/// `v·2ᵉ` for the exponents of [`wide_sum`] (0 or ±600), whose `2ᵉ` is finite and exact.
fn pow2(v: f64, e: i32) -> f64 {
    v * 2f64.powi(e)
}

/// The number of entries of `a`, as the divisor of a mean.
fn count<T>(a: &ArrayView2<'_, T>) -> f64 {
    a.nrows() as f64 * a.ncols() as f64
}

fn inv_count<T: Real>(s: Shape) -> T {
    T::one() / T::of(s.0 as f64 * s.1 as f64)
}

impl<T: Real> Rule<T> for Mean {
    fn name(&self) -> &'static str {
        MEAN
    }
    fn arity(&self) -> usize {
        1
    }
    fn output_name(&self, _k: usize) -> &'static str {
        "c"
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        nonempty(MEAN, "A", x[0], "a mean needs at least one entry")?;
        Ok(smallvec![Shape(1, 1)])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        y[0][(0, 0)] = T::of(total(&x[0], count(&x[0])));
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
        // Only the shape of the placeholder `x` is used, never its entries.
        let v = ybar.view(0)[(0, 0)] * inv_count::<T>(Shape(x[0].nrows(), x[0].ncols()));
        if let Some((mut g, acc)) = grads[0].target() {
            g.map_inplace(|g| acc.store(g, v));
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
        ydot[0][(0, 0)] = T::of(total(&xdot.view(0), count(&x[0])));
        Ok(())
    }
}

/// `cⱼ = log Σᵢ exp(Aᵢⱼ)` for each column `j` of an `m×n` `A`: a `1×n` row, computed as
/// `Mⱼ + log sⱼ` with `Mⱼ = maxᵢ Aᵢⱼ` and `sⱼ = Σᵢ exp(Aᵢⱼ − Mⱼ) ∈ [1, m]`, so it is
/// finite for any finite input (`1e300` included).
///
/// With `P = exp(A − 1c)`, the column-wise softmax: forward `ċⱼ = Σᵢ Pᵢⱼ Ȧᵢⱼ`;
/// reverse `Ā = P ⊙ (1c̄)`, `Āᵢⱼ = c̄ⱼ Pᵢⱼ` (the softmax is the gradient of the
/// log-sum-exp; `docs/math.md`, "Reductions and losses").
///
/// The reverse rule reads only `A`: it forms `Pᵢⱼ = exp(Aᵢⱼ − Mⱼ)/sⱼ` again rather than
/// `exp(Aᵢⱼ − cⱼ)`, because `cⱼ = Mⱼ + log sⱼ` rounded to the magnitude of `Mⱼ` has
/// lost `log sⱼ` when `|A|` is huge (at `A = [1e300, 1e300]ᵀ`, `exp(A − c)` would give
/// `[1, 1]ᵀ` instead of `[½, ½]ᵀ`). A first write uses the gradient buffer for the
/// exponentials, so it evaluates `exp` once per entry, as the forward pass does. A
/// weight that underflows `T` times a cotangent or tangent above 1 is formed in `f64`
/// (`e⁻¹⁵⁰·10³⁸` is normal in `f32`, though `e⁻¹⁵⁰` is not).
///
/// A column with `+∞` gives `+∞`, a column of `−∞` (or no rows) gives `−∞`, NaN
/// gives NaN; their gradients are not finite.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct LogSumExp;

/// The largest entry; NaN if there is one (`f64::max` would drop it), `−∞` for none.
pub(crate) fn max_nan<T: Real>(a: ArrayView1<'_, T>) -> T {
    a.fold(
        T::neg_infinity(),
        |m, &x| if x > m || x.is_nan() { x } else { m },
    )
}

/// `eᵈ·v` from `e = eᵈ` as `T` gives it: `e·v`, but where `e` has underflowed (below
/// the normal range) and `|v| > 1`, `(e^(d/2)·v)·e^(d/2)` in `f64`, which is normal where
/// the product is (`e⁻¹⁵⁰·10³⁸` in `f32`, a softmax weight times a huge cotangent).
#[inline]
fn exp_times<T: Real>(e: T, d: T, v: T) -> T {
    if e >= T::min_positive_value() || v.abs() <= T::one() {
        e * v
    } else {
        let h = (d.to64() / 2.0).exp();
        T::of(h * v.to64() * h)
    }
}

/// `(M, s)` with `M = maxᵢ aᵢ` and `s = Σᵢ exp(aᵢ − M)`, so that
/// `log Σᵢ exp(aᵢ) = M + log s`; `s = 1` when `M` is not finite (then the log-sum-exp
/// is `M`).
pub(crate) fn max_and_sum<T: Real>(a: ArrayView1<'_, T>) -> (T, T) {
    let m = max_nan(a.view());
    if !m.is_finite() {
        return (m, T::one());
    }
    (m, a.fold(T::zero(), |s, &x| s + (x - m).exp()))
}

impl<T: Real> Rule<T> for LogSumExp {
    fn name(&self) -> &'static str {
        LOG_SUM_EXP
    }
    fn arity(&self) -> usize {
        1
    }
    fn output_name(&self, _k: usize) -> &'static str {
        "c"
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        Ok(smallvec![Shape(1, x[0].1)])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        if wanted[0] {
            Saves::NONE.input(0)
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
        Zip::from(y[0].row_mut(0))
            .and(x[0].columns())
            .for_each(|c, a| {
                let (m, s) = max_and_sum(a);
                *c = m + s.ln();
            });
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
        let Some((mut g, acc)) = grads[0].target() else {
            return Ok(());
        };
        let cbar = ybar.view(0);
        Zip::from(g.columns_mut())
            .and(x[0].columns())
            .and(cbar.row(0))
            .for_each(|mut g, a, &cb| {
                let m = max_nan(a.view());
                match acc {
                    crate::Accum::Replace => {
                        // The buffer holds the exponentials, then the gradient.
                        let mut s = T::zero();
                        Zip::from(&mut g).and(&a).for_each(|g, &a| {
                            *g = (a - m).exp();
                            s += *g;
                        });
                        let k = cb / s;
                        Zip::from(&mut g)
                            .and(&a)
                            .for_each(|g, &a| *g = exp_times(*g, a - m, k));
                    }
                    crate::Accum::Add => {
                        let s = a.fold(T::zero(), |s, &x| s + (x - m).exp());
                        let k = cb / s;
                        Zip::from(&mut g)
                            .and(&a)
                            .for_each(|g, &a| *g += exp_times((a - m).exp(), a - m, k));
                    }
                }
            });
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
        let ad = xdot.view(0);
        Zip::from(ydot[0].row_mut(0))
            .and(x[0].columns())
            .and(ad.columns())
            .for_each(|d, a, ad| {
                let m = max_nan(a.view());
                let (s, t) =
                    Zip::from(a)
                        .and(ad)
                        .fold((T::zero(), T::zero()), |(s, t), &a, &ad| {
                            let e = (a - m).exp();
                            (s + e, t + exp_times(e, a - m, ad))
                        });
                *d = t / s;
            });
        Ok(())
    }
}

/// `C = A − 1c`, `cⱼ = log Σᵢ exp(Aᵢⱼ)`: the log-softmax of each column of an `m×n`
/// `A` (`m×n`), computed as `Cᵢⱼ = (Aᵢⱼ − Mⱼ) − log sⱼ` with the shift of
/// [`LogSumExp`], so `Cᵢⱼ ≤ 0`, finite for any finite input, and accurate when `|A|`
/// is huge (the difference `Aᵢⱼ − Mⱼ` is taken before `log sⱼ` is subtracted).
///
/// With `P = exp(C)`: forward `Ċ = Ȧ − 1(1ᵀ(P ⊙ Ȧ))`, `Ċᵢⱼ = Ȧᵢⱼ − Σₖ PₖⱼȦₖⱼ`;
/// reverse `Ā = C̄ − P ⊙ (1(1ᵀC̄))`, `Āᵢⱼ = C̄ᵢⱼ − Pᵢⱼ Σₖ C̄ₖⱼ` (the log-sum-exp rule
/// composed with a subtraction; `docs/math.md`, "Reductions and losses"). The reverse
/// rule reads only the output `C`, from which `P = exp(C)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct LogSoftmax;

impl<T: Real> Rule<T> for LogSoftmax {
    fn name(&self) -> &'static str {
        LOG_SOFTMAX
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        Ok(smallvec![x[0]])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        if wanted[0] {
            Saves::NONE.output(0)
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
        Zip::from(y[0].columns_mut())
            .and(x[0].columns())
            .for_each(|c, a| {
                let (m, s) = max_and_sum(a.view());
                let l = s.ln();
                Zip::from(c).and(a).for_each(|c, &a| *c = (a - m) - l);
            });
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
        let cbar = ybar.view(0);
        Zip::from(g.columns_mut())
            .and(y[0].columns())
            .and(cbar.columns())
            .for_each(|g, c, cb| {
                // Σ c̄ in f64, scaled where it overflows: the gradient is finite where
                // its value is, also for cotangents near the overflow threshold.
                let (s, e) = wide_sum(cb.iter());
                Zip::from(g).and(c).and(cb).for_each(|g, &c, &cb| {
                    let v = cb.to64() - pow2(c.to64().exp() * s, e);
                    acc.store(g, T::of(v));
                });
            });
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
        let ad = xdot.view(0);
        Zip::from(ydot[0].columns_mut())
            .and(y[0].columns())
            .and(ad.columns())
            .for_each(|d, c, ad| {
                let s = Zip::from(c)
                    .and(ad)
                    .fold(T::zero(), |s, &c, &ad| s + c.exp() * ad);
                Zip::from(d).and(ad).for_each(|d, &ad| *d = ad - s);
            });
        Ok(())
    }
}

/// Errors unless `shape` has at least one entry.
pub(crate) fn nonempty(
    op: &'static str,
    name: &'static str,
    shape: Shape,
    what: &'static str,
) -> Result<()> {
    if shape.0 == 0 || shape.1 == 0 {
        Err(Error::Empty {
            op,
            name,
            got: shape,
            what,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitive::Primitive;
    use ndarray::array;

    #[test]
    fn log_sum_exp_edge_columns() {
        let inf = f64::INFINITY;
        let a = array![[1.0, inf, -inf, f64::NAN], [2.0, 0.0, -inf, 0.0]];
        let c = LogSumExp.forward(&[a.view()]).unwrap().remove(0);
        assert!((c[(0, 0)] - (1f64.exp() + 2f64.exp()).ln()).abs() < 1e-15);
        assert_eq!(c[(0, 1)], inf);
        assert_eq!(c[(0, 2)], -inf);
        assert!(c[(0, 3)].is_nan());
        // No rows: the log of an empty sum.
        let e = ndarray::Array2::<f64>::zeros((0, 2));
        let c = LogSumExp.forward(&[e.view()]).unwrap().remove(0);
        assert_eq!(c, array![[-inf, -inf]]);
    }

    #[test]
    fn mean_of_nothing_is_a_typed_error() {
        let e = ndarray::Array2::<f64>::zeros((0, 3));
        let err = Mean.forward(&[e.view()]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Empty {
                    op: "Mean",
                    got: Shape(0, 3),
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(Sum.forward(&[e.view()]).unwrap()[0], array![[0.0]]);
    }
}
