//! The LU family of Giles (2008), sections "inverse", "determinant" and "matrix
//! inverse product": [`Inverse`] `C = A⁻¹`, [`Det`] `c = det A`, [`SlogDet`]
//! `(sign det A, log|det A|)` and [`LuSolve`] `X = A⁻¹B` or `X = A⁻ᵀB`, each through
//! one LAPACK LU factorisation `A = PLU` (getrf) and its solves (getrs).
//!
//! [`Det`], [`SlogDet`] and [`LuSolve`] hand the factorisation to their reverse and
//! forward rules as residual outputs ([`crate::Rule::residuals`]): `LU`, the `n×n`
//! packed factors as getrf leaves them (`L` unit lower triangular below the diagonal,
//! `U` on and above it), and `ipiv`, the `n×1` row interchanges as `T` values (LAPACK's
//! 1-based indices: row `i` was swapped with row `ipiv[i]`). The reverse pass solves
//! with them and never refactors, so it does not read `A`.
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let a = array![[4.0f64, 3.0], [6.0, 3.0]];
//! let c = Det.apply([a.view()])?;
//! assert!((c.value()[(0, 0)] + 6.0).abs() < 1e-12);     // 4·3 − 3·6
//! let [abar] = c.backward(array![[1.0]].view())?;        // adj(A)ᵀ
//! assert!((&abar - &array![[3.0, -6.0], [-3.0, 4.0]]).iter().all(|d| d.abs() < 1e-12));
//!
//! let b = array![[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]];
//! let x = LuSolve::new().apply([a.view(), b.view()])?;  // X = A⁻¹B
//! assert!((a.dot(x.value()) - &b).iter().all(|d| d.abs() < 1e-12));
//! assert_eq!(x.residuals().len(), 2);                    // LU and ipiv
//! # Ok::<(), matgrad::Error>(())
//! ```

mod det;
mod inverse;
mod solve;

pub use det::{Det, SlogDet};
pub use inverse::Inverse;
pub use solve::LuSolve;

use super::workspace::{fmat, fmat_mut, take};
use crate::blas::{gemm, lapack, Accum, Trans};
use crate::error::{Error, Result};
use crate::ops::{max_magnitude, rescale_exponent, scale_pow2};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, ShapeBuilder};
use smallvec::{smallvec, SmallVec};

/// Row interchanges as getrf gives them (1-based), inline up to order 64.
type Pivots = SmallVec<[i32; 64]>;

/// Whether LAPACK can take `v` as it is: contiguous columns with a leading dimension of
/// at least the number of rows (the test of [`crate::blas::lapack`]).
fn is_colmajor<T>(v: &ArrayView2<'_, T>) -> bool {
    let (r, c) = v.dim();
    let s = v.strides();
    (r <= 1 || s[0] == 1) && (c <= 1 || s[1] >= r.max(1) as isize)
}

/// [`Error::NonFinite`] at the first NaN or infinity of `x` in row-major order: LAPACK
/// would turn it into a result of NaN without a word.
fn expect_finite<T: Real>(
    op: &'static str,
    name: &'static str,
    x: &ArrayView2<'_, T>,
) -> Result<()> {
    match x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        Some(((row, col), _)) => Err(Error::NonFinite { op, name, row, col }),
        None => Ok(()),
    }
}

/// `2ᵉA = PLU` (getrf) into the column-major `lu`, which is not read: the pivots, the
/// index of the first exactly zero pivot `U[k, k]` if there is one, and `e`. A
/// non-finite entry of `A` is an error before LAPACK sees it.
///
/// getrf multiplies by the reciprocals of its pivots, which overflow for a matrix of
/// subnormal numbers and leave infinite or NaN factors, and its updates
/// `aᵢⱼ − lᵢₖuₖⱼ` overflow for entries near the overflow threshold where the factors
/// are finite; so a matrix whose largest entry lies outside the band of
/// [`rescale_exponent`] is scaled by an exact power of two `2ᵉ` that brings it near 1,
/// and `e = 0` for any other. Scaling down also moves the smallest entries of a matrix
/// with huge ones towards zero, where they lose digits or vanish (`1.5·2⁻⁹⁷⁷` beside
/// `2¹⁰⁰⁰` does), so a matrix with huge entries is first factored as it is, and scaled
/// only if those factors overflow (an overflow anywhere in getrf leaves an infinity or
/// NaN in the factors). The caller accounts for the scale:
/// `det A = 2⁻ⁿᵉ det(2ᵉA)`, `A⁻¹ = 2ᵉ(2ᵉA)⁻¹`, and [`unscale`] before the factors are
/// kept as residuals.
fn factor<T: Real>(
    op: &'static str,
    a: ArrayView2<'_, T>,
    mut lu: ArrayViewMut2<'_, T>,
) -> Result<(Pivots, Option<usize>, i32)> {
    expect_finite(op, "A", &a)?;
    let e = rescale_exponent(max_magnitude(&a));
    let mut piv: Pivots = smallvec![0; a.nrows()];
    lu.assign(&a);
    if e < 0 {
        let zero = lapack::getrf(op, lu.view_mut(), &mut piv)?;
        if all_finite(&lu.view()) {
            return Ok((piv, zero, 0));
        }
        lu.assign(&a);
    }
    scale_pow2(lu.view_mut(), e);
    let zero = lapack::getrf(op, lu, &mut piv)?;
    Ok((piv, zero, e))
}

/// `2ᵉ` in `T`, for an `e` within its normal range.
fn pow2<T: Real>(e: i32) -> T {
    T::of(2f64.powi(e))
}

/// The factors of `2ᵉA` (from [`factor`]) made those of `A`, in place: `U ← 2⁻ᵉU` (`L`
/// does not change). Exact, but where an entry of `U` overflows or falls below the
/// normal range, as that entry of the factors of `A` does.
fn unscale<T: Real>(mut lu: ArrayViewMut2<'_, T>, e: i32) {
    if e == 0 {
        return;
    }
    let s = pow2::<T>(-e);
    for ((i, j), v) in lu.indexed_iter_mut() {
        if j >= i {
            *v *= s;
        }
    }
}

/// The pivots as `T` values into the `n×1` residual (not read).
fn store_pivots<T: Real>(piv: &[i32], mut out: ArrayViewMut2<'_, T>) {
    for (o, &p) in out.iter_mut().zip(piv) {
        *o = T::of(f64::from(p));
    }
}

/// The pivots from the `n×1` residual, each checked to be a row index `1..=n`.
fn residual_pivots<T: Real>(op: &'static str, r: &ArrayView2<'_, T>) -> Result<Pivots> {
    let n = r.nrows();
    r.iter()
        .enumerate()
        .map(|(i, &v)| {
            let p = v.to64();
            if p.fract() == 0.0 && p >= 1.0 && p <= n as f64 {
                Ok(p as i32)
            } else {
                Err(Error::InvalidArgument {
                    op,
                    msg: format!("residual pivot {i} is {v}, not a row index in 1..={n}"),
                })
            }
        })
        .collect()
}

/// The LU residual as LAPACK takes it: the residual itself when it is column-major,
/// otherwise a copy in the first `n²` elements of `ws`; and the rest of `ws`.
/// [`Error::NonFinite`] names an entry of the residual that is not finite: the factors
/// of a matrix with entries near the overflow threshold can overflow where the outputs
/// do not (`|Uᵢⱼ|` grows past `max|Aᵢⱼ|`), and solves with them would give NaN.
fn residual_lu<'a, T: Real>(
    op: &'static str,
    lu: ArrayView2<'a, T>,
    ws: &'a mut [T],
) -> Result<(ArrayView2<'a, T>, &'a mut [T])> {
    expect_finite(op, "LU", &lu)?;
    if is_colmajor(&lu) {
        return Ok((lu, ws));
    }
    let (r, c) = lu.dim();
    let (head, rest) = take(op, ws, r * c)?;
    fmat_mut(head, (r, c)).assign(&lu);
    let head: &'a [T] = head;
    Ok((fmat(head, (r, c)), rest))
}

/// Errors unless every pivot `Uₖₖ` can be divided by: [`Error::Singular`] at the first
/// zero, [`Error::IllConditioned`] at the first whose reciprocal overflows, which the
/// solves (TRSM inside getrs) would turn into infinities.
fn solvable<T: Real>(op: &'static str, lu: &ArrayView2<'_, T>) -> Result<()> {
    crate::ops::invertible_diagonal(op, lu)
}

/// The error for a solve with nonzero pivots whose result overflowed:
/// [`Error::IllConditioned`] at the pivot of smallest magnitude, of the factors of `A`
/// when `lu` holds those of `2ᵉA`.
fn overflowed<T: Real>(op: &'static str, lu: &ArrayView2<'_, T>, e: i32) -> Error {
    let index = smallest_pivot(lu);
    Error::IllConditioned {
        op,
        index,
        value: lu[(index, index)].to64() * 2f64.powi(-e),
    }
}

/// Index of the pivot of smallest magnitude: where a matrix whose inverse overflows is
/// closest to singular.
fn smallest_pivot<T: Real>(lu: &ArrayView2<'_, T>) -> usize {
    let d = lu.diag();
    (0..d.len())
        .min_by(|&i, &j| {
            d[i].abs()
                .partial_cmp(&d[j].abs())
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .unwrap_or(0)
}

/// `det P = ±1`: `−1` to the number of actual row interchanges.
fn permutation_sign<T: Real>(piv: &[i32]) -> T {
    let swaps = piv
        .iter()
        .enumerate()
        .filter(|&(i, &p)| p as usize != i + 1)
        .count();
    if swaps % 2 == 0 {
        T::one()
    } else {
        -T::one()
    }
}

/// `det A = det P · Πᵢ Uᵢᵢ · 2^shift` from the factors. Should a partial product
/// overflow or underflow (`10³⁰·10³⁰·10⁻³⁰` in `f32`), or the scale `2^shift` be
/// other than 1, the product is taken again as a mantissa and a power of two, so it
/// overflows or underflows only when `det A` does.
fn determinant<T: Real>(lu: &ArrayView2<'_, T>, piv: &[i32], shift: i64) -> T {
    let sign = permutation_sign::<T>(piv);
    let c = lu.diag().iter().fold(sign, |c, &d| c * d);
    if lu.diag().iter().any(|&d| d == T::zero() || !d.is_finite()) || (shift == 0 && c.is_normal())
    {
        return c;
    }
    let (mut m, mut e) = (sign.to64(), shift);
    for &d in lu.diag() {
        let (dm, de) = frexp(d.to64());
        let (pm, pe) = frexp(m * dm);
        m = pm;
        e += i64::from(de) + i64::from(pe);
    }
    T::of(ldexp(m, e))
}

/// `x = m·2ᵉ` with `½ ≤ |m| < 1`, for a finite nonzero `x` (`(x, 0)` otherwise).
fn frexp(x: f64) -> (f64, i32) {
    if x == 0.0 || !x.is_finite() {
        return (x, 0);
    }
    // A subnormal is first scaled into the normal range.
    let (x, shift) = if x.abs() < f64::MIN_POSITIVE {
        (x * 2f64.powi(64), -64)
    } else {
        (x, 0)
    };
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32 - 1022;
    let m = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (m, exp + shift)
}

/// `m·2ᵉ`, overflowing or underflowing only when the value does.
fn ldexp(mut m: f64, mut e: i64) -> f64 {
    while e > 1000 && m.is_finite() && m != 0.0 {
        m *= 2f64.powi(1000);
        e -= 1000;
    }
    while e < -1000 && m != 0.0 {
        m *= 2f64.powi(-1000);
        e += 1000;
    }
    m * 2f64.powi(e as i32)
}

/// `out ← op(A)⁻¹` (column-major, not read): getrs on the identity.
fn inverse_into<T: Real>(
    op: &'static str,
    lu: ArrayView2<'_, T>,
    piv: &[i32],
    trans: Trans,
    mut out: ArrayViewMut2<'_, T>,
) -> Result<()> {
    out.fill(T::zero());
    out.diag_mut().fill(T::one());
    lapack::getrs(op, lu, piv, trans, out)
}

/// Whether every entry is finite.
fn all_finite<T: Real>(x: &ArrayView2<'_, T>) -> bool {
    x.iter().all(|v| v.is_finite())
}

/// `G = adj(A)ᵀ = ∂ det A/∂A` into the column-major `n×n` `g` (not read), from the LU
/// factors: finite at every `A`, also a singular one (`docs/math.md`, determinant).
///
/// - No zero pivot: `G = det A · A⁻ᵀ`, one getrs on the identity. Should `A⁻ᵀ`
///   overflow (a pivot so small that `1/Uₖₖ` is infinite) the SVD below is used.
/// - One zero pivot `Uₖₖ = 0`: `A` has rank `n − 1` and
///   `adj(A) = adj(U)·adj(L)·adj(P) = det P · d · x zᵀ` with `d = Πⱼ≠ₖ Uⱼⱼ`, `Ux = 0`
///   (`xₖ = 1`, `xⱼ = 0` below `k`), `yᵀU = 0` (`yₖ = 1`, `yⱼ = 0` above `k`) and
///   `z = P L⁻ᵀ y`: two triangular solves on vectors, `O(n²)`.
/// - Several zero pivots (the rank may still be `n − 1`, as for a shift matrix): the
///   SVD `A = UΣVᵀ` of `A = PLU` rebuilt from the factors,
///   `adj(A)ᵀ = det U · det V · U diag(Πⱼ≠ᵢ σⱼ) Vᵀ`. This path allocates its own
///   scratch (gesdd's), as it is taken only for exactly singular or overflowing input.
fn adjugate_t<T: Real>(
    op: &'static str,
    lu: ArrayView2<'_, T>,
    piv: &[i32],
    mut g: ArrayViewMut2<'_, T>,
) -> Result<()> {
    let n = lu.nrows();
    let zeros: SmallVec<[usize; 2]> = (0..n)
        .filter(|&i| lu[(i, i)] == T::zero())
        .take(2)
        .collect();
    match zeros.as_slice() {
        [] => {
            inverse_into(op, lu, piv, Trans::Yes, g.view_mut())?;
            if all_finite(&g.view()) {
                let c = determinant(&lu, piv, 0);
                g.mapv_inplace(|v| v * c);
                return Ok(());
            }
            adjugate_t_svd(op, lu, piv, g)
        }
        &[k] => {
            adjugate_t_rank_one(lu, piv, k, g);
            Ok(())
        }
        _ => adjugate_t_svd(op, lu, piv, g),
    }
}

/// `adj(A)ᵀ = det P · d · z xᵀ` for exactly one zero pivot `Uₖₖ` (see [`adjugate_t`]).
fn adjugate_t_rank_one<T: Real>(
    lu: ArrayView2<'_, T>,
    piv: &[i32],
    k: usize,
    mut g: ArrayViewMut2<'_, T>,
) {
    let n = lu.nrows();
    let d = (0..n)
        .filter(|&j| j != k)
        .fold(permutation_sign::<T>(piv), |d, j| d * lu[(j, j)]);
    // Ux = 0: x = (−U₍ₖₖ₎⁻¹U[..k, k], 1, 0, …); the leading block is nonsingular.
    g.fill(T::zero());
    let mut x: SmallVec<[T; 64]> = smallvec![T::zero(); n];
    x[k] = T::one();
    for i in (0..k).rev() {
        let s = (i + 1..=k).fold(T::zero(), |s, j| s + lu[(i, j)] * x[j]);
        x[i] = -s / lu[(i, i)];
    }
    // yᵀU = 0: y = (0, …, 1, y_{k+1}, …) by forward substitution with the trailing block.
    let mut y: SmallVec<[T; 64]> = smallvec![T::zero(); n];
    y[k] = T::one();
    for j in k + 1..n {
        let s = (k..j).fold(T::zero(), |s, i| s + y[i] * lu[(i, j)]);
        y[j] = -s / lu[(j, j)];
    }
    // z = L⁻ᵀy (Lᵀ is unit upper triangular), in place, then z ← Pz.
    for i in (0..n).rev() {
        let s = (i + 1..n).fold(T::zero(), |s, j| s + lu[(j, i)] * y[j]);
        y[i] -= s;
    }
    for (i, &p) in piv.iter().enumerate().rev() {
        y.swap(i, p as usize - 1);
    }
    for ((r, c), v) in g.indexed_iter_mut() {
        *v = d * y[r] * x[c];
    }
}

/// `adj(A)ᵀ` through the SVD of `A = PLU` (see [`adjugate_t`]); allocates.
fn adjugate_t_svd<T: Real>(
    op: &'static str,
    lu: ArrayView2<'_, T>,
    piv: &[i32],
    g: ArrayViewMut2<'_, T>,
) -> Result<()> {
    let n = lu.nrows();
    // A = P·L·U: L with its unit diagonal, U its upper triangle, then the interchanges
    // undone from the last.
    let l = Array2::from_shape_fn((n, n), |(i, j)| match i.cmp(&j) {
        std::cmp::Ordering::Greater => lu[(i, j)],
        std::cmp::Ordering::Equal => T::one(),
        std::cmp::Ordering::Less => T::zero(),
    });
    let u = Array2::from_shape_fn((n, n), |(i, j)| if j >= i { lu[(i, j)] } else { T::zero() });
    let mut a = Array2::<T>::zeros((n, n).f());
    gemm(a.view_mut(), Accum::Replace, l.view(), u.view(), T::one())?;
    for (i, &p) in piv.iter().enumerate().rev() {
        let p = p as usize - 1;
        if p != i {
            for j in 0..n {
                a.swap((i, j), (p, j));
            }
        }
    }
    let mut s = vec![T::zero(); n];
    let mut uu = Array2::<T>::zeros((n, n).f());
    let mut vt = Array2::<T>::zeros((n, n).f());
    let mut work = vec![T::zero(); lapack::gesdd_workspace::<T>(n, n)?];
    let mut iwork = vec![0i32; 8 * n];
    lapack::gesdd(
        op,
        a.view_mut(),
        &mut s,
        uu.view_mut(),
        vt.view_mut(),
        &mut work,
        &mut iwork,
    )?;
    // det U · det V of the orthogonal factors, each ±1, by LU.
    let mut sign = T::one();
    for q in [&uu, &vt] {
        let mut m = q.clone();
        let mut p: Pivots = smallvec![0; n];
        lapack::getrf(op, m.view_mut(), &mut p)?;
        let d = determinant(&m.view(), &p, 0);
        sign = if d < T::zero() { -sign } else { sign };
    }
    // πᵢ = Πⱼ≠ᵢ σⱼ by prefix and suffix products (no division by a zero σ).
    let mut suffix = vec![T::one(); n + 1];
    for i in (0..n).rev() {
        suffix[i] = suffix[i + 1] * s[i];
    }
    let mut prefix = T::one();
    for (i, mut col) in uu.columns_mut().into_iter().enumerate() {
        let pi = prefix * suffix[i + 1];
        col.mapv_inplace(|v| v * pi);
        prefix *= s[i];
    }
    gemm(g, Accum::Replace, uu.view(), vt.view(), sign)
}
