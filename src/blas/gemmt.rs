//! The triangular-output product (`gemmt`, which BLAS lacks: only some vendors add it)
//! for every backend, and the views through which ndarray arrays reach faer.
//!
//! faer's triangular matmul computes only the blocks of a diagonal block of `C` that
//! meet the wanted triangle, with its own kernels down to the diagonal: no flops spent
//! on the other triangle and no tile to add from, where a diagonal block made of BLAS
//! calls computes the whole block.

use super::{Accum, Uplo};
use crate::Real;
use ::faer::linalg::matmul::triangular::{matmul, BlockStructure};
use ::faer::{MatMut, MatRef, Par};
use ndarray::{ArrayView2, ArrayViewMut2};

/// The view as faer sees it: same memory, same strides (any strides, negative ones
/// included), so a transposed view is a transposed faer view, never a copy.
pub(crate) fn mat<'a, T>(a: ArrayView2<'a, T>) -> MatRef<'a, T> {
    let (r, c) = a.dim();
    let (rs, cs) = (a.strides()[0], a.strides()[1]);
    // SAFETY: pointer (to element (0, 0)), dimensions and element strides are those of a
    // live ndarray view, which stays borrowed for 'a.
    unsafe { MatRef::from_raw_parts(a.as_ptr(), r, c, rs, cs) }
}

/// The mutable view as faer sees it.
pub(crate) fn mat_mut<'a, T>(mut a: ArrayViewMut2<'a, T>) -> MatMut<'a, T> {
    let (r, c) = a.dim();
    let (rs, cs) = (a.strides()[0], a.strides()[1]);
    // SAFETY: as for `mat`; the view is unique (ndarray forbids overlapping mutable
    // views), and it is consumed, so the faer view is the only access for 'a.
    unsafe { MatMut::from_raw_parts_mut(a.as_mut_ptr(), r, c, rs, cs) }
}

/// faer's name for the same choice.
pub(crate) fn accum(a: Accum) -> ::faer::Accum {
    match a {
        Accum::Replace => ::faer::Accum::Replace,
        Accum::Add => ::faer::Accum::Add,
    }
}

/// `C ← alpha·A·B` (`Replace`, `C` not read) or `C ← C + alpha·A·B` (`Add`) on the
/// `uplo` triangle of the square `C`, with the diagonal, on the calling thread; the
/// other triangle is neither read nor written. Shapes are checked by the caller.
///
/// Sequential: faer's parallel dispatch allocates on every call, and the callers run
/// this on diagonal blocks small enough for one thread (the rest of a triangular
/// product is GEMMs, threaded by the backend).
pub(crate) fn gemmt<T: Real>(
    c: ArrayViewMut2<'_, T>,
    uplo: Uplo,
    acc: Accum,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
) {
    let structure = match uplo {
        Uplo::Lower => BlockStructure::TriangularLower,
        Uplo::Upper => BlockStructure::TriangularUpper,
    };
    matmul(
        mat_mut(c),
        structure,
        accum(acc),
        mat(a),
        BlockStructure::Rectangular,
        mat(b),
        BlockStructure::Rectangular,
        alpha,
        Par::Seq,
    );
}
