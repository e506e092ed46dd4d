//! Entrywise elementary functions over contiguous runs of entries, written so that the
//! compiler vectorises them: no calls into the C maths library, no branches, only
//! arithmetic, comparisons and bit moves.
//!
//! `tanh` from the C library costs about 10 ns an entry and, in a small network's
//! training step, as much as the matrix products around it. [`tanh`] here reduces it
//! to `eᵘ − 1` with `u = 2|x|` (the quotient `t/(t + 2)`, `t = eᵘ − 1`, has no
//! cancellation anywhere) and computes `eᵘ − 1` as `2ᵏ(1 + p) − 1` with `k` the nearest
//! integer to `u/ln 2`, `r = u − k ln 2` in `[−ln 2/2, ln 2/2]` (Cody and Waite's
//! two-part `ln 2`), and `p = eʳ − 1` by its Taylor series to `r¹³/13!`, whose
//! truncation error is below `10⁻¹⁷` relative. Every step is one rounding from exact;
//! tests/vmath.rs bounds the result within 4 units in the last place of the C
//! library's `tanh` over the whole range. Rust does not fuse multiplies and adds
//! without being told, so the scalar function, the plain loop and the AVX2 loop give
//! bit-identical results, and a strided view the same answer as a contiguous one.

use crate::Real;

/// `ln 2` with its 28 low mantissa bits zero, so `k·LN2_HI` is exact for `k < 2²⁸`.
const LN2_HI: f64 = 0.693_147_152_662_277_2;
/// `ln 2 − LN2_HI`, rounded.
const LN2_LO: f64 = 2.789_766_808_773_754_5e-8;
/// `1.5·2⁵²`: `v + MAGIC` rounds `v` to the nearest integer, held in the low bits.
const MAGIC: f64 = 6_755_399_441_055_744.0;
/// Beyond this `|x|` the `f64` result is `±1` (`1 − tanh 19.1 < 2⁻⁵⁴`); clamping there
/// keeps `e²ˣ` finite.
const CLAMP: f64 = 20.0;

/// `tanh x` in `f64`, within a few units in the last place; `±0`, `±∞` and NaN as the
/// C library gives them.
#[inline(always)]
pub fn tanh(x: f64) -> f64 {
    let a = x.abs();
    // A NaN fails the comparison and runs through as NaN.
    let a = if a > CLAMP { CLAMP } else { a };
    let u = a + a;
    let big = u * std::f64::consts::LOG2_E + MAGIC;
    let k = big - MAGIC;
    let r = (u - k * LN2_HI) - k * LN2_LO;
    // eʳ − 1 = r(1 + r/2(1 + r/3(… (1 + r/13)))).
    let mut q = 1.0 + r * (1.0 / 13.0);
    q = 1.0 + r * (1.0 / 12.0) * q;
    q = 1.0 + r * (1.0 / 11.0) * q;
    q = 1.0 + r * (1.0 / 10.0) * q;
    q = 1.0 + r * (1.0 / 9.0) * q;
    q = 1.0 + r * (1.0 / 8.0) * q;
    q = 1.0 + r * (1.0 / 7.0) * q;
    q = 1.0 + r * (1.0 / 6.0) * q;
    q = 1.0 + r * (1.0 / 5.0) * q;
    q = 1.0 + r * (1.0 / 4.0) * q;
    q = 1.0 + r * (1.0 / 3.0) * q;
    q = 1.0 + r * 0.5 * q;
    let p = r * q;
    // 2ᵏ from k's bits (0 ≤ k ≤ 58; garbage, harmlessly, for a NaN).
    let kbits = big.to_bits().wrapping_sub(MAGIC.to_bits());
    let s = f64::from_bits(kbits.wrapping_add(1023) << 52);
    // eᵘ − 1 = 2ᵏ·p + (2ᵏ − 1), both terms exact but the sum.
    let t = s * p + (s - 1.0);
    (t / (t + 2.0)).copysign(x)
}

/// `y[i] = tanh x[i]` through [`tanh`] (in `f64` for `f32`), on the widest vectors the
/// CPU has (AVX2 when present on x86-64). `y` must be as long as `x`; extra entries of
/// the longer one are left alone.
pub fn tanh_slice<T: Real>(x: &[T], y: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only requirement of the target feature.
        unsafe { avx2::tanh_slice(x, y) };
        return;
    }
    tanh_loop(x, y);
}

#[inline(always)]
fn tanh_loop<T: Real>(x: &[T], y: &mut [T]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = T::of(tanh(x.to64()));
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::Real;

    /// [`super::tanh_loop`] compiled for AVX2 (four `f64` lanes).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tanh_slice<T: Real>(x: &[T], y: &mut [T]) {
        super::tanh_loop(x, y);
    }
}
