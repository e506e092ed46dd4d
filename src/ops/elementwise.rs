//! Elementwise functions `C = g(A)` and the Hadamard product `C = A ⊙ B`.
//!
//! A scalar function is an [`ElemFn`]: its value and its derivative, which may read
//! the output `y = g(x)` when that is cheaper than recomputing from `x`
//! (`tanh' = 1 − y²`, `σ' = y(1 − y)`, `exp' = y`). [`Map`] turns any `ElemFn`, the
//! crate's or your own, into a [`Primitive`]:
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! /// `g(x) = x³`, with `g'(x) = 3x²`.
//! struct Cube;
//! impl<T: Real> ElemFn<T> for Cube {
//!     fn name(&self) -> &'static str {
//!         "Cube"
//!     }
//!     fn f(&self, x: T) -> T {
//!         x * x * x
//!     }
//!     fn df(&self, x: T, _y: T) -> T {
//!         T::of(3.0) * x * x
//!     }
//! }
//!
//! let a = array![[1.0, -2.0], [0.5, 3.0]];
//! let c = Map(Cube).apply(a.view())?;
//! assert_eq!(c.value()[(0, 1)], -8.0);
//! let abar = c.backward(array![[1.0, 1.0], [1.0, 1.0]].view())?;
//! assert_eq!(abar[(1, 1)], 27.0);
//!
//! let t = Map::new(Tanh).apply(a.view())?;
//! assert!((t.value()[(0, 0)] - 1.0f64.tanh()).abs() < 1e-15);
//! # Ok::<(), matgrad::Error>(())
//! ```

use super::add::same_shape;
use super::{one, two, Binary, Unary};
use crate::error::{expect_shape, shape_of, Result};
use crate::primitive::{check_arity, Primitive};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};
use num_traits::Float;

/// A differentiable scalar function `y = g(x)`, applied entrywise by [`Map`].
pub trait ElemFn<T: Real> {
    /// Name used in reports and errors ("Tanh").
    fn name(&self) -> &'static str;
    /// `g(x)`.
    fn f(&self, x: T) -> T;
    /// `g'(x)`, given `x` and `y = g(x)` so that either may be used.
    fn df(&self, x: T, y: T) -> T;
}

/// `C = g(A)` entrywise, for any [`ElemFn`] `g`.
///
/// Forward `Ċ = g'(A) ⊙ Ȧ`; reverse `Ā = g'(A) ⊙ C̄` (Giles 2008). The rules
/// read `C` where `g'` is cheaper from it. The input `C` passed to `backward`/`jvp`
/// must be this primitive's own output.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Map<G>(pub G);

impl<G> Map<G> {
    /// `C = g(A)`.
    pub fn new(g: G) -> Self {
        Map(g)
    }
    /// The scalar function.
    pub fn func(&self) -> &G {
        &self.0
    }
}

impl<G> From<G> for Map<G> {
    fn from(g: G) -> Self {
        Map(g)
    }
}

/// Errors unless the output `C` and the cotangent or tangent `x` have `A`'s shape.
fn check_map<T: Real>(
    op: &'static str,
    a: &ArrayView2<'_, T>,
    output: &ArrayView2<'_, T>,
    (name, of, x): (&'static str, &'static str, &ArrayView2<'_, T>),
) -> Result<()> {
    expect_shape(op, "C", "A", shape_of(a), shape_of(output))?;
    expect_shape(op, name, of, shape_of(a), shape_of(x))
}

impl<T: Real, G: ElemFn<T>> Primitive<T> for Map<G> {
    fn name(&self) -> String {
        self.0.name().to_string()
    }
    fn arity(&self) -> usize {
        1
    }
    fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>> {
        let a = one(self.0.name(), "inputs", inputs)?;
        Ok(a.map(|&x| self.0.f(x)))
    }
    fn backward(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
    ) -> Result<Vec<Array2<T>>> {
        let op = self.0.name();
        let a = one(op, "inputs", inputs)?;
        check_map(op, a, &output, ("C̄", "C", &cbar))?;
        let g = Zip::from(a)
            .and(&output)
            .and(&cbar)
            .map_collect(|&x, &y, &c| self.0.df(x, y) * c);
        Ok(vec![g])
    }
    fn backward_into(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        grads: &mut [Option<ArrayViewMut2<'_, T>>],
    ) -> Result<()> {
        let op = self.0.name();
        let a = one(op, "inputs", inputs)?;
        check_arity(op, "gradient buffers", 1, grads.len())?;
        check_map(op, a, &output, ("C̄", "C", &cbar))?;
        if let Some(g) = grads[0].as_mut() {
            expect_shape(op, "Ā buffer", "A", shape_of(a), shape_of(g))?;
            Zip::from(g)
                .and(a)
                .and(&output)
                .and(&cbar)
                .for_each(|g, &x, &y, &c| *g += self.0.df(x, y) * c);
        }
        Ok(())
    }
    fn jvp(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        tangents: &[ArrayView2<'_, T>],
    ) -> Result<Array2<T>> {
        let op = self.0.name();
        let a = one(op, "inputs", inputs)?;
        let ad = one(op, "tangents", tangents)?;
        check_map(op, a, &output, ("Ȧ", "A", ad))?;
        Ok(Zip::from(a)
            .and(&output)
            .and(ad)
            .map_collect(|&x, &y, &d| self.0.df(x, y) * d))
    }
}

impl<T: Real, G: ElemFn<T>> Unary<T> for Map<G> {}

macro_rules! elem_fn {
    ($(#[$doc:meta])* $ty:ident, $name:literal, |$x:ident| $f:expr, |$dx:ident, $y:ident| $df:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
        pub struct $ty;

        impl<T: Real> ElemFn<T> for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            #[inline]
            fn f(&self, $x: T) -> T {
                $f
            }
            #[inline]
            #[allow(unused_variables)]
            fn df(&self, $dx: T, $y: T) -> T {
                $df
            }
        }
    };
}

elem_fn!(
    /// `tanh x`, with `tanh' = 1 − y²` from the output.
    Tanh, "Tanh", |x| Float::tanh(x), |x, y| T::one() - y * y
);
elem_fn!(
    /// The logistic sigmoid `σ(x) = 1/(1 + e⁻ˣ)`, with `σ' = y(1 − y)` from the output.
    ///
    /// Evaluated as `1/(1 + e⁻ˣ)` for `x ≥ 0` and `eˣ/(1 + eˣ)` for `x < 0`, so the
    /// exponential never overflows and large negative inputs keep their relative
    /// precision instead of rounding to `0` early.
    Sigmoid, "Sigmoid",
    |x| if x >= T::zero() {
        T::one() / (T::one() + Float::exp(-x))
    } else {
        let e = Float::exp(x);
        e / (T::one() + e)
    },
    |x, y| y * (T::one() - y)
);
elem_fn!(
    /// `max(x, 0)`. At the kink the derivative is taken as `g'(0) = 0`, the usual
    /// subgradient convention. `NaN` passes through.
    Relu, "Relu",
    |x| if x < T::zero() { T::zero() } else { x },
    |x, y| if x > T::zero() { T::one() } else { T::zero() }
);
elem_fn!(
    /// `eˣ`, with `exp' = y` from the output.
    Exp, "Exp", |x| Float::exp(x), |x, y| y
);
elem_fn!(
    /// The natural logarithm, `log' = 1/x`. As with `f64::ln`, `log 0 = −∞` and
    /// negative inputs give `NaN`: no error, no panic.
    Log, "Log", |x| Float::ln(x), |x, y| Float::recip(x)
);
elem_fn!(
    /// `sin x`, `sin' = cos x`.
    Sin, "Sin", |x| Float::sin(x), |x, y| Float::cos(x)
);
elem_fn!(
    /// `cos x`, `cos' = −sin x`.
    Cos, "Cos", |x| Float::cos(x), |x, y| -Float::sin(x)
);
elem_fn!(
    /// `x²`, `(x²)' = 2x`.
    Square, "Square", |x| x * x, |x, y| x + x
);

const HADAMARD: &str = "Hadamard";

/// `C = A ⊙ B`, the entrywise product of two matrices of the same shape.
///
/// Forward `Ċ = Ȧ ⊙ B + A ⊙ Ḃ`; reverse `Ā = C̄ ⊙ B`, `B̄ = C̄ ⊙ A` (Giles 2008).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Hadamard;

impl<T: Real> Primitive<T> for Hadamard {
    fn name(&self) -> String {
        HADAMARD.to_string()
    }
    fn arity(&self) -> usize {
        2
    }
    fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>> {
        let (a, b) = two(HADAMARD, "inputs", inputs)?;
        same_shape(HADAMARD, "A", a, "B", b)?;
        Ok(Zip::from(a).and(b).map_collect(|&x, &y| x * y))
    }
    fn backward(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
    ) -> Result<Vec<Array2<T>>> {
        let (a, b) = two(HADAMARD, "inputs", inputs)?;
        same_shape(HADAMARD, "A", a, "B", b)?;
        expect_shape(HADAMARD, "C̄", "C", shape_of(a), shape_of(&cbar))?;
        let abar = Zip::from(&cbar).and(b).map_collect(|&c, &y| c * y);
        let bbar = Zip::from(&cbar).and(a).map_collect(|&c, &x| c * x);
        Ok(vec![abar, bbar])
    }
    fn backward_into(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        grads: &mut [Option<ArrayViewMut2<'_, T>>],
    ) -> Result<()> {
        let (a, b) = two(HADAMARD, "inputs", inputs)?;
        check_arity(HADAMARD, "gradient buffers", 2, grads.len())?;
        same_shape(HADAMARD, "A", a, "B", b)?;
        expect_shape(HADAMARD, "C̄", "C", shape_of(a), shape_of(&cbar))?;
        if let Some(g) = grads[0].as_mut() {
            expect_shape(HADAMARD, "Ā buffer", "A", shape_of(a), shape_of(g))?;
            Zip::from(g)
                .and(&cbar)
                .and(b)
                .for_each(|g, &c, &y| *g += c * y);
        }
        if let Some(g) = grads[1].as_mut() {
            expect_shape(HADAMARD, "B̄ buffer", "B", shape_of(b), shape_of(g))?;
            Zip::from(g)
                .and(&cbar)
                .and(a)
                .for_each(|g, &c, &x| *g += c * x);
        }
        Ok(())
    }
    fn jvp(
        &self,
        inputs: &[ArrayView2<'_, T>],
        _output: ArrayView2<'_, T>,
        tangents: &[ArrayView2<'_, T>],
    ) -> Result<Array2<T>> {
        let (a, b) = two(HADAMARD, "inputs", inputs)?;
        let (ad, bd) = two(HADAMARD, "tangents", tangents)?;
        same_shape(HADAMARD, "A", a, "B", b)?;
        expect_shape(HADAMARD, "Ȧ", "A", shape_of(a), shape_of(ad))?;
        expect_shape(HADAMARD, "Ḃ", "B", shape_of(b), shape_of(bd))?;
        Ok(Zip::from(ad)
            .and(b)
            .and(a)
            .and(bd)
            .map_collect(|&ad, &b, &a, &bd| ad * b + a * bd))
    }
}

impl<T: Real> Binary<T> for Hadamard {}
