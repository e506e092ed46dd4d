//! Matrix exponential, `C = exp(A)`, by scaling and squaring with the [13/13] Padé
//! approximant, and its Fréchet derivative for both modes.
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! // A rotation generator: exp(A) is the rotation by θ.
//! let t = 0.3f64;
//! let a = array![[0.0, t], [-t, 0.0]];
//! let c = Expm.apply([a.view()])?;
//! assert!((c.value()[(0, 0)] - t.cos()).abs() < 1e-15);
//! assert!((c.value()[(0, 1)] - t.sin()).abs() < 1e-15);
//! let [abar] = c.backward(array![[1.0, 0.0], [0.0, 1.0]].view())?;
//! // d tr exp(A) = tr(exp(A) dA): Ā = exp(A)ᵀ.
//! approx::assert_abs_diff_eq!(abar, c.value().t(), epsilon = 1e-14);
//! # Ok::<(), matgrad::Error>(())
//! ```

use super::square;
use super::workspace::{fmat_mut, take};
use crate::blas::lapack::{getrf, getrs, pivot_len, pivots_in};
use crate::blas::{gemm, Accum, Trans};
use crate::error::{Error, Result, Shape};
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2, Zip};
use smallvec::smallvec;

const OP: &str = "Expm";

/// Coefficients `b₀ … b₁₃` of the [13/13] Padé approximant to `eˣ`, `p(x)/p(−x)` with
/// `p(x) = Σ bₖxᵏ` (Higham 2005, eq. (2.3) and Table 2.3's `m = 13` row).
const B: [f64; 14] = [
    64_764_752_532_480_000.0,
    32_382_376_266_240_000.0,
    7_771_770_303_897_600.0,
    1_187_353_796_428_800.0,
    129_060_195_264_000.0,
    10_559_470_521_600.0,
    670_442_572_800.0,
    33_522_128_640.0,
    1_323_241_920.0,
    40_840_800.0,
    960_960.0,
    16_380.0,
    182.0,
    1.0,
];

/// `θ₁₃` (Higham 2005, Table 2.3): for `‖2⁻ˢA‖₁ ≤ θ₁₃` the [13/13] approximant has a
/// backward error below `2⁻⁵³`.
const THETA13: f64 = 5.371_920_351_148_152;

/// `ℓ₁₃` (Al-Mohy & Higham 2009, Table 6.1): the same bound for the approximant and its
/// Fréchet derivative together, which is why it is smaller than `θ₁₃`.
const ELL13: f64 = 4.74;

/// Scratch matrices of the forward pass.
const EVAL_SLOTS: usize = 7;
/// Scratch matrices of the Fréchet derivative.
const FRECHET_SLOTS: usize = 14;

/// `C = exp(A)` for a square `A`, by scaling and squaring with the [13/13] Padé
/// approximant: `s = max(0, ⌈log₂(‖A‖₁/θ₁₃)⌉)`, `X = 2⁻ˢA`, `r₁₃(X) = q(X)⁻¹p(X)`
/// solved through LU (`getrf`/`getrs`), then `C = r₁₃(X)^(2ˢ)` by `s` squarings
/// (N. J. Higham, *The scaling and squaring method for the matrix exponential
/// revisited*, SIAM J. Matrix Anal. Appl. 26(4), 2005, Algorithm 2.3 with `m = 13`
/// always; Giles 2008, "Matrix exponential").
///
/// Both modes are the Fréchet derivative `L(A, E) = ∫₀¹ e^{(1−t)A} E e^{tA} dt`:
/// forward `Ċ = L(A, Ȧ)`, reverse `Ā = L(Aᵀ, C̄)`, since `⟨C̄, L(A, E)⟩ = ⟨L(Aᵀ, C̄), E⟩`
/// (`docs/math.md`, "Matrix exponential"). `L` is computed by differentiating the
/// scaling-and-squaring recursion: the Padé parts and their derivatives
/// (`M₂ = XE' + E'X`, `M₄`, `M₆`, `L_U`, `L_V`), one LU of `q(X)` for two solves,
/// `L_r = q⁻¹(L_U + L_V + (L_U − L_V)r)`, then `L ← RL + LR`, `R ← R²` per squaring
/// (A. H. Al-Mohy and N. J. Higham, *Computing the Fréchet derivative of the matrix
/// exponential, with an application to condition number estimation*, SIAM J. Matrix
/// Anal. Appl. 30(4), 2009, Algorithm 6.4 with `m = 13`, scaling from `ℓ₁₃ = 4.74`).
/// The scaling depends on `A` only, never on `‖E‖`, so a large cotangent does not
/// over-scale, and the result is accurate for `‖A‖` well above 1. Costs about three
/// times the forward pass; `Aᵀ` is a transposed view.
///
/// Errors: [`Error::NotSquare`]; [`Error::NonFinite`] for a NaN or infinity in `A`;
/// [`Error::InvalidArgument`] when `exp(A)` overflows the precision; [`Error::Singular`]
/// if `q(X)` had an exactly zero pivot (it cannot for `‖X‖₁ ≤ θ₁₃`).
///
/// Saves: the input `A` (not `C`). Workspace: `14n²` elements plus room for `n`
/// pivots, shared by the three passes, so calls with a caller workspace allocate
/// nothing.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Expm;

/// Errors at the first NaN or infinity of `a`.
fn finite<T: Real>(a: &ArrayView2<'_, T>) -> Result<()> {
    match a.indexed_iter().find(|(_, v)| !v.is_finite()) {
        None => Ok(()),
        Some(((row, col), _)) => Err(Error::NonFinite {
            op: OP,
            name: "A",
            row,
            col,
        }),
    }
}

/// `log₂‖A‖₁`, or `None` for a zero matrix, computed in `f64` relative to the largest
/// magnitude so that no column sum overflows.
fn log2_norm1<T: Real>(a: &ArrayView2<'_, T>) -> Option<f64> {
    let big = a.iter().fold(0.0f64, |m, v| m.max(v.to64().abs()));
    if big == 0.0 {
        return None;
    }
    let rel = a
        .columns()
        .into_iter()
        .map(|c| c.iter().map(|v| v.to64().abs() / big).sum::<f64>())
        .fold(0.0f64, f64::max);
    Some(rel.log2() + big.log2())
}

/// The number of squarings `s = max(0, ⌈log₂(‖A‖₁/θ)⌉)`.
fn squarings<T: Real>(a: &ArrayView2<'_, T>, theta: f64) -> u32 {
    match log2_norm1(a) {
        None => 0,
        // At most about 1100 for finite f64 input: the cast cannot truncate.
        Some(l) => (l - theta.log2()).ceil().max(0.0) as u32,
    }
}

/// `2⁻ˢ` in `T` (exact: a power of two, subnormal at worst).
fn pow2_neg<T: Real>(s: u32) -> T {
    T::of((-f64::from(s)).exp2())
}

/// The exponent `k` with `max|Eᵢⱼ|·2⁻ᵏ` in `[½, 1)`, kept where `2^±k` is a normal
/// number of `T`; `0` for a zero `E` or one with an infinite entry (NaN entries are
/// passed over: they reach the result whatever the scale).
fn balance<T: Real>(e: ArrayView2<'_, T>) -> i32 {
    let m = e.iter().fold(0.0f64, |m, v| m.max(v.to64().abs()));
    if m == 0.0 || !m.is_finite() {
        return 0;
    }
    // 2^±limit are the extreme normal powers of two: 2⁻¹⁰²² is the smallest normal f64
    // (whose log₂ is exact, where log₂ of the largest rounds up to 1024).
    let limit = -T::min_positive_value().to64().log2();
    (m.log2().floor() + 1.0).clamp(-limit, limit) as i32
}

/// `n×n` column-major views over consecutive slices of `ws`.
fn slots<T, const K: usize>(ws: &mut [T], n: usize) -> Result<[ArrayViewMut2<'_, T>; K]> {
    let nn = n * n;
    let (mut rest, _) = take(OP, ws, K * nn)?;
    Ok(std::array::from_fn(|_| {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(nn);
        rest = tail;
        fmat_mut(head, (n, n))
    }))
}

/// `dst = c₀X₀ + c₁X₁ + c₂X₂ + d·I`, without reading `dst`.
fn comb<T: Real>(mut dst: ArrayViewMut2<'_, T>, c: [f64; 3], x: [ArrayView2<'_, T>; 3], d: f64) {
    let (c0, c1, c2) = (T::of(c[0]), T::of(c[1]), T::of(c[2]));
    Zip::from(&mut dst)
        .and(&x[0])
        .and(&x[1])
        .and(&x[2])
        .for_each(|o, &a, &b, &e| *o = c0 * a + c1 * b + c2 * e);
    if d != 0.0 {
        let d = T::of(d);
        dst.diag_mut().iter_mut().for_each(|o| *o += d);
    }
}

/// `dst = src · 2⁻ˢ`, without reading `dst`.
fn scaled<T: Real>(mut dst: ArrayViewMut2<'_, T>, src: ArrayView2<'_, T>, s: u32) {
    let f = pow2_neg::<T>(s);
    Zip::from(&mut dst).and(&src).for_each(|o, &v| *o = v * f);
}

/// LU of `q` in place; a zero pivot is [`Error::Singular`].
fn factor<T: Real>(q: ArrayViewMut2<'_, T>, ipiv: &mut [i32]) -> Result<()> {
    match getrf(OP, q, ipiv)? {
        None => Ok(()),
        Some(index) => Err(Error::Singular { op: OP, index }),
    }
}

/// `out = exp(A)` with `s` squarings (Higham 2005, Algorithm 2.3, `m = 13`).
fn expm_into<T: Real>(
    a: ArrayView2<'_, T>,
    s: u32,
    mut out: ArrayViewMut2<'_, T>,
    ws: &mut [T],
) -> Result<()> {
    let n = a.nrows();
    let (ipiv, rest) = pivots_in(ws, n)?;
    let [mut x, mut x2, mut x4, mut x6, mut t, mut u, mut v] = slots::<T, EVAL_SLOTS>(rest, n)?;
    let one = T::one();
    scaled(x.view_mut(), a, s);
    gemm(x2.view_mut(), Accum::Replace, x.view(), x.view(), one)?;
    gemm(x4.view_mut(), Accum::Replace, x2.view(), x2.view(), one)?;
    gemm(x6.view_mut(), Accum::Replace, x2.view(), x4.view(), one)?;
    let pw = [x6.view(), x4.view(), x2.view()];
    // W = X₆(b₁₃X₆ + b₁₁X₄ + b₉X₂) + b₇X₆ + b₅X₄ + b₃X₂ + b₁I, U = XW.
    comb(t.view_mut(), [B[13], B[11], B[9]], pw, 0.0);
    comb(v.view_mut(), [B[7], B[5], B[3]], pw, B[1]);
    gemm(v.view_mut(), Accum::Add, x6.view(), t.view(), one)?;
    gemm(u.view_mut(), Accum::Replace, x.view(), v.view(), one)?;
    // V = X₆(b₁₂X₆ + b₁₀X₄ + b₈X₂) + b₆X₆ + b₄X₄ + b₂X₂ + b₀I.
    comb(t.view_mut(), [B[12], B[10], B[8]], pw, 0.0);
    comb(v.view_mut(), [B[6], B[4], B[2]], pw, B[0]);
    gemm(v.view_mut(), Accum::Add, x6.view(), t.view(), one)?;
    // p = U + V into t, q = V − U in place of V; r = q⁻¹p into t.
    Zip::from(&mut t).and(&mut v).and(&u).for_each(|p, q, &uu| {
        *p = *q + uu;
        *q -= uu;
    });
    factor(v.view_mut(), ipiv)?;
    getrs(OP, v.view(), ipiv, Trans::No, t.view_mut())?;
    // s squarings, the last one straight into the output.
    let (mut r, mut spare) = (t, x2);
    for k in 0..s {
        if k + 1 == s {
            return gemm(out, Accum::Replace, r.view(), r.view(), one);
        }
        gemm(spare.view_mut(), Accum::Replace, r.view(), r.view(), one)?;
        std::mem::swap(&mut r, &mut spare);
    }
    out.assign(&r);
    Ok(())
}

/// `out ← L(X, E)` (`Replace`) or `out += L(X, E)` (`Add`): the Fréchet derivative of
/// the scaling-and-squaring approximant with `s` squarings (Al-Mohy & Higham 2009,
/// Algorithm 6.4, `m = 13`). `x` may be a transposed view.
fn frechet_into<T: Real>(
    xin: ArrayView2<'_, T>,
    ein: ArrayView2<'_, T>,
    s: u32,
    out: ArrayViewMut2<'_, T>,
    acc: Accum,
    ws: &mut [T],
) -> Result<()> {
    let n = xin.nrows();
    let (ipiv, rest) = pivots_in(ws, n)?;
    let [mut x, mut e, mut x2, mut x4, mut x6, mut m2, mut m4, mut m6, mut w1, mut z1, mut w, mut u, mut v, mut t] =
        slots::<T, FRECHET_SLOTS>(rest, n)?;
    let one = T::one();
    scaled(x.view_mut(), xin, s);
    // L is linear in E: E enters at a power-of-two scale near 1 and L is scaled back at
    // the end (both exact), so that a large or tiny direction does not overflow or
    // underflow against the Padé coefficients (b₀ ≈ 6·10¹⁶).
    let k = balance::<T>(ein);
    let (down, back) = (T::of((-f64::from(k)).exp2()), T::of(f64::from(k).exp2()));
    Zip::from(&mut e).and(&ein).for_each(|o, &v| *o = v * down);
    e.mapv_inplace(|v| v * pow2_neg::<T>(s));
    // Powers and their derivatives: M₂ = XE + EX, M₄ = X₂M₂ + M₂X₂, M₆ = X₄M₂ + M₄X₂.
    gemm(x2.view_mut(), Accum::Replace, x.view(), x.view(), one)?;
    gemm(x4.view_mut(), Accum::Replace, x2.view(), x2.view(), one)?;
    gemm(x6.view_mut(), Accum::Replace, x2.view(), x4.view(), one)?;
    gemm(m2.view_mut(), Accum::Replace, x.view(), e.view(), one)?;
    gemm(m2.view_mut(), Accum::Add, e.view(), x.view(), one)?;
    gemm(m4.view_mut(), Accum::Replace, x2.view(), m2.view(), one)?;
    gemm(m4.view_mut(), Accum::Add, m2.view(), x2.view(), one)?;
    gemm(m6.view_mut(), Accum::Replace, x4.view(), m2.view(), one)?;
    gemm(m6.view_mut(), Accum::Add, m4.view(), x2.view(), one)?;
    // The Padé parts: W₁, Z₁, W = X₆W₁ + W₂, U = XW, V = X₆Z₁ + Z₂.
    let pw = [x6.view(), x4.view(), x2.view()];
    comb(w1.view_mut(), [B[13], B[11], B[9]], pw, 0.0);
    comb(z1.view_mut(), [B[12], B[10], B[8]], pw, 0.0);
    comb(w.view_mut(), [B[7], B[5], B[3]], pw, B[1]);
    gemm(w.view_mut(), Accum::Add, x6.view(), w1.view(), one)?;
    gemm(u.view_mut(), Accum::Replace, x.view(), w.view(), one)?;
    comb(v.view_mut(), [B[6], B[4], B[2]], pw, B[0]);
    gemm(v.view_mut(), Accum::Add, x6.view(), z1.view(), one)?;
    // Their derivatives. X₂ and X₄ are free from here: L_W goes in X₂'s slot, L_U in X₄'s.
    let pm = [m6.view(), m4.view(), m2.view()];
    let (mut lw, mut lu) = (x2, x4);
    comb(t.view_mut(), [B[13], B[11], B[9]], pm, 0.0);
    comb(lw.view_mut(), [B[7], B[5], B[3]], pm, 0.0);
    gemm(lw.view_mut(), Accum::Add, x6.view(), t.view(), one)?;
    gemm(lw.view_mut(), Accum::Add, m6.view(), w1.view(), one)?;
    gemm(lu.view_mut(), Accum::Replace, x.view(), lw.view(), one)?;
    gemm(lu.view_mut(), Accum::Add, e.view(), w.view(), one)?;
    let mut lv = lw;
    comb(t.view_mut(), [B[12], B[10], B[8]], pm, 0.0);
    comb(lv.view_mut(), [B[6], B[4], B[2]], pm, 0.0);
    gemm(lv.view_mut(), Accum::Add, x6.view(), t.view(), one)?;
    gemm(lv.view_mut(), Accum::Add, m6.view(), z1.view(), one)?;
    // r = q⁻¹p with p = U + V (in W₁'s slot), q = V − U (in place of V).
    let mut r = w1;
    Zip::from(&mut r).and(&mut v).and(&u).for_each(|p, q, &uu| {
        *p = *q + uu;
        *q -= uu;
    });
    factor(v.view_mut(), ipiv)?;
    getrs(OP, v.view(), ipiv, Trans::No, r.view_mut())?;
    // L = q⁻¹(L_U + L_V + (L_U − L_V)r): the sum in Z₁'s slot, the difference in U's.
    let (mut l, mut d) = (z1, u);
    Zip::from(&mut l)
        .and(&mut d)
        .and(&lu)
        .and(&lv)
        .for_each(|sum, dif, &a, &b| {
            *sum = a + b;
            *dif = a - b;
        });
    gemm(l.view_mut(), Accum::Add, d.view(), r.view(), one)?;
    getrs(OP, v.view(), ipiv, Trans::No, l.view_mut())?;
    // Squarings: L ← RL + LR, R ← R², the last L straight into the output.
    let (mut l2, mut r2) = (m2, m4);
    for j in 0..s {
        if j + 1 == s {
            let mut out = out;
            gemm(out.view_mut(), acc, r.view(), l.view(), back)?;
            return gemm(out, Accum::Add, l.view(), r.view(), back);
        }
        gemm(l2.view_mut(), Accum::Replace, r.view(), l.view(), one)?;
        gemm(l2.view_mut(), Accum::Add, l.view(), r.view(), one)?;
        gemm(r2.view_mut(), Accum::Replace, r.view(), r.view(), one)?;
        std::mem::swap(&mut l, &mut l2);
        std::mem::swap(&mut r, &mut r2);
    }
    l.mapv_inplace(|v| v * back);
    acc.assign(out, l.view());
    Ok(())
}

impl<T: Real> Rule<T> for Expm {
    fn name(&self) -> &'static str {
        OP
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        let n = square(OP, "A", x[0])?;
        Ok(smallvec![Shape(n, n)])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.input(0)
    }
    fn workspace(&self, x: &[Shape]) -> usize {
        let n = x[0].0;
        pivot_len::<T>(n).saturating_add(FRECHET_SLOTS.saturating_mul(n.saturating_mul(n)))
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let a = x[0].view();
        finite(&a)?;
        expm_into(a.view(), squarings(&a, THETA13), y[0].view_mut(), ws)?;
        if y[0].iter().all(|v| v.is_finite()) {
            Ok(())
        } else {
            Err(Error::InvalidArgument {
                op: OP,
                msg: format!(
                    "exp(A) overflows {}: log₂‖A‖₁ = {:.1}",
                    T::NAME,
                    log2_norm1(&a).unwrap_or(f64::NEG_INFINITY)
                ),
            })
        }
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let a = x[0].view();
        finite(&a)?;
        if let Some((g, acc)) = grads[0].target() {
            // Ā = L(Aᵀ, C̄), scaled from ‖A‖₁ as the forward mode is, so that the two
            // modes are adjoint to rounding.
            frechet_into(a.t(), ybar.view(0), squarings(&a, ELL13), g, acc, ws)?;
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let a = x[0].view();
        finite(&a)?;
        let s = squarings(&a, ELL13);
        frechet_into(a, xdot.view(0), s, ydot[0].view_mut(), Accum::Replace, ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    /// `balance` returns `k` with the largest `|Eᵢⱼ|·2⁻ᵏ` in `[½, 1)`: the Fréchet
    /// derivative's halves in the last squaring are then at most `‖e^A‖/2`-sized, which
    /// is what keeps `L(A, E)` finite next to an `e^A` near the overflow threshold.
    #[test]
    fn balance_scales_the_largest_entry_into_a_half_to_one() {
        for (largest, k) in [
            (0.9, 0),
            (0.45, -1),
            (0.5, 0),
            (1.0, 1),
            (3.0, 2),
            (1e-3, -9),
        ] {
            let e = array![[0.25 * largest, -largest], [0.0, 0.5 * largest]];
            let got = balance::<f64>(e.view());
            assert_eq!(got, k, "largest entry {largest}");
            let scaled = largest * (-f64::from(got)).exp2();
            assert!((0.5..1.0).contains(&scaled), "largest entry {largest}");
        }
        // Zero and infinite directions are left alone; NaN entries are passed over.
        assert_eq!(balance::<f64>(Array2::zeros((2, 3)).view()), 0);
        assert_eq!(balance::<f64>(array![[1.0, f64::NEG_INFINITY]].view()), 0);
        assert_eq!(balance::<f64>(array![[3.0, f64::NAN]].view()), 2);
        // Clamped so that 2^±k stays a normal number: f64's max is below 2¹⁰²⁴, f32's
        // below 2¹²⁸.
        assert_eq!(balance::<f64>(array![[f64::MAX]].view()), 1022);
        assert_eq!(
            balance::<f64>(array![[f64::MIN_POSITIVE / 8.0]].view()),
            -1022
        );
        assert_eq!(balance::<f32>(array![[f32::MAX]].view()), 126);
        assert_eq!(balance::<f32>(array![[1e-40f32]].view()), -126);
    }
}
