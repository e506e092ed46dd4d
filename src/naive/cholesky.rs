//! Cholesky factorisation `A = LLᵀ` and its reverse pass as scalar loops, one entry
//! of `L` at a time (the element-level code of Giles 2008 and Murray 2016).
//!
//! The oracle for the LAPACK/BLAS versions in [`crate::ops::cholesky`] and the
//! "naive" line of the Cholesky benchmark.

use super::expect_dims;
use crate::error::{shape_of, Error, Result, Shape};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

fn square<T>(op: &'static str, name: &'static str, a: &ArrayView2<'_, T>) -> Result<usize> {
    let (r, c) = a.dim();
    if r == c {
        Ok(r)
    } else {
        Err(Error::NotSquare {
            op,
            name,
            got: Shape(r, c),
        })
    }
}

/// `A = LLᵀ` by the row-by-row (Cholesky–Banachiewicz) loop, reading only the lower
/// triangle of `A`: `Lᵢⱼ = (Aᵢⱼ − Σₖ₍ⱼ LᵢₖLⱼₖ) / Lⱼⱼ`, `Lᵢᵢ = √(Aᵢᵢ − Σₖ₍ᵢ Lᵢₖ²)`.
///
/// A pivot that is not positive (or is NaN) gives [`Error::NotPositiveDefinite`] with
/// its 0-based index.
pub fn cholesky<T: Real>(a: ArrayView2<'_, T>) -> Result<Array2<T>> {
    const OP: &str = "naive::cholesky";
    let n = square(OP, "A", &a)?;
    let mut l = Array2::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[(i, j)];
            for k in 0..j {
                s -= l[(i, k)] * l[(j, k)];
            }
            if i == j {
                // A NaN pivot would otherwise pass `s <= 0` and spread through the factor.
                if s <= T::zero() || s.is_nan() {
                    return Err(Error::NotPositiveDefinite { op: OP, index: i });
                }
                l[(i, i)] = s.sqrt();
            } else {
                l[(i, j)] = s / l[(j, j)];
            }
        }
    }
    Ok(l)
}

/// Reverse of [`cholesky`]: `Ā` for the cotangent `L̄`, in the lower-triangle convention
/// (the gradient with respect to the entries the forward loop reads: off-diagonal
/// entries are `Sᵢⱼ + Sⱼᵢ`, the strict upper triangle is zero; see
/// [`crate::ops::cholesky::Convention::Lower`]).
///
/// The forward loop run backwards, entry by entry, with `L̄` overwritten by `Ā` as it
/// goes (Giles 2008; Murray 2016). The strict upper triangle of `L̄` is ignored.
pub fn cholesky_backward<T: Real>(
    l: ArrayView2<'_, T>,
    lbar: ArrayView2<'_, T>,
) -> Result<Array2<T>> {
    const OP: &str = "naive::cholesky_backward";
    let n = square(OP, "L", &l)?;
    expect_dims(OP, "L̄", "L", Shape(n, n), shape_of(&lbar))?;
    let mut abar = Array2::zeros((n, n));
    for i in 0..n {
        for j in 0..=i {
            abar[(i, j)] = lbar[(i, j)];
        }
    }
    backward_in_place(l, abar.view_mut());
    Ok(abar)
}

/// The loop of [`cholesky_backward`] on a buffer holding `L̄` in its lower triangle,
/// which it overwrites with `Ā`; the strict upper triangle is neither read nor written.
/// Shapes are the caller's to check.
///
/// This module's own copy of the loop: the production rule in `crate::ops::cholesky`
/// keeps another, so that this oracle stays independent of the code it tests.
fn backward_in_place<T: Real>(l: ArrayView2<'_, T>, mut g: ArrayViewMut2<'_, T>) {
    let n = l.nrows();
    let two = T::one() + T::one();
    // Forward order is row by row, left to right; every entry only feeds entries that
    // come later, so in reverse order an entry's adjoint is complete when it is reached.
    for i in (0..n).rev() {
        for j in (0..=i).rev() {
            let sbar = if i == j {
                g[(i, i)] / (two * l[(i, i)])
            } else {
                let sbar = g[(i, j)] / l[(j, j)];
                g[(j, j)] -= sbar * l[(i, j)];
                sbar
            };
            g[(i, j)] = sbar;
            for k in 0..j {
                g[(i, k)] -= sbar * l[(j, k)];
                g[(j, k)] -= sbar * l[(i, k)];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn factor_of_a_hand_computed_matrix() {
        let a = array![[4.0, 99.0, 99.0], [2.0, 10.0, 99.0], [-2.0, 5.0, 6.0]];
        let l = cholesky(a.view()).unwrap();
        assert_eq!(
            l,
            array![[2.0, 0.0, 0.0], [1.0, 3.0, 0.0], [-1.0, 2.0, 1.0]]
        );
    }

    #[test]
    fn reverse_of_a_one_by_one_factor() {
        // L = √a, so dL/da = 1/(2√a).
        let g = cholesky_backward(array![[3.0]].view(), array![[6.0]].view()).unwrap();
        assert_eq!(g, array![[1.0]]);
    }
}
