//! Safe LAPACK calls for the factorisations of Giles' collection: LU (`getrf`,
//! `getrs`), the symmetric eigendecomposition (`syevd`) and the SVD (`gesdd`), with
//! LAPACK's conventions whichever backend computes them (faer's factorisations are
//! adapted to them: 1-based row interchanges, eigenvalues ascending, singular values
//! descending, thin `U` and `Vᵀ`).
//!
//! LAPACK is column-major: every matrix argument here must be a view whose columns
//! are contiguous (`strides[0] == 1`), such as the transpose of a standard-layout array
//! or a view of an array built with `.f()`. Anything else is a typed error, never a
//! silent copy, so that the caller decides where the column-major buffer lives (its
//! workspace). Scratch for `syevd` and `gesdd` is the caller's too: the `*_workspace`
//! functions say how much.

use super::backend;
use crate::blas::Trans;
use crate::error::{Error, Result, Shape};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2};

/// Leading dimension of a column-major view, if it is one.
fn col_ld(rows: usize, cols: usize, strides: &[isize]) -> Option<usize> {
    if rows > 1 && strides[0] != 1 {
        return None;
    }
    if cols <= 1 {
        return Some(rows.max(1));
    }
    let ld = strides[1];
    (ld >= rows.max(1) as isize).then_some(ld as usize)
}

/// Whether LAPACK can take `a` as it is: a column-major view (`strides[0] == 1`, or a
/// single row) whose leading dimension covers its rows.
pub fn is_column_major<T>(a: &ArrayView2<'_, T>) -> bool {
    let (r, c) = a.dim();
    col_ld(r, c, a.strides()).is_some()
}

/// Elements of `T` that hold `ints` LAPACK integers, the tail [`int_scratch`] carves.
pub fn ints_in<T>(ints: usize) -> usize {
    ints.saturating_mul(std::mem::size_of::<i32>())
        .div_ceil(std::mem::size_of::<T>().max(1))
}

/// Splits a caller's scratch of `T` into the `T` part and, carved from its last
/// [`ints_in`]`::<T>(ints)` elements, `ints` LAPACK integers, so that one workspace of
/// the rule's type serves `work` and `iwork` alike and nothing is allocated.
pub fn int_scratch<T: Real>(ws: &mut [T], ints: usize) -> Result<(&mut [T], &mut [i32])> {
    let need = ints_in::<T>(ints);
    // `Real` is f32 or f64: at least as large and as aligned as i32, a multiple of its
    // size, and every bit pattern is a valid value of all three types.
    if std::mem::align_of::<T>() < std::mem::align_of::<i32>()
        || std::mem::size_of::<T>() % std::mem::size_of::<i32>() != 0
    {
        return Err(Error::InvalidArgument {
            op: "int_scratch",
            msg: "the scalar type cannot hold LAPACK integers".into(),
        });
    }
    if ws.len() < need {
        return Err(Error::Workspace {
            op: "int_scratch",
            needed: need,
            got: ws.len(),
        });
    }
    let split = ws.len() - need;
    let (head, tail) = ws.split_at_mut(split);
    let len = need * (std::mem::size_of::<T>() / std::mem::size_of::<i32>());
    // SAFETY: `tail` is a unique borrow of `need` elements of `T`, i.e. `len` i32s of
    // memory (checked above: size a multiple of 4), aligned for i32 because T's
    // alignment is at least i32's; any bit pattern is a valid i32, and any i32 bits
    // left behind are a valid f32/f64 afterwards. The returned slice reborrows `tail`
    // for the same lifetime, so it cannot alias `head` or outlive `ws`.
    let ints_slice =
        unsafe { std::slice::from_raw_parts_mut(tail.as_mut_ptr().cast::<i32>(), len) };
    Ok((head, &mut ints_slice[..ints]))
}

/// The leading dimension of the column-major `a`, or an error naming it.
pub(crate) fn col_major<T>(
    op: &'static str,
    name: &'static str,
    a: &ArrayView2<'_, T>,
) -> Result<usize> {
    let (r, c) = a.dim();
    col_ld(r, c, a.strides()).ok_or_else(|| Error::InvalidArgument {
        op,
        msg: format!("{name} must be a column-major view for LAPACK"),
    })
}

/// Order from which [`getrf`] calls LAPACK's recursive `getrf2` instead of `getrf`,
/// with the CBLAS backends (the faer backend always factors by the same recursion as
/// `getrf2`, on faer's GEMM and triangular solves).
///
/// OpenBLAS's threaded `getrf` (`getrf_parallel`, taken from order 100 in `f64`, 200
/// in `f32`, in 0.3.21) keeps an array of `MAX_CPU_NUMBER` jobs, about 512 KB in
/// Debian's 64-thread build, on the stack at every level of its recursion, and
/// overflows a 2 MiB thread stack, Rust's default for spawned threads (test threads
/// included), with a segmentation fault (OpenBLAS issues 1082 and 3229). Below this
/// order OpenBLAS factors single-threaded and `getrf` is the fastest; from it on,
/// reference LAPACK's `getrf2` gives the same partial-pivoting factorisation (equal up
/// to rounding) through OpenBLAS's level-3 kernels with small stack frames, in 1.0–1.5×
/// `getrf`'s time at n = 1000–2000 on two cores.
pub const GETRF_RECURSIVE_FROM: usize = 64;

/// `A = PLU` in place (`getrf`, or `getrf2` from order [`GETRF_RECURSIVE_FROM`]; faer:
/// the recursion of `getrf2`, zero pivots kept as LAPACK keeps them) for a
/// square column-major `a`; `ipiv` receives the 1-based row interchanges (`n`
/// entries). Returns `Some(k)` when `U[k, k]` is exactly zero (the factorisation is
/// complete but `A` is singular), `None` otherwise.
pub fn getrf<T: Real>(
    op: &'static str,
    a: ArrayViewMut2<'_, T>,
    ipiv: &mut [i32],
) -> Result<Option<usize>> {
    let (n, c) = a.dim();
    if n != c {
        return Err(Error::NotSquare {
            op,
            name: "A",
            got: Shape(n, c),
        });
    }
    if ipiv.len() < n {
        return Err(Error::InvalidArgument {
            op,
            msg: format!("getrf needs {n} pivots, got room for {}", ipiv.len()),
        });
    }
    if n == 0 {
        return Ok(None);
    }
    col_major(op, "A", &a.view())?;
    backend::getrf(op, a, ipiv)
}

/// Solves `op(A)X = B` in place in the column-major `b` (`getrs`), with the factors
/// and pivots of [`getrf`]. `trans` is `op`.
pub fn getrs<T: Real>(
    op: &'static str,
    lu: ArrayView2<'_, T>,
    ipiv: &[i32],
    trans: Trans,
    b: ArrayViewMut2<'_, T>,
) -> Result<()> {
    let (n, c) = lu.dim();
    if n != c {
        return Err(Error::NotSquare {
            op,
            name: "LU",
            got: Shape(n, c),
        });
    }
    let (bn, k) = b.dim();
    if bn != n || ipiv.len() < n {
        return Err(Error::ShapeMismatch {
            op,
            what: "B must have as many rows as A",
            lhs_name: "A",
            lhs: Shape(n, n),
            rhs_name: "B",
            rhs: Shape(bn, k),
        });
    }
    if n == 0 || k == 0 {
        return Ok(());
    }
    col_major(op, "LU", &lu)?;
    col_major(op, "B", &b.view())?;
    backend::getrs(op, lu, ipiv, trans == Trans::Yes, b)
}

/// Sizes `(work, iwork)` of the scratch [`syevd`] needs for order `n` with vectors.
pub fn syevd_workspace<T: Real>(n: usize) -> Result<(usize, usize)> {
    if n == 0 {
        return Ok((1, 1));
    }
    backend::syevd_workspace::<T>(n)
}

/// Eigenvalues (ascending, into `w`) and eigenvectors (columns of `a`, overwriting
/// it) of the symmetric matrix whose lower triangle `a` holds (`syevd`). `a` must be
/// column-major; `work` and `iwork` at least the sizes of [`syevd_workspace`].
pub fn syevd<T: Real>(
    op: &'static str,
    a: ArrayViewMut2<'_, T>,
    w: &mut [T],
    work: &mut [T],
    iwork: &mut [i32],
) -> Result<()> {
    let (n, c) = a.dim();
    if n != c {
        return Err(Error::NotSquare {
            op,
            name: "A",
            got: Shape(n, c),
        });
    }
    if n == 0 {
        return Ok(());
    }
    let (lw, liw) = syevd_workspace::<T>(n)?;
    if w.len() < n || work.len() < lw || iwork.len() < liw {
        return Err(Error::Workspace {
            op,
            needed: lw + n,
            got: work.len() + w.len(),
        });
    }
    col_major(op, "A", &a.view())?;
    backend::syevd(op, a, w, work, iwork)
}

/// Size of the `work` scratch [`gesdd`] needs for an `m×n` matrix (thin factors);
/// `iwork` needs `8·min(m, n)` entries.
pub fn gesdd_workspace<T: Real>(m: usize, n: usize) -> Result<usize> {
    let k = m.min(n);
    if k == 0 {
        return Ok(1);
    }
    backend::gesdd_workspace::<T>(m, n)
}

/// The thin SVD `A = U diag(s) Vᵀ` (`gesdd`), singular values descending. `a` (`m×n`,
/// destroyed), `u` (`m×k`) and `vt` (`k×n`) must be column-major, `k = min(m, n)`;
/// `work` at least [`gesdd_workspace`], `iwork` at least `8k`.
#[allow(clippy::too_many_arguments)]
pub fn gesdd<T: Real>(
    op: &'static str,
    a: ArrayViewMut2<'_, T>,
    s: &mut [T],
    u: ArrayViewMut2<'_, T>,
    vt: ArrayViewMut2<'_, T>,
    work: &mut [T],
    iwork: &mut [i32],
) -> Result<()> {
    let (m, n) = a.dim();
    let k = m.min(n);
    if u.dim() != (m, k) || vt.dim() != (k, n) || s.len() < k {
        return Err(Error::InvalidArgument {
            op,
            msg: format!("gesdd of {m}×{n} needs U {m}×{k}, Vᵀ {k}×{n} and {k} singular values"),
        });
    }
    if k == 0 {
        return Ok(());
    }
    let lw = gesdd_workspace::<T>(m, n)?;
    if work.len() < lw || iwork.len() < 8 * k {
        return Err(Error::Workspace {
            op,
            needed: lw,
            got: work.len(),
        });
    }
    col_major(op, "A", &a.view())?;
    col_major(op, "U", &u.view())?;
    col_major(op, "Vᵀ", &vt.view())?;
    backend::gesdd(op, a, s, u, vt, work, iwork)
}

/// Elements of `T` that hold `n` pivots of [`getrf`], so that a rule can carve its
/// pivots out of its workspace ([`pivots_in`]) and allocate nothing.
pub fn pivot_len<T: Real>(n: usize) -> usize {
    (n * std::mem::size_of::<i32>()).div_ceil(std::mem::size_of::<T>())
}

/// Splits a workspace into room for `n` pivots (the first [`pivot_len`]`(n)` elements,
/// seen as `i32`) and the rest, so that [`getrf`] and [`getrs`] run in a caller's
/// workspace of `T` without an allocation. The pivots' previous contents are arbitrary.
pub fn pivots_in<T: Real>(ws: &mut [T], n: usize) -> Result<(&mut [i32], &mut [T])> {
    let k = pivot_len::<T>(n);
    if ws.len() < k {
        return Err(Error::Workspace {
            op: "pivots",
            needed: k,
            got: ws.len(),
        });
    }
    let (p, rest) = ws.split_at_mut(k);
    // SAFETY: `T` is `f32` or `f64` (`Real` is sealed through the private `Ffi`
    // trait), whose alignment is at least `i32`'s, so the prefix is empty; every bit
    // pattern is a valid `i32`, and every bit pattern LAPACK leaves is a valid `T`.
    let (pre, mid, _) = unsafe { p.align_to_mut::<i32>() };
    if !pre.is_empty() || mid.len() < n {
        return Err(Error::Workspace {
            op: "pivots",
            needed: k,
            got: mid.len(),
        });
    }
    Ok((&mut mid[..n], rest))
}
