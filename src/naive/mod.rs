//! Scalar-loop reference implementations of the rules: test oracles, and the
//! baseline of the BLAS-against-naive benchmarks.
//!
//! Every function here is the loop one would write by hand from the rule's index
//! form, with no blocking, no BLAS and no reordering beyond what its name says. They
//! accept views of any layout (transposed, step-sliced, negatively strided), so the
//! same loop is the oracle for every transpose flag of a BLAS-backed primitive.
//!
//! ```
//! use matgrad::naive;
//! use ndarray::array;
//!
//! let a = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
//! let b = array![[1.0, -1.0], [0.5, 2.0], [3.0, 0.0]];
//! let c = naive::matmul_ijk(a.view(), b.view())?;
//! assert_eq!(c, naive::matmul_ikj(a.view(), b.view())?);
//! let (abar, bbar) = naive::matmul_backward(a.view(), b.view(), c.view())?;
//! assert_eq!((abar.dim(), bbar.dim()), ((2, 3), (3, 2)));
//! # Ok::<(), matgrad::Error>(())
//! ```

pub mod cholesky;

use crate::error::{shape_of, Error, Result, Shape};
use crate::Real;
use ndarray::{Array2, ArrayView2};

/// Errors unless `got` is `expected`, naming the loop, the array and what fixes its shape.
fn expect_dims(
    op: &'static str,
    name: &'static str,
    of: &'static str,
    expected: Shape,
    got: Shape,
) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::WrongShape {
            op,
            name,
            of,
            expected,
            got,
        })
    }
}

fn inner_dims<T>(
    op: &'static str,
    a: &ArrayView2<'_, T>,
    b: &ArrayView2<'_, T>,
) -> Result<(usize, usize, usize)> {
    let (m, k) = a.dim();
    let (kb, n) = b.dim();
    if k != kb {
        return Err(Error::ShapeMismatch {
            op,
            what: "inner dimensions differ",
            lhs_name: "A",
            lhs: Shape(m, k),
            rhs_name: "B",
            rhs: Shape(kb, n),
        });
    }
    Ok((m, k, n))
}

/// `C = AB` as the textbook triple loop: `Cᵢⱼ = Σₖ AᵢₖBₖⱼ`, one inner dot product per
/// output entry (i-j-k order; the inner loop walks down a column of `B`).
pub fn matmul_ijk<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Result<Array2<T>> {
    let (m, k, n) = inner_dims("naive::matmul_ijk", &a, &b)?;
    let mut c = Array2::zeros((m, n));
    for i in 0..m {
        for j in 0..n {
            let mut s = T::zero();
            for p in 0..k {
                s += a[(i, p)] * b[(p, j)];
            }
            c[(i, j)] = s;
        }
    }
    Ok(c)
}

/// `C = AB` in i-k-j order: `Cᵢ,: += Aᵢₖ Bₖ,:`, so the inner loop walks along rows of
/// `B` and `C`, which is contiguous for row-major arrays.
pub fn matmul_ikj<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Result<Array2<T>> {
    let (m, k, n) = inner_dims("naive::matmul_ikj", &a, &b)?;
    let mut c = Array2::zeros((m, n));
    for i in 0..m {
        for p in 0..k {
            let aip = a[(i, p)];
            for j in 0..n {
                c[(i, j)] += aip * b[(p, j)];
            }
        }
    }
    Ok(c)
}

/// Reverse of `C = AB`: `(Ā, B̄) = (C̄Bᵀ, AᵀC̄)` (Giles 2008, §3.2), as two loops of
/// inner products, `Āᵢₖ = Σⱼ C̄ᵢⱼBₖⱼ` and `B̄ₖⱼ = Σᵢ AᵢₖC̄ᵢⱼ`.
///
/// For `C = AᵀB` and the other transpose flags pass the transposed views (`a.t()`):
/// the results are then the gradients of the transposed operands.
pub fn matmul_backward<T: Real>(
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    cbar: ArrayView2<'_, T>,
) -> Result<(Array2<T>, Array2<T>)> {
    const OP: &str = "naive::matmul_backward";
    let (m, k, n) = inner_dims(OP, &a, &b)?;
    expect_dims(OP, "C̄", "AB", Shape(m, n), shape_of(&cbar))?;
    let mut abar = Array2::zeros((m, k));
    for i in 0..m {
        for p in 0..k {
            let mut s = T::zero();
            for j in 0..n {
                s += cbar[(i, j)] * b[(p, j)];
            }
            abar[(i, p)] = s;
        }
    }
    let mut bbar = Array2::zeros((k, n));
    for p in 0..k {
        for j in 0..n {
            let mut s = T::zero();
            for i in 0..m {
                s += a[(i, p)] * cbar[(i, j)];
            }
            bbar[(p, j)] = s;
        }
    }
    Ok((abar, bbar))
}

/// `C = Aᵀ`: `Cⱼᵢ = Aᵢⱼ`.
pub fn transpose<T: Real>(a: ArrayView2<'_, T>) -> Array2<T> {
    let (m, n) = a.dim();
    let mut c = Array2::zeros((n, m));
    for i in 0..m {
        for j in 0..n {
            c[(j, i)] = a[(i, j)];
        }
    }
    c
}

/// Reverse of `C = Aᵀ`: `Ā = C̄ᵀ`, a rearrangement undone (seed, "reshaping").
pub fn transpose_backward<T: Real>(cbar: ArrayView2<'_, T>) -> Array2<T> {
    transpose(cbar)
}

/// `C = A + B`: `Cᵢⱼ = Aᵢⱼ + Bᵢⱼ`.
pub fn add<T: Real>(a: ArrayView2<'_, T>, b: ArrayView2<'_, T>) -> Result<Array2<T>> {
    if a.dim() != b.dim() {
        return Err(Error::ShapeMismatch {
            op: "naive::add",
            what: "shapes differ",
            lhs_name: "A",
            lhs: shape_of(&a),
            rhs_name: "B",
            rhs: shape_of(&b),
        });
    }
    let (m, n) = a.dim();
    let mut c = Array2::zeros((m, n));
    for i in 0..m {
        for j in 0..n {
            c[(i, j)] = a[(i, j)] + b[(i, j)];
        }
    }
    Ok(c)
}

/// Reverse of `C = A + B`: `Ā = C̄`, `B̄ = C̄`, each a fresh copy made entry by entry.
pub fn add_backward<T: Real>(cbar: ArrayView2<'_, T>) -> (Array2<T>, Array2<T>) {
    let (m, n) = cbar.dim();
    let mut abar = Array2::zeros((m, n));
    let mut bbar = Array2::zeros((m, n));
    for i in 0..m {
        for j in 0..n {
            abar[(i, j)] = cbar[(i, j)];
            bbar[(i, j)] = cbar[(i, j)];
        }
    }
    (abar, bbar)
}

/// `C = tril(A, k)`: keeps `Aᵢⱼ` where `j − i ≤ k` and zeroes the rest (`k = 0` keeps
/// the diagonal, `k = −1` only the strict lower triangle), for any rectangular `A`.
pub fn tril<T: Real>(a: ArrayView2<'_, T>, k: isize) -> Array2<T> {
    let (m, n) = a.dim();
    let mut c = Array2::zeros((m, n));
    for i in 0..m {
        for j in 0..n {
            if (j as isize) - (i as isize) <= k {
                c[(i, j)] = a[(i, j)];
            }
        }
    }
    c
}

/// Reverse of `C = tril(A, k)`: `Ā = tril(C̄, k)`, the same mask (seed, "masking").
pub fn tril_backward<T: Real>(cbar: ArrayView2<'_, T>, k: isize) -> Array2<T> {
    tril(cbar, k)
}

/// `c = vec(A)`: the columns of the `m×n` matrix `A` stacked into one `mn×1` column,
/// `c[i + m·j] = Aᵢⱼ` (column-major, as in Giles 2008 and Matlab's `A(:)`).
pub fn vec<T: Real>(a: ArrayView2<'_, T>) -> Array2<T> {
    let (m, n) = a.dim();
    let mut c = Array2::zeros((m * n, 1));
    for j in 0..n {
        for i in 0..m {
            c[(i + m * j, 0)] = a[(i, j)];
        }
    }
    c
}

/// Reverse of `c = vec(A)` for `A` of shape `rows×cols`: `Āᵢⱼ = c̄[i + rows·j]`.
pub fn vec_backward<T: Real>(
    cbar: ArrayView2<'_, T>,
    rows: usize,
    cols: usize,
) -> Result<Array2<T>> {
    const OP: &str = "naive::vec_backward";
    let len = rows
        .checked_mul(cols)
        .ok_or_else(|| Error::InvalidArgument {
            op: OP,
            msg: format!("{rows}×{cols} has more elements than fit in usize"),
        })?;
    expect_dims(OP, "c̄", "vec(A)", Shape(len, 1), shape_of(&cbar))?;
    let mut abar = Array2::zeros((rows, cols));
    for j in 0..cols {
        for i in 0..rows {
            abar[(i, j)] = cbar[(i + rows * j, 0)];
        }
    }
    Ok(abar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn loops_match_hand_computed_values() {
        let a = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let b = array![[1.0, -1.0], [0.5, 2.0], [3.0, 0.0]];
        let c = array![[11.0, 3.0], [24.5, 6.0]];
        assert_eq!(matmul_ijk(a.view(), b.view()).unwrap(), c);
        assert_eq!(matmul_ikj(a.view(), b.view()).unwrap(), c);
        let cbar = array![[1.0, 2.0], [-1.0, 0.5]];
        let (abar, bbar) = matmul_backward(a.view(), b.view(), cbar.view()).unwrap();
        assert_eq!(abar, array![[-1.0, 4.5, 3.0], [-1.5, 0.5, -3.0]]);
        assert_eq!(bbar, array![[-3.0, 4.0], [-3.0, 6.5], [-3.0, 9.0]]);
        assert_eq!(
            transpose(a.view()),
            array![[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]
        );
        assert_eq!(tril(a.view(), 0), array![[1.0, 0.0, 0.0], [4.0, 5.0, 0.0]]);
        assert_eq!(tril(a.view(), 1), array![[1.0, 2.0, 0.0], [4.0, 5.0, 6.0]]);
        assert_eq!(tril(a.view(), -1), array![[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]]);
        let v = vec(a.view());
        assert_eq!(v, array![[1.0], [4.0], [2.0], [5.0], [3.0], [6.0]]);
        assert_eq!(vec_backward(v.view(), 2, 3).unwrap(), a);
    }

    #[test]
    fn shape_mismatches_are_errors_naming_the_loop() {
        let a = Array2::<f64>::zeros((2, 3));
        let b = Array2::<f64>::zeros((2, 3));
        let e = matmul_ijk(a.view(), b.view()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "naive::matmul_ijk: inner dimensions differ, A is 2×3, B is 2×3"
        );
        assert!(matmul_ikj(a.view(), b.view()).is_err());
        assert!(matmul_backward(a.view(), b.t(), a.view()).is_err());
        assert!(add(a.view(), b.t()).is_err());
        let e = vec_backward(a.view(), 3, 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "naive::vec_backward: c̄ must be 6×1 (the shape of vec(A)), got 2×3"
        );
        assert!(vec_backward(Array2::<f64>::zeros((1, 1)).view(), usize::MAX, 2).is_err());
    }
}
