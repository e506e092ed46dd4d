//! The primitives, one file per primitive or small family.
//!
//! Each primitive implements [`Primitive`] (slice-based, for the checker and for
//! tapes) and one of [`Unary`] / [`Binary`], whose `apply` gives a typed result that
//! keeps what the reverse pass needs: borrowed inputs and the owned output.

use crate::error::Result;
use crate::primitive::{check_arity, Primitive};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

pub mod add;
pub mod cho_solve;
pub mod cholesky;
pub mod elementwise;
pub mod logdet;
pub mod mask;
pub mod matmul;
pub mod reshape;
pub mod transpose;
pub mod triangular;

/// The result of a one-input primitive: `C` plus the borrowed input its rules need.
pub struct Out1<'a, P, T: Real> {
    op: P,
    x: ArrayView2<'a, T>,
    value: Array2<T>,
}

impl<'a, T: Real, P: Primitive<T>> Out1<'a, P, T> {
    /// The output `C`.
    pub fn value(&self) -> &Array2<T> {
        &self.value
    }
    /// The output `C`, consuming the result.
    pub fn into_value(self) -> Array2<T> {
        self.value
    }
    /// `Ā` for the cotangent `C̄`.
    pub fn backward(&self, cbar: ArrayView2<'_, T>) -> Result<Array2<T>> {
        let mut g = self
            .op
            .backward(&[self.x.view()], self.value.view(), cbar)?;
        Ok(g.remove(0))
    }
    /// `Ā += …` for the cotangent `C̄`.
    pub fn backward_into(&self, cbar: ArrayView2<'_, T>, abar: ArrayViewMut2<'_, T>) -> Result<()> {
        self.op
            .backward_into(&[self.x.view()], self.value.view(), cbar, &mut [Some(abar)])
    }
    /// `Ċ` for the tangent `Ȧ`.
    pub fn jvp(&self, adot: ArrayView2<'_, T>) -> Result<Array2<T>> {
        self.op.jvp(&[self.x.view()], self.value.view(), &[adot])
    }
}

/// The result of a two-input primitive: `C` plus the borrowed inputs its rules need.
pub struct Out2<'a, P, T: Real> {
    op: P,
    a: ArrayView2<'a, T>,
    b: ArrayView2<'a, T>,
    value: Array2<T>,
}

impl<'a, T: Real, P: Primitive<T>> Out2<'a, P, T> {
    /// The output `C`.
    pub fn value(&self) -> &Array2<T> {
        &self.value
    }
    /// The output `C`, consuming the result.
    pub fn into_value(self) -> Array2<T> {
        self.value
    }
    /// `(Ā, B̄)` for the cotangent `C̄`.
    pub fn backward(&self, cbar: ArrayView2<'_, T>) -> Result<(Array2<T>, Array2<T>)> {
        let mut g = self
            .op
            .backward(&[self.a.view(), self.b.view()], self.value.view(), cbar)?;
        let bbar = g.remove(1);
        Ok((g.remove(0), bbar))
    }
    /// `Ā += …`, `B̄ += …` into the buffers given; `None` skips that input's work.
    pub fn backward_into(
        &self,
        cbar: ArrayView2<'_, T>,
        abar: Option<ArrayViewMut2<'_, T>>,
        bbar: Option<ArrayViewMut2<'_, T>>,
    ) -> Result<()> {
        self.op.backward_into(
            &[self.a.view(), self.b.view()],
            self.value.view(),
            cbar,
            &mut [abar, bbar],
        )
    }
    /// `Ċ` for the tangents `Ȧ`, `Ḃ`.
    pub fn jvp(&self, adot: ArrayView2<'_, T>, bdot: ArrayView2<'_, T>) -> Result<Array2<T>> {
        self.op.jvp(
            &[self.a.view(), self.b.view()],
            self.value.view(),
            &[adot, bdot],
        )
    }
}

/// A one-input primitive with a typed `apply`.
///
/// `apply` takes the primitive by value, which copies the small `Copy` ones; for one
/// that holds data (a [`mask::Mask`]) apply a reference: `(&mask).apply(a)`.
pub trait Unary<T: Real>: Primitive<T> + Sized {
    /// Runs the forward pass and keeps what the rules need.
    fn apply<'a>(self, a: ArrayView2<'a, T>) -> Result<Out1<'a, Self, T>> {
        let value = self.forward(&[a.view()])?;
        Ok(Out1 {
            op: self,
            x: a,
            value,
        })
    }
}

/// A two-input primitive with a typed `apply`, taking the primitive as [`Unary`] does.
pub trait Binary<T: Real>: Primitive<T> + Sized {
    /// Runs the forward pass and keeps what the rules need.
    fn apply<'a>(self, a: ArrayView2<'a, T>, b: ArrayView2<'a, T>) -> Result<Out2<'a, Self, T>> {
        let value = self.forward(&[a.view(), b.view()])?;
        Ok(Out2 {
            op: self,
            a,
            b,
            value,
        })
    }
}

/// Splits a slice of one view, with an arity error naming the primitive otherwise.
pub(crate) fn one<'s, 'a, T>(
    name: &str,
    what: &'static str,
    xs: &'s [ArrayView2<'a, T>],
) -> Result<&'s ArrayView2<'a, T>> {
    check_arity(name, what, 1, xs.len())?;
    Ok(&xs[0])
}

/// Splits a slice of two views, with an arity error naming the primitive otherwise.
pub(crate) fn two<'s, 'a, T>(
    name: &str,
    what: &'static str,
    xs: &'s [ArrayView2<'a, T>],
) -> Result<(&'s ArrayView2<'a, T>, &'s ArrayView2<'a, T>)> {
    check_arity(name, what, 2, xs.len())?;
    Ok((&xs[0], &xs[1]))
}

impl<T: Real, P: Unary<T>> Unary<T> for &P {}
impl<T: Real, P: Binary<T>> Binary<T> for &P {}
