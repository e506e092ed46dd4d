//! Rearrangements that keep every entry: reshape in row- or column-major order
//! ([`ndarray::Order`]), `vec(A)` (the columns of `A` stacked into one column) and its
//! inverse.
//!
//! For a rearrangement `C = r(A)`, `Ċ = r(Ȧ)` and `Ā = r⁻¹(C̄)` (Giles 2008;
//! `docs/math.md`); neither rule reads `A` or `C`. Entries are read and written in the
//! logical order of the matrices, so a transposed or strided view reshapes as the
//! matrix it shows, not as its memory, and the output buffer may have any layout. When
//! one side is contiguous the pairing is a copy between views of one shape
//! ([`crate::blas::copy`]), by cache-aligned tiles where it transposes.

use super::mask::{linear_rule, Linear};
use crate::blas::{copy, Accum};
use crate::error::{shape_of, Error, Result, Shape};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2, Order};
use std::hash::{Hash, Hasher};

/// `C = reshape(A, rows×cols)`, entries taken and placed in `order`.
///
/// Forward `Ċ = reshape(Ȧ)`; reverse `Ā = C̄` reshaped back to `A`'s shape in the
/// same order (Giles 2008; `docs/math.md`). A target with a different number of
/// entries, or one whose count overflows, is [`Error::BadReshape`]. The reverse rule
/// reads nothing but `C̄`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Reshape {
    /// Rows of `C`.
    pub rows: usize,
    /// Columns of `C`.
    pub cols: usize,
    /// Reading and writing order: [`Order::RowMajor`] (along rows first, as C and
    /// numpy's default) or [`Order::ColumnMajor`] (down columns first, as Fortran,
    /// MATLAB and `vec`).
    pub order: Order,
}

/// `ndarray::Order` is not `Hash`; its two orders hash as a flag.
impl Hash for Reshape {
    fn hash<H: Hasher>(&self, h: &mut H) {
        (self.rows, self.cols, self.order.is_row_major()).hash(h);
    }
}

/// `c = vec(A)`: the columns of the `m×n` matrix `A` stacked into an `mn×1` column.
///
/// Forward `ċ = vec(Ȧ)`; reverse `Ā = unvec(c̄)` (Giles 2008; `docs/math.md`). The
/// reverse rule reads nothing but `c̄`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Vectorize;

/// `C = unvec(a)`: an `(rows·cols)×1` column cut into `cols` columns of length `rows`,
/// the inverse of [`Vectorize`].
///
/// Forward `Ċ = unvec(ȧ)`; reverse `ā = vec(C̄)` (Giles 2008; `docs/math.md`). The
/// reverse rule reads nothing but `C̄`.
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
        Self::new(rows, cols, Order::ColumnMajor)
    }
}

impl Unvec {
    /// `unvec` into `rows×cols`.
    pub fn new(rows: usize, cols: usize) -> Self {
        Unvec { rows, cols }
    }
}

/// Entry count, or `None` when it overflows (no array holds that many).
fn count(s: Shape) -> Option<usize> {
    s.0.checked_mul(s.1)
}

/// `dst ← src` or `dst += src` with the entries of both paired in `order`; both hold
/// the same number of entries. A rearrangement and its inverse pair the same entries,
/// so this is both `r` (`src = A`) and `r⁻¹` (`src = C̄`).
///
/// Column-major order of a matrix is row-major order of its transpose. In row-major
/// order a side with standard layout can be viewed in the other side's shape, which
/// turns the pairing into a copy between two views of one shape ([`copy`]: a stream, or
/// tiles for `vec` of a row-major matrix, which is a transpose). Only when neither side
/// is contiguous in the order are the entries walked one by one.
fn pair<T: Real>(
    op: &'static str,
    dst: ArrayViewMut2<'_, T>,
    src: ArrayView2<'_, T>,
    order: Order,
    acc: Accum,
) -> Result<()> {
    let (dst, src) = if order.is_row_major() {
        (dst, src)
    } else {
        (dst.reversed_axes(), src.reversed_axes())
    };
    let (from, to) = (shape_of(&src), Shape(dst.nrows(), dst.ncols()));
    let bad = |_| Error::BadReshape { op, from, to };
    if dst.is_standard_layout() {
        let dst = dst.into_shape_with_order(src.dim()).map_err(bad)?;
        return copy(dst, src, acc);
    }
    if src.is_standard_layout() {
        let src = src.into_shape_with_order(dst.dim()).map_err(bad)?;
        return copy(dst, src, acc);
    }
    dst.into_iter()
        .zip(src.iter())
        .for_each(|(d, &s)| acc.store(d, s));
    Ok(())
}

impl Linear for Reshape {
    const NAME: &'static str = "Reshape";
    fn out_shape(&self, a: Shape) -> Result<Shape> {
        let to = Shape(self.rows, self.cols);
        match (count(a), count(to)) {
            (Some(n), Some(m)) if n == m => Ok(to),
            _ => Err(Error::BadReshape {
                op: Self::NAME,
                from: a,
                to,
            }),
        }
    }
    fn map_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()> {
        pair(Self::NAME, dst, src, self.order, acc)
    }
    fn adjoint_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()> {
        pair(Self::NAME, dst, src, self.order, acc)
    }
}

impl Linear for Vectorize {
    const NAME: &'static str = "Vectorize";
    fn out_shape(&self, a: Shape) -> Result<Shape> {
        // An overflowing count has no column to go to: the largest one stands for it.
        count(a).map(|n| Shape(n, 1)).ok_or(Error::BadReshape {
            op: Self::NAME,
            from: a,
            to: Shape(usize::MAX, 1),
        })
    }
    fn map_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()> {
        pair(Self::NAME, dst, src, Order::ColumnMajor, acc)
    }
    fn adjoint_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()> {
        pair(Self::NAME, dst, src, Order::ColumnMajor, acc)
    }
}

impl Linear for Unvec {
    const NAME: &'static str = "Unvec";
    fn out_shape(&self, a: Shape) -> Result<Shape> {
        let to = Shape(self.rows, self.cols);
        let n = match (count(a), count(to)) {
            (Some(n), Some(m)) if n == m => n,
            _ => {
                return Err(Error::BadReshape {
                    op: Self::NAME,
                    from: a,
                    to,
                })
            }
        };
        if a != Shape(n, 1) {
            return Err(Error::WrongShape {
                op: Self::NAME,
                name: "A",
                of: "vec(C)",
                expected: Shape(n, 1),
                got: a,
            });
        }
        Ok(to)
    }
    fn map_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()> {
        pair(Self::NAME, dst, src, Order::ColumnMajor, acc)
    }
    fn adjoint_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()> {
        pair(Self::NAME, dst, src, Order::ColumnMajor, acc)
    }
}

linear_rule!(Reshape, Vectorize, Unvec);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitive::{Grad, Primitive, Rule};
    use ndarray::{array, Array2};

    #[test]
    fn orders_and_inverses() {
        let a = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let row = Reshape::row_major(3, 2)
            .forward(&[a.view()])
            .unwrap()
            .remove(0);
        assert_eq!(row, array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]);
        let col = Reshape::col_major(3, 2)
            .forward(&[a.view()])
            .unwrap()
            .remove(0);
        assert_eq!(col, array![[1.0, 5.0], [4.0, 3.0], [2.0, 6.0]]);
        // A transposed view reshapes as the matrix it shows.
        let v = Vectorize.forward(&[a.t()]).unwrap().remove(0);
        assert_eq!(v, array![[1.0], [2.0], [3.0], [4.0], [5.0], [6.0]]);
        let back = Unvec::new(3, 2).forward(&[v.view()]).unwrap().remove(0);
        assert_eq!(back, a.t());

        // Reverse: the inverse rearrangement, written into a NaN buffer without reading it.
        let (an, cn) = (
            Array2::from_elem((2, 3), f64::NAN),
            Array2::from_elem((3, 2), f64::NAN),
        );
        let mut abar = an.clone();
        Reshape::col_major(3, 2)
            .backward_into(
                &[an.view()],
                &[cn.view()],
                &[Some(col.view())],
                &mut [Grad::Write(abar.view_mut())],
                None,
            )
            .unwrap();
        assert_eq!(abar, a);
    }

    #[test]
    fn overflowing_counts_are_bad_reshapes() {
        let huge = Shape(usize::MAX, 2);
        let err = Rule::<f64>::shapes(&Reshape::row_major(2, 3), &[huge]).unwrap_err();
        assert!(
            matches!(err, Error::BadReshape { op: "Reshape", .. }),
            "{err}"
        );
        let err =
            Rule::<f64>::shapes(&Reshape::row_major(usize::MAX, 2), &[Shape(2, 3)]).unwrap_err();
        assert!(matches!(err, Error::BadReshape { .. }), "{err}");
        let err = Rule::<f64>::shapes(&Vectorize, &[huge]).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BadReshape {
                    op: "Vectorize",
                    ..
                }
            ),
            "{err}"
        );
        let err = Rule::<f64>::shapes(&Unvec::new(usize::MAX, 3), &[Shape(6, 1)]).unwrap_err();
        assert!(
            matches!(err, Error::BadReshape { op: "Unvec", .. }),
            "{err}"
        );
        let err = Rule::<f64>::shapes(&Unvec::new(2, 3), &[Shape(2, 3)]).unwrap_err();
        assert!(
            matches!(err, Error::WrongShape { op: "Unvec", .. }),
            "{err}"
        );
        let a = Array2::<f64>::zeros((2, 3));
        assert!(Reshape::row_major(usize::MAX, 2)
            .forward(&[a.view()])
            .is_err());
    }
}
