//! Rearrangements that keep every entry: reshape in row- or column-major order,
//! `vec(A)` (the columns of `A` stacked into one column) and its inverse.
//!
//! For a rearrangement `C = r(A)`, `Ċ = r(Ȧ)` and `Ā = r⁻¹(C̄)` (Giles 2008).
//! Entries are read in the logical order of the matrix, so a transposed or strided
//! view reshapes as the matrix it shows, not as its memory. Outputs are in standard
//! layout.

use super::{one, Unary};
use crate::error::{expect_shape, shape_of, Error, Result, Shape};
use crate::primitive::{check_arity, Primitive};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

/// The order in which a reshape reads and writes entries.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub enum Order {
    /// Along rows first, as C and numpy's default.
    #[default]
    RowMajor,
    /// Down columns first, as Fortran, MATLAB and `vec`.
    ColMajor,
}

/// `C = reshape(A, rows×cols)`, entries taken and placed in `order`.
///
/// Forward `Ċ = reshape(Ȧ)`; reverse `Ā = C̄` reshaped back to `A`'s shape in the
/// same order (Giles 2008). A target with a different number of entries is
/// [`Error::BadReshape`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Reshape {
    /// Rows of `C`.
    pub rows: usize,
    /// Columns of `C`.
    pub cols: usize,
    /// Reading and writing order.
    pub order: Order,
}

/// `c = vec(A)`: the columns of the `m×n` matrix `A` stacked into an `mn×1` column.
///
/// Forward `ċ = vec(Ȧ)`; reverse `Ā = unvec(c̄)` (Giles 2008).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Vec;

/// `C = unvec(a)`: an `(rows·cols)×1` column cut into `cols` columns of length `rows`,
/// the inverse of [`Vec`].
///
/// Forward `Ċ = unvec(ȧ)`; reverse `ā = vec(C̄)` (Giles 2008).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Unvec {
    /// Rows of `C`.
    pub rows: usize,
    /// Columns of `C`.
    pub cols: usize,
}

impl Reshape {
    /// `rows×cols` in `order`.
    pub fn new(rows: usize, cols: usize, order: Order) -> Self {
        Reshape { rows, cols, order }
    }
    /// `rows×cols`, row-major.
    pub fn row_major(rows: usize, cols: usize) -> Self {
        Self::new(rows, cols, Order::RowMajor)
    }
    /// `rows×cols`, column-major.
    pub fn col_major(rows: usize, cols: usize) -> Self {
        Self::new(rows, cols, Order::ColMajor)
    }
    fn order(&self) -> Order {
        self.order
    }
    fn target(&self, a: Shape) -> Result<Shape> {
        let to = Shape(self.rows, self.cols);
        if count(a) == count(to) {
            Ok(to)
        } else {
            Err(Error::BadReshape {
                op: "Reshape",
                from: a,
                to,
            })
        }
    }
}

impl Vec {
    fn order(&self) -> Order {
        Order::ColMajor
    }
    fn target(&self, a: Shape) -> Result<Shape> {
        Ok(Shape(count(a), 1))
    }
}

impl Unvec {
    /// `unvec` into `rows×cols`.
    pub fn new(rows: usize, cols: usize) -> Self {
        Unvec { rows, cols }
    }
    fn order(&self) -> Order {
        Order::ColMajor
    }
    fn target(&self, a: Shape) -> Result<Shape> {
        let to = Shape(self.rows, self.cols);
        if count(a) != count(to) {
            return Err(Error::BadReshape {
                op: "Unvec",
                from: a,
                to,
            });
        }
        expect_shape("Unvec", "input", "vec(C)", Shape(count(to), 1), a)?;
        Ok(to)
    }
}

/// Entry count, saturating: a count that overflows cannot equal a real array's.
fn count(s: Shape) -> usize {
    s.0.saturating_mul(s.1)
}

/// Applies `f(dst, src)` to the entries of `dst` and `src` paired in `order`; both
/// hold the same number of entries.
fn pair<T: Real>(
    mut dst: ArrayViewMut2<'_, T>,
    src: ArrayView2<'_, T>,
    order: Order,
    f: impl Fn(&mut T, T),
) {
    match order {
        Order::RowMajor => dst.iter_mut().zip(src.iter()).for_each(|(d, &s)| f(d, s)),
        Order::ColMajor => dst
            .reversed_axes()
            .iter_mut()
            .zip(src.t().iter())
            .for_each(|(d, &s)| f(d, s)),
    }
}

/// `src` rearranged into a new standard-layout array of shape `to`.
fn rearranged<T: Real>(src: ArrayView2<'_, T>, to: Shape, order: Order) -> Array2<T> {
    let mut out = Array2::zeros((to.0, to.1));
    pair(out.view_mut(), src, order, |d, s| *d = s);
    out
}

macro_rules! impl_rearrangement {
    ($ty:ty, $op:literal, $name:expr) => {
        impl<T: Real> Primitive<T> for $ty {
            fn name(&self) -> String {
                #[allow(clippy::redundant_closure_call)]
                ($name)(self)
            }
            fn arity(&self) -> usize {
                1
            }
            fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>> {
                let a = one($op, "inputs", inputs)?;
                let to = self.target(shape_of(a))?;
                Ok(rearranged(a.view(), to, self.order()))
            }
            fn backward(
                &self,
                inputs: &[ArrayView2<'_, T>],
                _output: ArrayView2<'_, T>,
                cbar: ArrayView2<'_, T>,
            ) -> Result<std::vec::Vec<Array2<T>>> {
                let a = one($op, "inputs", inputs)?;
                let to = self.target(shape_of(a))?;
                expect_shape($op, "C̄", "C", to, shape_of(&cbar))?;
                Ok(vec![rearranged(cbar, shape_of(a), self.order())])
            }
            fn backward_into(
                &self,
                inputs: &[ArrayView2<'_, T>],
                _output: ArrayView2<'_, T>,
                cbar: ArrayView2<'_, T>,
                grads: &mut [Option<ArrayViewMut2<'_, T>>],
            ) -> Result<()> {
                let a = one($op, "inputs", inputs)?;
                check_arity($op, "gradient buffers", 1, grads.len())?;
                let to = self.target(shape_of(a))?;
                expect_shape($op, "C̄", "C", to, shape_of(&cbar))?;
                if let Some(g) = grads[0].as_mut() {
                    expect_shape($op, "Ā buffer", "A", shape_of(a), shape_of(g))?;
                    pair(g.view_mut(), cbar, self.order(), |g, c| *g += c);
                }
                Ok(())
            }
            fn jvp(
                &self,
                inputs: &[ArrayView2<'_, T>],
                _output: ArrayView2<'_, T>,
                tangents: &[ArrayView2<'_, T>],
            ) -> Result<Array2<T>> {
                let a = one($op, "inputs", inputs)?;
                let ad = one($op, "tangents", tangents)?;
                let to = self.target(shape_of(a))?;
                expect_shape($op, "Ȧ", "A", shape_of(a), shape_of(ad))?;
                Ok(rearranged(ad.view(), to, self.order()))
            }
        }

        impl<T: Real> Unary<T> for $ty {}
    };
}

impl_rearrangement!(Reshape, "Reshape", |r: &Reshape| {
    let order = match r.order {
        Order::RowMajor => "row-major",
        Order::ColMajor => "column-major",
    };
    format!("Reshape({}×{}, {order})", r.rows, r.cols)
});
impl_rearrangement!(Vec, "Vec", |_: &Vec| "Vec".to_string());
impl_rearrangement!(Unvec, "Unvec", |u: &Unvec| format!(
    "Unvec({}×{})",
    u.rows, u.cols
));
