//! The reverse pass of [`Cholesky`](super::Cholesky): `L̄ → S + Sᵀ` by one of three
//! algorithms, all in place on one `n×n` buffer, then the [`Convention`] in one pass
//! (`docs/math.md`, Cholesky).

use super::{blas_ready, cotangent_shape, factor_order, phi, positive_block, Convention, OP};
use crate::blas::{addressable, gemm, trmm, trsm, Accum, Side, Tri};
use crate::error::{shape_of, Result};
use crate::ops::triangular::scratch;
use crate::primitive::Grad;
use crate::Real;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Zip};

/// A [`super::Method`] with `Auto` decided and the block size checked.
#[derive(Clone, Copy, Debug)]
pub(super) enum Algorithm {
    Blocked(usize),
    Symbolic,
    Unblocked,
}

/// Side of the square tiles in which the `O(n²)` passes visit `(i, j)` and `(j, i)`.
const TILE: usize = 64;

/// Order of the diagonal blocks inside a larger diagonal block: the symbolic rule costs
/// `3b³` in small, inefficient TRSMs, so large blocks are themselves reversed blocked.
const DIAG_BLOCK: usize = 32;

/// The rule's reverse pass: `Ā` for `L̄` into `grad`. A first write BLAS can address is
/// its own workspace (`L̄`'s lower triangle is copied in, the algorithm and the
/// convention run in place, the old contents are never read); otherwise `ws` (`n²`
/// elements) holds `S + Sᵀ` and the convention's `Ā` is written or added from it.
pub(super) fn pullback<T: Real>(
    l: ArrayView2<'_, T>,
    lbar: ArrayView2<'_, T>,
    grad: &mut Grad<'_, T>,
    ws: &mut [T],
    algorithm: Algorithm,
    conv: Convention,
) -> Result<()> {
    let Some((mut g, acc)) = grad.target() else {
        return Ok(());
    };
    let n = l.nrows();
    let l = blas_ready(l);
    if acc == Accum::Replace && addressable(&g.view()) {
        copy_lower(g.view_mut(), lbar);
        reverse_in_place(l.view(), g.view_mut(), algorithm)?;
        finish(g, conv);
        return Ok(());
    }
    let (mut w, _) = scratch(OP, ws, (n, n))?;
    copy_lower(w.view_mut(), lbar);
    reverse_in_place(l.view(), w.view_mut(), algorithm)?;
    store(w.view(), g, conv, acc);
    Ok(())
}

/// `Ā` by the symbolic rule on the whole matrix: `P = Φ(LᵀL̄)` (one TRMM),
/// `S = L⁻ᵀ P L⁻¹` (two TRSMs), then the [`Convention`]. About `3n³` flops, since BLAS
/// does not exploit the triangular shape of `P`. The strict upper triangle of `L̄` is
/// ignored. Allocates the `n×n` result.
pub fn backward_symbolic<T: Real>(
    l: ArrayView2<'_, T>,
    lbar: ArrayView2<'_, T>,
    conv: Convention,
) -> Result<Array2<T>> {
    let n = factor_order(&l)?;
    cotangent_shape(n, shape_of(&lbar))?;
    let mut g = Array2::zeros((n, n));
    copy_lower(g.view_mut(), lbar);
    symbolic_in_place(blas_ready(l).view(), g.view_mut())?;
    finish(g.view_mut(), conv);
    Ok(g)
}

/// `Ā` by the reverse of the blocked right-looking factorisation, overwriting `L̄` in
/// place; see [`backward_blocked_in_place`]. The result is `lbar` itself: no buffer of
/// the order of `L̄` is allocated, unless its strides are not BLAS-addressable, when one
/// standard-layout copy is made (the same holds for `l`).
pub fn backward_blocked<T: Real>(
    l: ArrayView2<'_, T>,
    mut lbar: Array2<T>,
    block: usize,
    conv: Convention,
) -> Result<Array2<T>> {
    if !addressable(&lbar.view()) {
        lbar = lbar.as_standard_layout().into_owned();
    }
    backward_blocked_in_place(l, lbar.view_mut(), block, conv)?;
    Ok(lbar)
}

/// `L̄ ← Ā` in place by the reverse of the blocked right-looking factorisation. Murray
/// 2016 reverses the left-looking order; the right-looking one puts nearly all the work
/// in one GEMM per block that only reads the finished trailing gradient.
///
/// The forward pass, for each diagonal block `J` with `K` the rows below it, factors
/// `L_JJ = chol(Â_JJ)`, solves `L_KJ = Â_KJ L_JJ⁻ᵀ` and updates the trailing matrix
/// `Â_KK −= L_KJ L_KJᵀ`. The reverse pass visits the blocks from the last, when the
/// trailing gradient `Ā_KK` is already final, and undoes the three steps:
/// `L̄_KJ −= (Ā_KK + Ā_KKᵀ) L_KJ` (one GEMM, `(2/3)n³` flops over all blocks, twice the
/// forward factorisation), `Ā_KJ = L̄_KJ L_JJ⁻¹` (TRSM), `L̄_JJ −= Ā_KJᵀ L_KJ` (GEMM), and
/// the rule of the diagonal block: symbolic for blocks of up to 32, the same blocked
/// reverse with blocks of 32 for larger ones (and for a `block` of at least `n`). `Ā_KJᵀ`
/// is also written above the diagonal, so that every trailing GEMM reads a full
/// symmetric matrix with no copy.
///
/// The strict upper triangle of `L̄` is ignored (it is zeroed first). `lbar` should be
/// BLAS-addressable (contiguous rows or columns); another view works, each BLAS call
/// then copying its block.
pub fn backward_blocked_in_place<T: Real>(
    l: ArrayView2<'_, T>,
    mut lbar: ArrayViewMut2<'_, T>,
    block: usize,
    conv: Convention,
) -> Result<()> {
    let block = positive_block(block)?;
    let n = factor_order(&l)?;
    cotangent_shape(n, shape_of(&lbar))?;
    for_each_below(n, |i, j| lbar[(j, i)] = T::zero());
    blocked_in_place(blas_ready(l).view(), lbar.view_mut(), block)?;
    finish(lbar, conv);
    Ok(())
}

/// `dst ← L̄`'s lower triangle, with the strict upper triangle zeroed; `dst` is not read.
fn copy_lower<T: Real>(dst: ArrayViewMut2<'_, T>, lbar: ArrayView2<'_, T>) {
    Zip::indexed(dst)
        .and(&lbar)
        .for_each(|(i, j), d, &v| *d = if j <= i { v } else { T::zero() });
}

/// Overwrites `g`, which holds `L̄` in its lower triangle (and zeros above it), with the
/// full symmetric `S + Sᵀ`, from which both conventions follow by one pass without
/// transposition.
fn reverse_in_place<T: Real>(
    l: ArrayView2<'_, T>,
    mut g: ArrayViewMut2<'_, T>,
    algorithm: Algorithm,
) -> Result<()> {
    match algorithm {
        Algorithm::Blocked(block) => blocked_in_place(l, g, block),
        Algorithm::Symbolic => symbolic_in_place(l, g),
        Algorithm::Unblocked => {
            // The loop leaves Φ(S + Sᵀ), the lower-triangle gradient.
            backward_in_place(l, g.view_mut());
            let n = g.nrows();
            for_each_below(n, |i, j| g[(j, i)] = g[(i, j)]);
            g.diag_mut().mapv_inplace(|d| d + d);
            Ok(())
        }
    }
}

/// `g ← S + Sᵀ` with `S = L⁻ᵀ Φ(LᵀL̄) L⁻¹`. The strict upper triangle of `L̄` does not
/// matter: the lower triangle of `LᵀL̄` does not depend on it.
pub(super) fn symbolic_in_place<T: Real>(
    l: ArrayView2<'_, T>,
    mut g: ArrayViewMut2<'_, T>,
) -> Result<()> {
    let l = Tri::lower(l);
    trmm(g.view_mut(), Side::Left, l.t(), T::one())?;
    phi(g.view_mut());
    trsm(g.view_mut(), Side::Left, l.t(), T::one())?;
    trsm(g.view_mut(), Side::Right, l, T::one())?;
    let n = g.nrows();
    for_each_below(n, |i, j| {
        let v = g[(i, j)] + g[(j, i)];
        g[(i, j)] = v;
        g[(j, i)] = v;
    });
    g.diag_mut().mapv_inplace(|d| d + d);
    Ok(())
}

/// `g ← S + Sᵀ` as [`symbolic_in_place`], by the reverse of the blocked right-looking
/// factorisation (see [`backward_blocked_in_place`]).
pub(super) fn blocked_in_place<T: Real>(
    l: ArrayView2<'_, T>,
    mut g: ArrayViewMut2<'_, T>,
    block: usize,
) -> Result<()> {
    let n = l.nrows();
    if n <= block.min(DIAG_BLOCK) {
        return symbolic_in_place(l, g);
    }
    // One block holding the whole matrix would be the symbolic rule at full size.
    let block = if n <= block { DIAG_BLOCK } else { block };
    let minus = -T::one();
    for j in (0..n).step_by(block).rev() {
        let e = (j + block).min(n);
        let l_jj = l.slice(s![j..e, j..e]);
        let l_kj = l.slice(s![e.., j..e]);
        let (mut g_kj, g_kk, mut g_jj, mut g_jk) =
            g.multi_slice_mut((s![e.., j..e], s![e.., e..], s![j..e, j..e], s![j..e, e..]));
        // Forward: Â_KK −= L_KJ L_KJᵀ. g_KK holds (S + Sᵀ)_KK, full, from the blocks below.
        gemm(g_kj.view_mut(), Accum::Add, g_kk.view(), l_kj, minus)?;
        // Forward: L_KJ = Â_KJ L_JJ⁻ᵀ. From here on g_KJ holds Ā_KJ = (S + Sᵀ)_KJ.
        trsm(g_kj.view_mut(), Side::Right, Tri::lower(l_jj), T::one())?;
        // Only the lower triangle of this update matters, and the diagonal block's rule
        // ignores the upper one: one GEMM is cheaper than masking.
        gemm(g_jj.view_mut(), Accum::Add, g_kj.t(), l_kj, minus)?;
        // Forward: L_JJ = chol(Â_JJ).
        blocked_in_place(l_jj, g_jj.view_mut(), block.min(DIAG_BLOCK))?;
        g_jk.assign(&g_kj.t());
    }
    Ok(())
}

/// The scalar reverse loop of the row-by-row (Cholesky–Banachiewicz) factorisation, on
/// a buffer holding `L̄` in its lower triangle, which it overwrites with the
/// lower-triangle gradient `Φ(S + Sᵀ)`; the strict upper triangle is neither read nor
/// written. Shapes are the caller's to check.
///
/// The forward loop run backwards, entry by entry, with `L̄` overwritten by `Ā` as it
/// goes (Giles 2008; Murray 2016). The same loop is `crate::naive`'s oracle, kept there
/// as an independent copy.
pub(super) fn backward_in_place<T: Real>(l: ArrayView2<'_, T>, mut g: ArrayViewMut2<'_, T>) {
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

/// Visits every `(i, j)` with `i > j`, tile by tile, so that the transposed accesses
/// stay in cache.
fn for_each_below(n: usize, mut f: impl FnMut(usize, usize)) {
    for ib in (0..n).step_by(TILE) {
        for jb in (0..=ib).step_by(TILE) {
            for i in ib..(ib + TILE).min(n) {
                for j in jb..(jb + TILE).min(i) {
                    f(i, j);
                }
            }
        }
    }
}

/// Turns `S + Sᵀ` into the convention's `Ā` in place: half of it, or `Φ` of it.
fn finish<T: Real>(mut g: ArrayViewMut2<'_, T>, conv: Convention) {
    let half = T::of(0.5);
    match conv {
        Convention::Symmetric => g.mapv_inplace(|x| x * half),
        Convention::Lower => phi(g),
    }
}

/// `out ← Ā` or `out += Ā` for `g = S + Sᵀ`, by the convention. Writing the lower
/// convention zeroes the strict upper triangle; adding leaves it as it is.
fn store<T: Real>(g: ArrayView2<'_, T>, out: ArrayViewMut2<'_, T>, conv: Convention, acc: Accum) {
    let half = T::of(0.5);
    match conv {
        Convention::Symmetric => Zip::from(out)
            .and(g)
            .for_each(|o, &x| acc.store(o, x * half)),
        Convention::Lower => Zip::indexed(out).and(g).for_each(|(i, j), o, &x| {
            if i > j {
                acc.store(o, x);
            } else if i == j {
                acc.store(o, x * half);
            } else if acc == Accum::Replace {
                *o = T::zero();
            }
        }),
    }
}
