//! Elementwise functions `C = g(A)` and the Hadamard product `C = A ⊙ B`.
//!
//! A scalar function is an [`ElemFn`]: its value, its derivative, and what the
//! derivative reads ([`Deriv`]): the input `x`, the output `y = g(x)` when that is
//! cheaper than recomputing from `x` (`tanh' = 1 − y²`, `σ' = y(1 − y)`, `exp' = y`),
//! or both. [`Map`] turns any `ElemFn`, the crate's or your own, into a [`Rule`] whose
//! reverse pass keeps only what `g'` reads:
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
//!     fn reads(&self) -> Deriv {
//!         Deriv::Input
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
//! let c = Map(Cube).apply([a.view()])?;
//! assert_eq!(c.value()[(0, 1)], -8.0);
//! let cbar = array![[1.0, 1.0], [1.0, 1.0]];
//! let [abar] = c.backward(cbar.view())?;
//! assert_eq!(abar[(1, 1)], 27.0);
//!
//! let t = Map::new(Tanh).apply([a.view()])?;
//! assert!((t.value()[(0, 0)] - 1.0f64.tanh()).abs() < 1e-15);
//! # Ok::<(), matgrad::Error>(())
//! ```

use super::same_shape;
use crate::blas::vmath;
use crate::error::{Result, Shape};
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2, Zip};
use num_traits::Float;
use smallvec::smallvec;

/// What the derivative `g'` of an [`ElemFn`] reads: the input `x`, the output
/// `y = g(x)`, or both. This is what [`Map`] declares in [`Rule::saves`], so a caller
/// keeps only that value for the reverse pass.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Deriv {
    /// `g'` reads `x` only (`sin' = cos x`).
    Input,
    /// `g'` reads `y = g(x)` only (`tanh' = 1 − y²`).
    Output,
    /// `g'` reads both `x` and `y`.
    Both,
}

/// A differentiable scalar function `y = g(x)`, applied entrywise by [`Map`].
pub trait ElemFn<T: Real> {
    /// Name used in reports and errors ("Tanh").
    fn name(&self) -> &'static str;
    /// What [`ElemFn::df`] reads: `x`, `y`, or both.
    fn reads(&self) -> Deriv;
    /// `g(x)`.
    fn f(&self, x: T) -> T;
    /// `g'(x)`, given `x` and `y = g(x)`. In the reverse pass only what
    /// [`ElemFn::reads`] declares is real: for [`Deriv::Input`] the `y` passed is `x`
    /// again, for [`Deriv::Output`] the `x` passed is `y` again.
    fn df(&self, x: T, y: T) -> T;
    /// `g'(x)·v` for one entry `v` of a cotangent or a tangent, given `x` and `y` as for
    /// [`ElemFn::df`]: what [`Map`]'s rules compute.
    ///
    /// Exactly zero when `v` is zero, also where `g'(x)` overflows (`∞·0` would be NaN).
    /// Override it to order the operations so that the product overflows only when its
    /// value does: [`Square`] computes `2x·v` as `2(x·v)`, [`Log`] computes `v/x`, not
    /// `(1/x)·v`.
    #[inline]
    fn df_mul(&self, x: T, y: T, v: T) -> T {
        if v == T::zero() {
            T::zero()
        } else {
            self.df(x, y) * v
        }
    }
    /// `y[i] = g(x[i])` over a contiguous run of entries, the forward pass of [`Map`]
    /// where input and output are laid out alike. Override it with a loop that
    /// vectorises (see [`Tanh`]); it must give what [`ElemFn::f`] gives, bit for bit, so
    /// that a strided view gets the same answer as a contiguous one.
    #[inline]
    fn f_slice(&self, x: &[T], y: &mut [T]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = self.f(x);
        }
    }
}

/// `C = g(A)` entrywise, for any [`ElemFn`] `g`.
///
/// Forward `Ċ = g'(A) ⊙ Ȧ`; reverse `Ā = g'(A) ⊙ C̄` (Giles 2008; `docs/math.md`),
/// entry by entry through [`ElemFn::df_mul`], so a zero entry of `C̄` or `Ȧ` gives a
/// zero entry even where `g'` overflows. The reverse rule reads `A`, `C` or both, as
/// [`ElemFn::reads`] says: `C` where `g'` is cheaper from it.
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

impl<T: Real, G: ElemFn<T>> Rule<T> for Map<G> {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        Ok(smallvec![x[0]])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        if !wanted[0] {
            return Saves::NONE;
        }
        match self.0.reads() {
            Deriv::Input => Saves::NONE.input(0),
            Deriv::Output => Saves::NONE.output(0),
            Deriv::Both => Saves::NONE.input(0).output(0),
        }
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let (x, mut y) = (x[0].view(), y[0].view_mut());
        if x.strides() == y.strides() {
            if let (Some(xs), Some(ys)) = (x.as_slice_memory_order(), y.as_slice_memory_order_mut())
            {
                self.0.f_slice(xs, ys);
                return Ok(());
            }
        }
        Zip::from(y).and(&x).for_each(|y, &x| *y = self.0.f(x));
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let Some((g, acc)) = grads[0].target() else {
            return Ok(());
        };
        let (f, cbar) = (&self.0, ybar.view(0));
        let z = Zip::from(g).and(&cbar);
        // Only the declared value is read; the other slot of `df` gets the same one.
        match f.reads() {
            Deriv::Input => z
                .and(&x[0])
                .for_each(|g, &c, &x| acc.store(g, f.df_mul(x, x, c))),
            Deriv::Output => z
                .and(&y[0])
                .for_each(|g, &c, &y| acc.store(g, f.df_mul(y, y, c))),
            Deriv::Both => z
                .and(&x[0])
                .and(&y[0])
                .for_each(|g, &c, &x, &y| acc.store(g, f.df_mul(x, y, c))),
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        Zip::from(&mut ydot[0])
            .and(&x[0])
            .and(&y[0])
            .and(&xdot.view(0))
            .for_each(|d, &x, &y, &a| *d = self.0.df_mul(x, y, a));
        Ok(())
    }
}

macro_rules! elem_fn {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $reads:ident,
     |$x:ident| $f:expr, |$dx:ident, $y:ident| $df:expr
     $(, mul |$mx:ident, $my:ident, $mv:ident| $mul:expr)?) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
        pub struct $ty;

        impl<T: Real> ElemFn<T> for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn reads(&self) -> Deriv {
                Deriv::$reads
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
            $(
                #[inline]
                #[allow(unused_variables)]
                fn df_mul(&self, $mx: T, $my: T, $mv: T) -> T {
                    if $mv == T::zero() {
                        T::zero()
                    } else {
                        $mul
                    }
                }
            )?
        }
    };
}

/// `tanh x`, with `tanh' = 1 − y²` from the output.
///
/// Computed by [`crate::blas::vmath::tanh`] (in `f64` for `f32`), within a few units in
/// the last place of the C library's `tanh` and, on contiguous data, on the CPU's
/// vector units: several times faster than the C library's entry-by-entry calls.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Tanh;

impl<T: Real> ElemFn<T> for Tanh {
    fn name(&self) -> &'static str {
        "Tanh"
    }
    fn reads(&self) -> Deriv {
        Deriv::Output
    }
    #[inline]
    fn f(&self, x: T) -> T {
        T::of(vmath::tanh(x.to64()))
    }
    #[inline]
    fn df(&self, _x: T, y: T) -> T {
        T::one() - y * y
    }
    fn f_slice(&self, x: &[T], y: &mut [T]) {
        vmath::tanh_slice(x, y);
    }
}
elem_fn!(
    /// The logistic sigmoid `σ(x) = 1/(1 + e⁻ˣ)`, with `σ' = y(1 − y)` from the output.
    ///
    /// Evaluated as `1/(1 + e⁻ˣ)` for `x ≥ 0` and `eˣ/(1 + eˣ)` for `x < 0`, so the
    /// exponential never overflows and large negative inputs keep their relative
    /// precision instead of rounding to `0` early.
    Sigmoid, "Sigmoid", Output,
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
    Relu, "Relu", Input,
    |x| if x < T::zero() { T::zero() } else { x },
    |x, y| if x > T::zero() { T::one() } else { T::zero() }
);
elem_fn!(
    /// `eˣ`, with `exp' = y` from the output. `exp'(x)·v` is `y·v` where `y` is finite;
    /// where `y` has overflowed it is `(e^(x/2)·v)·e^(x/2)` (in `f64`), finite where the
    /// product is (`e¹⁰⁰·10⁻⁴⁰` in `f32`), so the reverse rule reads the input too.
    Exp, "Exp", Both, |x| Float::exp(x), |x, y| y,
    mul |x, y, v| if y.is_finite() { y * v } else { exp_mul(x, v) }
);

/// `eˣ·v` without forming `eˣ`, which overflows: `(e^(x/2)·v)·e^(x/2)` in `f64`, one
/// more rounding than `eˣ·v`, finite for `x` up to twice `f64`'s overflow threshold.
fn exp_mul<T: Real>(x: T, v: T) -> T {
    let h = (x.to64() / 2.0).exp();
    T::of(h * v.to64() * h)
}
elem_fn!(
    /// The natural logarithm, `log' = 1/x`. As with `f64::ln`, `log 0 = −∞` and
    /// negative inputs give `NaN`: no error, no panic. `log'(x)·v` is `v/x`, finite at
    /// a subnormal `x` where `1/x` overflows.
    Log, "Log", Input, |x| Float::ln(x), |x, y| Float::recip(x),
    mul |x, y, v| v / x
);
elem_fn!(
    /// `sin x`, `sin' = cos x`.
    Sin, "Sin", Input, |x| Float::sin(x), |x, y| Float::cos(x)
);
elem_fn!(
    /// `cos x`, `cos' = −sin x`.
    Cos, "Cos", Input, |x| Float::cos(x), |x, y| -Float::sin(x)
);
elem_fn!(
    /// `x²`, `(x²)' = 2x`. `(x²)'·v` is `2(x·v)`, finite where `2x` alone overflows.
    Square, "Square", Input, |x| x * x, |x, y| x + x,
    mul |x, y, v| {
        let p = x * v;
        p + p
    }
);
elem_fn!(
    /// `softplus x = log(1 + eˣ)`, with `softplus' = σ(x)`, the logistic sigmoid, from
    /// the input.
    ///
    /// Evaluated as `x + log1p(e⁻ˣ)` for `x > 0` and `log1p(eˣ)` otherwise, so the
    /// exponential never overflows (`softplus 1000 = 1000`), large negative inputs keep
    /// their relative precision (`softplus(−40) ≈ e⁻⁴⁰`, not 0) and the result is finite
    /// for every finite input. The derivative is [`Sigmoid`]'s stable form.
    Softplus, "Softplus", Input,
    |x| if x > T::zero() {
        x + Float::ln_1p(Float::exp(-x))
    } else {
        Float::ln_1p(Float::exp(x))
    },
    |x, y| if x >= T::zero() {
        T::one() / (T::one() + Float::exp(-x))
    } else {
        let e = Float::exp(x);
        e / (T::one() + e)
    }
);

const HADAMARD: &str = "Hadamard";

/// `C = A ⊙ B`, the entrywise product of two matrices of the same shape.
///
/// Forward `Ċ = Ȧ ⊙ B + A ⊙ Ḃ`; reverse `Ā = C̄ ⊙ B`, `B̄ = C̄ ⊙ A` (Giles 2008;
/// `docs/math.md`). The reverse rule reads `B` only for `Ā` and `A` only for `B̄`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Hadamard;

impl<T: Real> Rule<T> for Hadamard {
    fn name(&self) -> &'static str {
        HADAMARD
    }
    fn arity(&self) -> usize {
        2
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        same_shape(HADAMARD, "A", x[0], "B", x[1])?;
        Ok(smallvec![x[0]])
    }
    fn saves(&self, wanted: &[bool]) -> Saves {
        let mut s = Saves::NONE;
        if wanted[0] {
            s = s.input(1);
        }
        if wanted[1] {
            s = s.input(0);
        }
        s
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        Zip::from(&mut y[0])
            .and(&x[0])
            .and(&x[1])
            .for_each(|c, &a, &b| *c = a * b);
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
        let cbar = ybar.view(0);
        // Ā = C̄ ⊙ B reads B, B̄ = C̄ ⊙ A reads A.
        for (i, other) in [(0, &x[1]), (1, &x[0])] {
            if let Some((g, acc)) = grads[i].target() {
                Zip::from(g)
                    .and(&cbar)
                    .and(other)
                    .for_each(|g, &c, &o| acc.store(g, c * o));
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
        let (a, b, c) = (&x[0], &x[1], &mut ydot[0]);
        // A missing tangent is zero and is skipped, as in MatMul.
        match (xdot.get(0), xdot.get(1)) {
            (Some(ad), Some(bd)) => Zip::from(c)
                .and(&ad)
                .and(b)
                .and(a)
                .and(&bd)
                .for_each(|c, &ad, &b, &a, &bd| *c = ad * b + a * bd),
            (Some(ad), None) => Zip::from(c)
                .and(&ad)
                .and(b)
                .for_each(|c, &ad, &b| *c = ad * b),
            (None, Some(bd)) => Zip::from(c)
                .and(a)
                .and(&bd)
                .for_each(|c, &a, &bd| *c = a * bd),
            (None, None) => c.fill(T::zero()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitive::Primitive;
    use ndarray::{array, Array2};

    /// `Ā` with the value `reads` does not declare replaced by NaN.
    fn abar_with_placeholder<G: ElemFn<f64>>(g: G, a: &Array2<f64>) -> Array2<f64> {
        let map = Map(g);
        let c = map.forward(&[a.view()]).unwrap().remove(0);
        let saves = map.saves(&[true]);
        let nan = a.mapv(|_| f64::NAN);
        let x = if saves.reads_input(0) {
            a.view()
        } else {
            nan.view()
        };
        let y = if saves.reads_output(0) {
            c.view()
        } else {
            nan.view()
        };
        let cbar = Array2::ones(a.dim());
        let mut abar = Array2::from_elem(a.dim(), f64::NAN);
        map.backward_into(
            &[x],
            &[y],
            &[Some(cbar.view())],
            &mut [Grad::Write(abar.view_mut())],
            None,
        )
        .unwrap();
        abar
    }

    #[test]
    fn reverse_rules_read_only_what_they_declare() {
        let a = array![[0.5, -1.0], [2.0, 0.25]];
        let close = |g: Array2<f64>, d: fn(f64) -> f64| {
            Zip::from(&g)
                .and(&a)
                .for_each(|&g, &x| assert!((g - d(x)).abs() < 1e-14, "{g} vs {}", d(x)));
        };
        close(abar_with_placeholder(Tanh, &a), |x| 1.0 - x.tanh().powi(2));
        close(abar_with_placeholder(Sigmoid, &a), |x| {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 - s)
        });
        close(abar_with_placeholder(Exp, &a), f64::exp);
        close(abar_with_placeholder(Relu, &a), |x| {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        });
        close(abar_with_placeholder(Sin, &a), f64::cos);
        close(abar_with_placeholder(Cos, &a), |x| -x.sin());
        close(abar_with_placeholder(Square, &a), |x| 2.0 * x);
        close(abar_with_placeholder(Softplus, &a), |x| {
            1.0 / (1.0 + (-x).exp())
        });
        let p = array![[0.5, 1.0], [2.0, 0.25]];
        let g = abar_with_placeholder(Log, &p);
        Zip::from(&g)
            .and(&p)
            .for_each(|&g, &x| assert!((g - 1.0 / x).abs() < 1e-14));
    }

    #[test]
    fn saves_follow_reads() {
        assert_eq!(
            Rule::<f64>::saves(&Map(Tanh), &[true]),
            Saves::NONE.output(0)
        );
        assert_eq!(Rule::<f64>::saves(&Map(Log), &[true]), Saves::NONE.input(0));
        assert_eq!(Rule::<f64>::saves(&Map(Log), &[false]), Saves::NONE);
        assert_eq!(
            Rule::<f64>::saves(&Hadamard, &[true, false]),
            Saves::NONE.input(1)
        );
        assert_eq!(
            Rule::<f64>::saves(&Hadamard, &[false, true]),
            Saves::NONE.input(0)
        );
    }

    #[test]
    fn hadamard_with_one_tangent_missing() {
        let a = array![[1.0, f64::INFINITY]];
        let b = array![[2.0, 3.0]];
        let c = Hadamard.forward(&[a.view(), b.view()]).unwrap().remove(0);
        let ad = array![[1.0, 0.0]];
        let cd = Hadamard
            .jvp(&[a.view(), b.view()], &[c.view()], &[Some(ad.view()), None])
            .unwrap()
            .remove(0);
        // A missing Ḃ is skipped, not multiplied by A's infinity.
        assert_eq!(cd, array![[2.0, 0.0]]);
    }
}
