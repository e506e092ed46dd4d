//! The reverse pass of [`Cholesky`](super::Cholesky): `L̄ → S + Sᵀ` by one of four
//! algorithms, all in place on one `n×n` buffer, then the [`Convention`] in one pass
//! (`docs/math.md`, Cholesky).

use super::{blas_ready, cotangent_shape, factor_order, phi, positive_block, Convention, OP};
use crate::blas::{addressable, copy, gemm, gemm_tri, trmm, trsm, Accum, Side, Tri, Uplo};
use crate::error::{shape_of, Error, Result};
use crate::ops::triangular::scratch;
use crate::primitive::Grad;
use crate::Real;
use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Zip};

/// A [`super::Method`] with `Auto` decided and the block size checked.
#[derive(Clone, Copy, Debug)]
pub(super) enum Algorithm {
    Blocked(usize),
    Recursive,
    Symbolic,
    Unblocked,
}

/// Side of the square tiles in which the `O(n²)` passes visit `(i, j)` and `(j, i)`.
const TILE: usize = 64;

/// Order of the diagonal blocks inside a larger diagonal block: the symbolic rule costs
/// `3b³` in small, inefficient TRSMs, so large blocks are themselves reversed blocked.
const DIAG_BLOCK: usize = 32;

/// Order up to which the recursive pass runs the symbolic rule instead of halving.
const RECURSION_LEAF: usize = 32;

/// Order of the diagonal blocks of `L` that [`solve_right_lower`] inverts: OpenBLAS's
/// TRSM with a narrow triangle on the right runs at a fifth of the GEMM rate, its TRMM
/// at over half of it.
const INVERSE_BLOCK: usize = 64;

/// The rule's reverse pass: `Ā` for `L̄` into `grad`. A first write BLAS can address is
/// its own workspace (`L̄`'s lower triangle is copied in, the algorithm and the
/// convention run in place, the old contents are never read); otherwise `ws` (`n²`
/// elements) holds `S + Sᵀ` and the convention's `Ā` is written or added from it.
///
/// The symmetric convention's `Ā = (S + Sᵀ)/2` is linear in `L̄`, so `L̄/2` is copied in
/// and no pass over the result is needed.
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
    let scale = match conv {
        Convention::Symmetric => T::of(0.5),
        Convention::Lower => T::one(),
    };
    // The lower convention reads only the lower triangle of S + Sᵀ.
    let full = conv == Convention::Symmetric;
    if acc == Accum::Replace && addressable(&g.view()) {
        copy_lower(g.view_mut(), lbar, scale);
        reverse_in_place(l.view(), g.view_mut(), algorithm, full)?;
        if conv == Convention::Lower {
            phi(g);
        }
        return Ok(());
    }
    let (mut w, _) = scratch(OP, ws, (n, n))?;
    copy_lower(w.view_mut(), lbar, scale);
    reverse_in_place(l.view(), w.view_mut(), algorithm, full)?;
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
    copy_lower(g.view_mut(), lbar, T::one());
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

/// `dst ← scale·L̄` on the lower triangle with the diagonal, row by row (column by
/// column for a column-major `dst`), so that contiguous memory is copied as such. The
/// strict upper triangle of `dst` is neither read nor written.
fn copy_lower<T: Real>(mut dst: ArrayViewMut2<'_, T>, lbar: ArrayView2<'_, T>, scale: T) {
    let copy = |d: ArrayViewMut1<'_, T>, s: ArrayView1<'_, T>| {
        if scale == T::one() {
            Zip::from(d).and(s).for_each(|d, &s| *d = s);
        } else {
            Zip::from(d).and(s).for_each(|d, &s| *d = s * scale);
        }
    };
    let n = dst.nrows();
    if dst.ncols() > 1 && dst.strides()[0] == 1 {
        for j in 0..n {
            copy(dst.slice_mut(s![j.., j]), lbar.slice(s![j.., j]));
        }
    } else {
        for i in 0..n {
            copy(dst.slice_mut(s![i, ..=i]), lbar.slice(s![i, ..=i]));
        }
    }
}

/// Overwrites `g`, which holds `L̄` in its lower triangle (the strict upper triangle is
/// not read), with `S + Sᵀ`: on the lower triangle and the diagonal, and also on the
/// strict upper triangle if `full`, from which both conventions follow by one pass
/// without transposition. Without `full` the strict upper triangle is left unspecified
/// (the lower convention zeroes it).
fn reverse_in_place<T: Real>(
    l: ArrayView2<'_, T>,
    mut g: ArrayViewMut2<'_, T>,
    algorithm: Algorithm,
    full: bool,
) -> Result<()> {
    match algorithm {
        Algorithm::Blocked(block) => blocked_in_place(l, g, block),
        Algorithm::Recursive => recursive_in_place(l, g, full),
        Algorithm::Symbolic => symbolic_in_place(l, g),
        Algorithm::Unblocked => {
            // The loop leaves Φ(S + Sᵀ), the lower-triangle gradient.
            backward_in_place(l, g.view_mut());
            if full {
                let n = g.nrows();
                for_each_below(n, |i, j| g[(j, i)] = g[(i, j)]);
            }
            g.diag_mut().mapv_inplace(|d| d + d);
            Ok(())
        }
    }
}

/// `g ← S + Sᵀ` with `S = L⁻ᵀ Φ(LᵀL̄) L⁻¹`. The strict upper triangle of `L̄` does not
/// matter: the lower triangle of `LᵀL̄` does not depend on it. It is zeroed first all
/// the same, because OpenBLAS's TRMM multiplies the zero half of the triangle too, and
/// `0·NaN` would carry a NaN left there (a first write's buffer) into the result.
pub(super) fn symbolic_in_place<T: Real>(
    l: ArrayView2<'_, T>,
    mut g: ArrayViewMut2<'_, T>,
) -> Result<()> {
    Uplo::Lower.zero_outside(g.view_mut());
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

/// `g ← S + Sᵀ` as [`symbolic_in_place`], by the reverse of the recursive factorisation
/// (LAPACK's potrf2): with `L` split in halves, the forward pass factors
/// `L₁₁ = chol(A₁₁)`, solves `L₂₁ = A₂₁ L₁₁⁻ᵀ`, updates `Â₂₂ = A₂₂ − L₂₁L₂₁ᵀ` and factors
/// `L₂₂ = chol(Â₂₂)`. The reverse pass undoes the four steps from the last: the recursion
/// on the trailing half leaves the full symmetric `Ā₂₂`, then `L̄₂₁ −= Ā₂₂ L₂₁` (one GEMM),
/// `Ā₂₁ = L̄₂₁ L₁₁⁻¹` ([`solve_right_lower`]), `L̄₁₁ −= Ā₂₁ᵀ L₂₁` on the lower triangle only
/// ([`gemm_tri`]), and the recursion on the leading half. Each of the three updates
/// costs `n³/8` at the top (`n³/4` for the GEMM), `(2/3)n³` flops in all, the same as the
/// blocked pass; but here half of them are in one GEMM of order `n/2` and a quarter in
/// another, the calls that run near the GEMM rate and that BLAS threads well, where the
/// blocked pass makes one narrow GEMM per block. Orders up to [`RECURSION_LEAF`] take the
/// symbolic rule.
///
/// The trailing half's `Ā₂₂` is always made full, since the GEMM reads both of its
/// triangles; the strict upper triangle of the whole is written only if `full` (see
/// [`reverse_in_place`]), which spares a third of the transposed copies.
pub(super) fn recursive_in_place<T: Real>(
    l: ArrayView2<'_, T>,
    mut g: ArrayViewMut2<'_, T>,
    full: bool,
) -> Result<()> {
    let n = l.nrows();
    if n <= RECURSION_LEAF {
        return symbolic_in_place(l, g);
    }
    let h = n / 2;
    let minus = -T::one();
    let (l11, l21, l22) = (
        l.slice(s![..h, ..h]),
        l.slice(s![h.., ..h]),
        l.slice(s![h.., h..]),
    );
    let (mut g11, g12, mut g21, mut g22) =
        g.multi_slice_mut((s![..h, ..h], s![..h, h..], s![h.., ..h], s![h.., h..]));
    recursive_in_place(l22, g22.view_mut(), true)?;
    // Forward: Â₂₂ = A₂₂ − L₂₁L₂₁ᵀ. g₂₂ holds (S + Sᵀ)₂₂, both triangles.
    gemm(g21.view_mut(), Accum::Add, g22.view(), l21, minus)?;
    // Forward: L₂₁ = A₂₁ L₁₁⁻ᵀ. From here on g₂₁ holds Ā₂₁ = (S + Sᵀ)₂₁.
    solve_right_lower(g21.view_mut(), l11)?;
    // The rule of the leading half reads only the lower triangle of its L̄.
    gemm_tri(g11.view_mut(), Uplo::Lower, Accum::Add, g21.t(), l21, minus)?;
    recursive_in_place(l11, g11, full)?;
    if full {
        // The transposing copy by cache-aligned tiles (registers on AVX2).
        copy(g12, g21.t(), Accum::Replace)?;
    }
    Ok(())
}

/// `X ← X L⁻¹` for lower-triangular `L`, by halves: `X₂ ← X₂ L₂₂⁻¹`, `X₁ −= X₂ L₂₁`,
/// `X₁ ← X₁ L₁₁⁻¹`, down to blocks of [`INVERSE_BLOCK`], which are inverted and applied
/// by TRMM (see [`solve_by_inverse`]). The same flops as one TRSM up to the inverses,
/// `O(n·INVERSE_BLOCK²)`.
fn solve_right_lower<T: Real>(mut x: ArrayViewMut2<'_, T>, l: ArrayView2<'_, T>) -> Result<()> {
    let k = l.nrows();
    if k <= INVERSE_BLOCK {
        return solve_by_inverse(x, l);
    }
    let h = k / 2;
    let (mut x1, mut x2) = x.multi_slice_mut((s![.., ..h], s![.., h..]));
    solve_right_lower(x2.view_mut(), l.slice(s![h.., h..]))?;
    gemm(
        x1.view_mut(),
        Accum::Add,
        x2.view(),
        l.slice(s![h.., ..h]),
        -T::one(),
    )?;
    solve_right_lower(x1, l.slice(s![..h, ..h]))
}

/// `X ← X L⁻¹` for a lower-triangular `L` of order at most [`INVERSE_BLOCK`]: `L⁻¹` by a
/// TRSM on the identity into a buffer on the stack, then one TRMM. Not inlined, so that
/// the buffer is on the stack only while it is used, not in every frame of the recursion.
#[inline(never)]
fn solve_by_inverse<T: Real>(x: ArrayViewMut2<'_, T>, l: ArrayView2<'_, T>) -> Result<()> {
    let k = l.nrows();
    let mut buf = [T::zero(); INVERSE_BLOCK * INVERSE_BLOCK];
    let need = k * k;
    let mut inv = ArrayViewMut2::from_shape((k, k), buf.get_mut(..need).unwrap_or_default())
        .map_err(|_| Error::Workspace {
            op: OP,
            needed: need,
            got: INVERSE_BLOCK * INVERSE_BLOCK,
        })?;
    inv.diag_mut().fill(T::one());
    trsm(inv.view_mut(), Side::Left, Tri::lower(l), T::one())?;
    trmm(x, Side::Right, Tri::lower(inv.view()), T::one())
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

/// Turns `S + Sᵀ` into the convention's `Ā` in place: half of it, or `Φ` of it (for the
/// public functions, which copy `L̄` in unscaled).
fn finish<T: Real>(mut g: ArrayViewMut2<'_, T>, conv: Convention) {
    let half = T::of(0.5);
    match conv {
        Convention::Symmetric => g.mapv_inplace(|x| x * half),
        Convention::Lower => phi(g),
    }
}

/// `out ← Ā` or `out += Ā` for `g = S + Sᵀ` (already halved for the symmetric
/// convention, see [`pullback`]). Writing the lower convention zeroes the strict upper
/// triangle; adding leaves it as it is.
fn store<T: Real>(g: ArrayView2<'_, T>, out: ArrayViewMut2<'_, T>, conv: Convention, acc: Accum) {
    let half = T::of(0.5);
    match conv {
        Convention::Symmetric => Zip::from(out).and(g).for_each(|o, &x| acc.store(o, x)),
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
