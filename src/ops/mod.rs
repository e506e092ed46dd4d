//! The primitives, one file per primitive or small family, and the typed layer that
//! applies any of them: [`Apply::apply`] runs the forward pass and returns an
//! [`Applied`], which keeps what the reverse and forward rules need and runs them.
//!
//! Results own their outputs as shared arrays (`ArcArray2`), so a result can feed the
//! next primitive without a copy and results can be kept together in one `Vec`:
//!
//! ```
//! use matgrad::prelude::*;
//! use matgrad::check::random;
//!
//! let mut rng = random::rng(3);
//! let x = random::randn::<f64>(4, 6, &mut rng);
//! let ws: Vec<_> = (0..3).map(|_| random::randn::<f64>(4, 4, &mut rng)).collect();
//!
//! // H_{k+1} = tanh(W_k H_k), results kept in one Vec.
//! let mut layers = Vec::new();
//! let mut h = Arg::from(x.view());
//! for w in &ws {
//!     let z = MatMul::nn().apply([Arg::from(w), h])?;
//!     let t = Map(Tanh).apply([z.value()])?;
//!     h = Arg::from(t.value());
//!     layers.push((z, t));
//! }
//! // Reverse sweep from H̄ = 1.
//! let mut hbar = ndarray::Array2::<f64>::ones((4, 6));
//! for (z, t) in layers.iter().rev() {
//!     let [zbar] = t.backward(hbar.view())?;
//!     let [_wbar, below] = z.backward(zbar.view())?;
//!     hbar = below;
//! }
//! assert_eq!(hbar.dim(), (4, 6));
//! # Ok::<(), matgrad::Error>(())
//! ```

use crate::error::{shape_of, Error, Result, Shape};
use crate::primitive::{run_pullback, validate_inputs, with_workspace, Grad, InShapes, Primitive};
use crate::Real;
use ndarray::{ArcArray2, Array2, ArrayView2, ArrayViewMut2};
use smallvec::SmallVec;

pub mod add;
pub mod cho_solve;
pub mod cholesky;
pub mod eigh;
pub mod elementwise;
pub mod expm;
pub mod logdet;
pub mod loss;
pub mod lu;
pub mod mask;
pub mod matmul;
pub mod norms;
pub mod poly;
pub mod reduce;
pub mod reshape;
pub mod svd;
pub mod trace;
pub mod transpose;
pub mod triangular;
mod workspace;

/// An input of [`Apply::apply`]: a borrowed view, or a shared array (the output of an
/// earlier [`Applied`]) whose reference count keeps it alive without a copy.
#[derive(Clone, Debug)]
pub enum Arg<'a, T> {
    /// Borrowed for `'a`.
    View(ArrayView2<'a, T>),
    /// Shared ownership.
    Shared(ArcArray2<T>),
}

impl<T> Arg<'_, T> {
    /// The input as a view.
    pub fn view(&self) -> ArrayView2<'_, T> {
        match self {
            Arg::View(v) => v.view(),
            Arg::Shared(a) => a.view(),
        }
    }
}

impl<'a, T> From<ArrayView2<'a, T>> for Arg<'a, T> {
    fn from(v: ArrayView2<'a, T>) -> Self {
        Arg::View(v)
    }
}

impl<'a, T> From<&'a Array2<T>> for Arg<'a, T> {
    fn from(a: &'a Array2<T>) -> Self {
        Arg::View(a.view())
    }
}

impl<T> From<ArcArray2<T>> for Arg<'_, T> {
    fn from(a: ArcArray2<T>) -> Self {
        Arg::Shared(a)
    }
}

/// Shares the array (a reference count, no copy).
impl<T> From<&ArcArray2<T>> for Arg<'_, T> {
    fn from(a: &ArcArray2<T>) -> Self {
        Arg::Shared(a.clone())
    }
}

/// Views of the outputs, inline up to two.
type Views<'v, T> = SmallVec<[ArrayView2<'v, T>; 2]>;

/// A primitive applied to its `N` inputs: the outputs, plus the inputs its rules read.
/// One type for any number of outputs; the arity is part of the type, so `backward`
/// returns exactly `[X̄₀, …, X̄ₙ₋₁]`. The primitive's residuals
/// ([`crate::Rule::residuals`]) are kept for its rules and readable through
/// [`Applied::residuals`].
pub struct Applied<'a, P, T, const N: usize> {
    op: P,
    inputs: [Arg<'a, T>; N],
    /// Every output of the forward pass: the differentiable ones, then the residuals.
    outputs: SmallVec<[ArcArray2<T>; 1]>,
}

/// The primitive by its name, then its inputs and every output (ndarray's `Debug`
/// elides the middle of large matrices), so that `result.unwrap_err()` and `{:?}` work.
impl<P: Primitive<T>, T: Real, const N: usize> std::fmt::Debug for Applied<'_, P, T, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applied")
            .field("op", &self.op.name())
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

/// The typed layer of every primitive: `op.apply([a, b])`.
///
/// `apply` takes the primitive by value, which copies the small `Copy` ones; for one
/// that holds data (a [`mask::Mask`]) apply a reference: `(&mask).apply([a])`.
pub trait Apply<T: Real>: Primitive<T> + Sized {
    /// Runs the forward pass and keeps what the rules need.
    fn apply<'a, const N: usize>(
        self,
        inputs: [impl Into<Arg<'a, T>>; N],
    ) -> Result<Applied<'a, Self, T, N>> {
        let inputs: [Arg<'a, T>; N] = inputs.map(Into::into);
        let views: [ArrayView2<'_, T>; N] = std::array::from_fn(|i| inputs[i].view());
        // Validated once here: the outputs are allocated to the shape rule's shapes.
        let (xs, ys) = validate_inputs(&self, &views)?;
        let mut outs: SmallVec<[Array2<T>; 1]> = SmallVec::new();
        for &s in &ys {
            outs.push(crate::primitive::zeros(self.name(), s)?);
        }
        let mut y: SmallVec<[ArrayViewMut2<'_, T>; 2]> = SmallVec::new();
        for o in outs.iter_mut() {
            y.push(o.view_mut());
        }
        with_workspace(
            &self,
            &xs,
            None,
            self.pass_workspace(&xs, crate::primitive::Pass::Eval),
            |ws| self.eval(&views, &mut y, ws),
        )?;
        drop((views, y));
        let mut outputs = SmallVec::new();
        for o in outs {
            outputs.push(o.into_shared());
        }
        Ok(Applied {
            op: self,
            inputs,
            outputs,
        })
    }
}

impl<T: Real, P: Primitive<T>> Apply<T> for P {}

impl<'a, P: Primitive<T>, T: Real, const N: usize> Applied<'a, P, T, N> {
    /// The primitive.
    pub fn op(&self) -> &P {
        &self.op
    }
    /// The (first) output `C`.
    pub fn value(&self) -> &ArcArray2<T> {
        &self.outputs[0]
    }
    /// The differentiable outputs, in the primitive's order (residuals excluded).
    pub fn outputs(&self) -> &[ArcArray2<T>] {
        &self.outputs[..self.op.outputs()]
    }
    /// The residual outputs ([`crate::Rule::residuals`]), in the primitive's order:
    /// values the forward pass computed for the rules' use, not differentiable.
    pub fn residuals(&self) -> &[ArcArray2<T>] {
        &self.outputs[self.op.outputs()..]
    }
    /// The (first) output `C`, consuming the result (no copy unless it is shared).
    pub fn into_value(self) -> Array2<T> {
        self.into_outputs().swap_remove(0)
    }
    /// The differentiable outputs, consuming the result (the residuals are dropped).
    pub fn into_outputs(self) -> Vec<Array2<T>> {
        let m = self.op.outputs();
        self.outputs
            .into_iter()
            .take(m)
            .map(|o| o.into_owned())
            .collect()
    }

    /// The inputs, and every output (residuals included) as the rules receive them.
    fn views(&self) -> ([ArrayView2<'_, T>; N], Views<'_, T>) {
        let mut y = SmallVec::new();
        for o in &self.outputs {
            y.push(o.view());
        }
        (std::array::from_fn(|i| self.inputs[i].view()), y)
    }

    /// One cotangent per differentiable output: `C̄` for the first, `None` (zero) for
    /// the others.
    fn first_only<'c>(&self, cbar: ArrayView2<'c, T>) -> SmallVec<[Option<ArrayView2<'c, T>>; 2]> {
        let mut ybar = SmallVec::new();
        ybar.push(Some(cbar));
        for _ in 1..self.op.outputs() {
            ybar.push(None);
        }
        ybar
    }

    /// The gradients `[X̄₀, …]` for the cotangent `C̄` of the (first) output, one per
    /// input: `let [abar, bbar] = c.backward(cbar)?;`.
    pub fn backward(&self, cbar: ArrayView2<'_, T>) -> Result<[Array2<T>; N]> {
        // Inputs and outputs were validated by `apply`; only C̄ is new.
        let (x, y) = self.views();
        let expected = shape_of(&y[0]);
        if shape_of(&cbar) != expected {
            return Err(Error::WrongShape {
                op: self.op.name(),
                name: "cotangent",
                of: self.op.output_name(0),
                expected,
                got: shape_of(&cbar),
            });
        }
        // `apply` checked the input sizes, so these allocations fit in memory.
        let mut out: [Array2<T>; N] = std::array::from_fn(|i| Array2::zeros(x[i].raw_dim()));
        let xs: [Shape; N] = std::array::from_fn(|i| shape_of(&x[i]));
        // Cotangent shapes: the differentiable outputs' only; `y` keeps the residuals.
        let ys: InShapes = y[..self.op.outputs()].iter().map(shape_of).collect();
        let mut grads: [Grad<'_, T>; N] = {
            let mut it = out.iter_mut();
            std::array::from_fn(|_| it.next().map_or(Grad::Skip, |o| Grad::Write(o.view_mut())))
        };
        let ybar = self.first_only(cbar);
        run_pullback(&self.op, &xs, &ys, &x, &y, &ybar, &mut grads, None)?;
        Ok(out)
    }

    /// The gradients for one cotangent per differentiable output, `None` meaning zero.
    pub fn backward_all(&self, ybar: &[Option<ArrayView2<'_, T>>]) -> Result<Vec<Array2<T>>> {
        let (x, y) = self.views();
        self.op.backward(&x, &y, ybar)
    }

    /// `X̄ᵢ += …` for the cotangent `C̄` of the (first) output, into each `Some` buffer;
    /// `None` skips that input's work.
    pub fn backward_add(
        &self,
        cbar: ArrayView2<'_, T>,
        grads: &mut [Option<ArrayViewMut2<'_, T>>; N],
    ) -> Result<()> {
        let (x, y) = self.views();
        self.op.backward_add(&x, &y, &self.first_only(cbar), grads)
    }

    /// The general reverse pass: one cotangent per differentiable output (`None` is
    /// zero), per input
    /// skip / first write / add, and an optional caller-owned workspace.
    pub fn backward_into(
        &self,
        ybar: &[Option<ArrayView2<'_, T>>],
        grads: &mut [Grad<'_, T>; N],
        ws: Option<&mut [T]>,
    ) -> Result<()> {
        let (x, y) = self.views();
        self.op.backward_into(&x, &y, ybar, grads, ws)
    }

    /// The tangent of the (first) output for the input tangents `[Ẋ₀, …]`.
    pub fn jvp(&self, xdot: [ArrayView2<'_, T>; N]) -> Result<Array2<T>> {
        let xdot = xdot.map(Some);
        Ok(self.jvp_all(&xdot)?.swap_remove(0))
    }

    /// The tangents of every differentiable output for input tangents, `None` meaning
    /// zero.
    pub fn jvp_all(&self, xdot: &[Option<ArrayView2<'_, T>>]) -> Result<Vec<Array2<T>>> {
        let (x, y) = self.views();
        self.op.jvp(&x, &y, xdot)
    }

    /// Shapes of the inputs.
    pub fn input_shapes(&self) -> [Shape; N] {
        std::array::from_fn(|i| shape_of(&self.inputs[i].view()))
    }
}

/// The exponent `e` of an exact scale `2ᵉ` that brings a matrix whose largest
/// magnitude is `big` near 1, when `big` lies outside `[MIN_POSITIVE/ε, MAX·ε]`, and 0
/// for any other (and for 0 or NaN). Outside that band the factorisations and solves
/// of BLAS and LAPACK lose the answer though it is representable: reciprocals of
/// subnormal pivots overflow, and sums of entries near `MAX` overflow where the
/// solution is moderate (`docs/math.md`, "Tiny and huge entries"). `|e|` is at most
/// 100 (`f32`) or 1000 (`f64`), where `2ᵉ` is exact and normal.
pub(crate) fn rescale_exponent<T: Real>(big: T) -> i32 {
    let low = T::min_positive_value() / T::epsilon();
    let high = T::max_value() * T::epsilon();
    if big.is_nan() || big <= T::zero() || (big >= low && big <= high) || !big.is_finite() {
        return 0;
    }
    let limit = if T::NAME == "f32" { 100 } else { 1000 };
    (-(big.to64().log2().floor() as i32)).clamp(-limit, limit)
}

/// The largest magnitude of the entries of `x` (0 if empty; NaN is passed over), by
/// contiguous slices where the layout has them.
pub(crate) fn max_magnitude<T: Real>(x: &ArrayView2<'_, T>) -> T {
    if let Some(s) = x.as_slice_memory_order() {
        return max_abs_slice(s);
    }
    x.rows()
        .into_iter()
        .fold(T::zero(), |m, r| match r.as_slice() {
            Some(s) => m.max(max_abs_slice(s)),
            None => r.iter().fold(m, |m, v| m.max(v.abs())),
        })
}

/// The largest magnitude in `x` (0 if empty; NaN is passed over), in eight running
/// maxima side by side: one would wait on every comparison, eight vectorise.
pub(crate) fn max_abs_slice<T: Real>(x: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks
        .remainder()
        .iter()
        .fold(T::zero(), |m, v| m.max(v.abs()));
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l = l.max(v.abs());
        }
    }
    lanes.iter().fold(rest, |m, &l| m.max(l))
}

/// Whether every entry of `x` is finite, by contiguous slices where the layout has
/// them.
pub(crate) fn all_finite<T: Real>(x: &ArrayView2<'_, T>) -> bool {
    if let Some(s) = x.as_slice_memory_order() {
        return all_finite_slice(s);
    }
    x.rows().into_iter().all(|r| match r.as_slice() {
        Some(s) => all_finite_slice(s),
        None => r.iter().all(|v| v.is_finite()),
    })
}

/// Whether every entry of `x` is finite: `0·v` is ±0 for a finite `v` and NaN for an
/// infinite or NaN one, and a NaN stays in the sum of eight lanes, which vectorise.
pub(crate) fn all_finite_slice<T: Real>(x: &[T]) -> bool {
    let mut lanes = [T::zero(); 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder().iter().all(|v| v.is_finite());
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v * T::zero();
        }
    }
    rest && lanes.iter().all(|&l| l == T::zero())
}

/// `x ← 2ᵉx`, in steps of exact normal powers of two: exact but where an entry
/// overflows or falls below the normal range, as the value it stands for does.
pub(crate) fn scale_pow2<T: Real>(mut x: ArrayViewMut2<'_, T>, mut e: i32) {
    let limit = if T::NAME == "f32" { 100 } else { 1000 };
    while e != 0 {
        let step = e.clamp(-limit, limit);
        let s = T::of(2f64.powi(step));
        x.mapv_inplace(|v| v * s);
        e -= step;
    }
}

/// Errors unless every diagonal entry of a triangular matrix or factor can be divided
/// by: [`Error::Singular`] at the first zero, [`Error::IllConditioned`] at the first
/// entry that is not zero but whose reciprocal overflows (a subnormal). TRSM multiplies
/// by reciprocals of the diagonal, so such an entry would give infinities even where
/// the exact solution is finite (`docs/math.md`, "Tiny pivots"). NaN passes through.
pub(crate) fn invertible_diagonal<T: Real>(op: &'static str, l: &ArrayView2<'_, T>) -> Result<()> {
    for (index, &d) in l.diag().iter().enumerate() {
        if d == T::zero() {
            return Err(Error::Singular { op, index });
        }
        if d.recip().is_infinite() {
            return Err(Error::IllConditioned {
                op,
                index,
                value: d.to64(),
            });
        }
    }
    Ok(())
}

/// Errors unless `shape` is square, naming the primitive and the input.
pub(crate) fn square(op: &'static str, name: &'static str, shape: Shape) -> Result<usize> {
    if shape.0 == shape.1 {
        Ok(shape.0)
    } else {
        Err(Error::NotSquare {
            op,
            name,
            got: shape,
        })
    }
}

/// Errors unless two shapes are equal, naming both.
pub(crate) fn same_shape(
    op: &'static str,
    lhs_name: &'static str,
    lhs: Shape,
    rhs_name: &'static str,
    rhs: Shape,
) -> Result<()> {
    if lhs == rhs {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op,
            what: "shapes differ",
            lhs_name,
            lhs,
            rhs_name,
            rhs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::scale_pow2;
    use ndarray::{array, s};

    /// Exponents past what one power of two holds (2¹²⁷ in `f32`, 2¹⁰²³ in `f64`) go in
    /// steps: the smallest `f32` subnormal times 2²⁰⁰ is 2⁵¹, and 2¹²⁰ times 2⁻²⁰⁰ is
    /// 2⁻⁸⁰, exactly; in `f64`, 2⁻¹⁰⁷⁴ times 2²⁰⁰⁰ is 2⁹²⁶.
    #[test]
    fn scaling_by_large_powers_of_two_is_exact_in_f32_and_f64() {
        let p = |e: i32| 2f64.powi(e);
        let mut x = array![
            [p(-149) as f32, 1.5 * p(-130) as f32],
            [p(120) as f32, -3.0]
        ];
        scale_pow2(x.slice_mut(s![..1, ..]), 200);
        scale_pow2(x.slice_mut(s![1.., ..1]), -200);
        let want = array![[p(51) as f32, 1.5 * p(70) as f32], [p(-80) as f32, -3.0]];
        assert_eq!(x, want);
        let mut y = array![[p(-1074), p(1000)]];
        scale_pow2(y.slice_mut(s![.., ..1]), 2000);
        scale_pow2(y.slice_mut(s![.., 1..]), -2000);
        assert_eq!(y, array![[p(926), p(-1000)]]);
    }
}
