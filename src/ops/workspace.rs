//! Cutting the caller's workspace slice into the matrices a rule works in.
//!
//! [`take`] is the one place a workspace can turn out too short, and says so as
//! [`Error::Workspace`]. The views over what it hands out ([`rmat_mut`], [`fmat`],
//! [`fmat_mut`]) are then of exactly `r·c` entries by construction, so they cannot fail,
//! and no error path exists that a test could never reach.

use crate::error::{Error, Result};
use ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder};

/// The first `len` elements of `ws`, and the rest; [`Error::Workspace`] naming `op`
/// when `ws` is shorter.
pub(crate) fn take<'w, T>(
    op: &'static str,
    ws: &'w mut [T],
    len: usize,
) -> Result<(&'w mut [T], &'w mut [T])> {
    if ws.len() < len {
        return Err(Error::Workspace {
            op,
            needed: len,
            got: ws.len(),
        });
    }
    Ok(ws.split_at_mut(len))
}

/// The first `r·c` elements of `ws` as an `r×c` standard-layout (row-major) matrix,
/// and the rest.
pub(crate) fn scratch<'w, T>(
    op: &'static str,
    ws: &'w mut [T],
    (r, c): (usize, usize),
) -> Result<(ArrayViewMut2<'w, T>, &'w mut [T])> {
    let (head, rest) = take(op, ws, r * c)?;
    Ok((rmat_mut(head, (r, c)), rest))
}

/// The first `r·c` elements of `ws` as a column-major `r×c` matrix (for LAPACK), and
/// the rest.
pub(crate) fn scratch_f<'w, T>(
    op: &'static str,
    ws: &'w mut [T],
    (r, c): (usize, usize),
) -> Result<(ArrayViewMut2<'w, T>, &'w mut [T])> {
    let (head, rest) = take(op, ws, r * c)?;
    Ok((fmat_mut(head, (r, c)), rest))
}

/// `buf`, of exactly `r·c` entries (as [`take`] gives them), as a row-major `r×c`
/// view.
pub(crate) fn rmat_mut<T>(buf: &mut [T], (r, c): (usize, usize)) -> ArrayViewMut2<'_, T> {
    // The length is r·c by construction: the shape always fits.
    ArrayViewMut2::from_shape((r, c), buf).unwrap_or_else(|_| unreachable!())
}

/// `buf`, of exactly `r·c` entries (as [`take`] gives them), as a column-major `r×c`
/// view.
pub(crate) fn fmat_mut<T>(buf: &mut [T], (r, c): (usize, usize)) -> ArrayViewMut2<'_, T> {
    ArrayViewMut2::from_shape((r, c).f(), buf).unwrap_or_else(|_| unreachable!())
}

/// `buf`, of exactly `r·c` entries, as a column-major `r×c` view.
pub(crate) fn fmat<T>(buf: &[T], (r, c): (usize, usize)) -> ArrayView2<'_, T> {
    ArrayView2::from_shape((r, c).f(), buf).unwrap_or_else(|_| unreachable!())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_lay_the_slice_out_row_or_column_major() {
        let mut ws: Vec<f64> = (0..7).map(|k| k as f64 * 1.5 - 2.0).collect();
        let (mut r, rest) = scratch("op", &mut ws, (2, 3)).unwrap();
        assert_eq!(r[(1, 0)], 2.5);
        r[(0, 2)] = 9.0;
        assert_eq!(rest, [7.0]);
        assert_eq!(ws[2], 9.0);
        let (f, rest) = scratch_f("op", &mut ws, (3, 2)).unwrap();
        assert_eq!(f[(1, 0)], -0.5);
        assert_eq!(f[(0, 1)], 2.5);
        assert_eq!(rest.len(), 1);
        assert_eq!(fmat(&ws[..6], (2, 3))[(1, 2)], 5.5);
    }

    #[test]
    fn a_short_workspace_is_an_error_naming_the_primitive_and_both_sizes() {
        let mut ws = [0.0f64; 5];
        for e in [
            scratch("Lu", &mut ws, (2, 3)).map(|_| ()).unwrap_err(),
            scratch_f("Lu", &mut ws, (3, 2)).map(|_| ()).unwrap_err(),
            take("Lu", &mut ws, 6).map(|_| ()).unwrap_err(),
        ] {
            match e {
                Error::Workspace { op, needed, got } => assert_eq!((op, needed, got), ("Lu", 6, 5)),
                e => panic!("{e:?}"),
            }
        }
        assert!(take("Lu", &mut ws, 5).is_ok());
    }
}
