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
use crate::primitive::{Grad, Primitive};
use crate::Real;
use ndarray::{ArcArray2, Array2, ArrayView2, ArrayViewMut2};
use smallvec::SmallVec;

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

/// Views of a few matrices, inline up to four.
type Views<'v, T> = SmallVec<[ArrayView2<'v, T>; 4]>;

/// A primitive applied to its inputs: the outputs, plus the inputs its rules read.
/// One type for every arity and number of outputs.
pub struct Applied<'a, P, T> {
    op: P,
    inputs: SmallVec<[Arg<'a, T>; 2]>,
    outputs: SmallVec<[ArcArray2<T>; 1]>,
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
    ) -> Result<Applied<'a, Self, T>> {
        let inputs: SmallVec<[Arg<'a, T>; 2]> = inputs.into_iter().map(Into::into).collect();
        let views: SmallVec<[ArrayView2<'_, T>; 4]> = inputs.iter().map(Arg::view).collect();
        let outputs = self
            .forward(&views)?
            .into_iter()
            .map(Array2::into_shared)
            .collect();
        drop(views);
        Ok(Applied {
            op: self,
            inputs,
            outputs,
        })
    }
}

impl<T: Real, P: Primitive<T>> Apply<T> for P {}

impl<'a, P: Primitive<T>, T: Real> Applied<'a, P, T> {
    /// The primitive.
    pub fn op(&self) -> &P {
        &self.op
    }
    /// The (first) output `C`.
    pub fn value(&self) -> &ArcArray2<T> {
        &self.outputs[0]
    }
    /// All outputs, in the primitive's order.
    pub fn outputs(&self) -> &[ArcArray2<T>] {
        &self.outputs
    }
    /// The (first) output `C`, consuming the result (no copy unless it is shared).
    pub fn into_value(self) -> Array2<T> {
        self.into_outputs().swap_remove(0)
    }
    /// All outputs, consuming the result.
    pub fn into_outputs(self) -> Vec<Array2<T>> {
        self.outputs.into_iter().map(|o| o.into_owned()).collect()
    }

    fn views(&self) -> (Views<'_, T>, Views<'_, T>) {
        (
            self.inputs.iter().map(Arg::view).collect(),
            self.outputs.iter().map(|o| o.view()).collect(),
        )
    }

    fn first_only<'c>(&self, cbar: ArrayView2<'c, T>) -> SmallVec<[Option<ArrayView2<'c, T>>; 4]> {
        let mut ybar: SmallVec<[Option<ArrayView2<'c, T>>; 4]> =
            (0..self.outputs.len()).map(|_| None).collect();
        ybar[0] = Some(cbar);
        ybar
    }

    /// The gradients `[X̄₀, …]` for the cotangent `C̄` of the (first) output, as many as
    /// the primitive has inputs: `let [abar, bbar] = c.backward(cbar)?;`.
    pub fn backward<const N: usize>(&self, cbar: ArrayView2<'_, T>) -> Result<[Array2<T>; N]> {
        if N != self.inputs.len() {
            return Err(Error::Arity {
                op: self.op.name(),
                what: "gradients asked of backward",
                expected: self.inputs.len(),
                got: N,
            });
        }
        let grads = self.backward_all(&self.first_only(cbar))?;
        grads.try_into().map_err(|g: Vec<Array2<T>>| Error::Arity {
            op: self.op.name(),
            what: "gradients",
            expected: N,
            got: g.len(),
        })
    }

    /// The gradients for one cotangent per output, `None` meaning zero.
    pub fn backward_all(&self, ybar: &[Option<ArrayView2<'_, T>>]) -> Result<Vec<Array2<T>>> {
        let (x, y) = self.views();
        self.op.backward(&x, &y, ybar)
    }

    /// `X̄ᵢ += …` for the cotangent `C̄` of the (first) output, into each `Some` buffer;
    /// `None` skips that input's work.
    pub fn backward_add(
        &self,
        cbar: ArrayView2<'_, T>,
        grads: &mut [Option<ArrayViewMut2<'_, T>>],
    ) -> Result<()> {
        let (x, y) = self.views();
        self.op.backward_add(&x, &y, &self.first_only(cbar), grads)
    }

    /// The general reverse pass: one cotangent per output (`None` is zero), per input
    /// skip / first write / add, and an optional caller-owned workspace.
    pub fn backward_into(
        &self,
        ybar: &[Option<ArrayView2<'_, T>>],
        grads: &mut [Grad<'_, T>],
        ws: Option<&mut [T]>,
    ) -> Result<()> {
        let (x, y) = self.views();
        self.op.backward_into(&x, &y, ybar, grads, ws)
    }

    /// The tangent of the (first) output for the input tangents `[Ẋ₀, …]`.
    pub fn jvp<const N: usize>(&self, xdot: [ArrayView2<'_, T>; N]) -> Result<Array2<T>> {
        let xdot: SmallVec<[Option<ArrayView2<'_, T>>; 4]> = xdot.into_iter().map(Some).collect();
        Ok(self.jvp_all(&xdot)?.swap_remove(0))
    }

    /// The tangents of every output for input tangents `None` meaning zero.
    pub fn jvp_all(&self, xdot: &[Option<ArrayView2<'_, T>>]) -> Result<Vec<Array2<T>>> {
        let (x, y) = self.views();
        self.op.jvp(&x, &y, xdot)
    }

    /// Shapes of the inputs.
    pub fn input_shapes(&self) -> Vec<Shape> {
        self.inputs.iter().map(|a| shape_of(&a.view())).collect()
    }
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
