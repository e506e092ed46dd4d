//! The pure-Rust backend (feature `faer`): faer's GEMM, triangular solves, Cholesky,
//! symmetric eigendecomposition and SVD, with no system library.
//!
//! faer takes any strides, negative ones included, so every ndarray view reaches it as
//! it is: a transposed view is a transposed faer view, never a copy. TRMM (which faer
//! has only out of place) and the LU factorisation (whose zero pivots faer does not
//! skip as LAPACK does) are written here on faer's GEMM and triangular solves, so that
//! both work in place and keep LAPACK's semantics.
//!
//! Threads: one by default, sequentially; `MATGRAD_NUM_THREADS` (read once) or
//! [`crate::set_threads`] asks for more, which then run on rayon's global pool. Not all
//! cores by default, unlike OpenBLAS: faer's parallel dispatch allocates small job
//! records on every call, and a training loop with its own buffers should allocate
//! nothing.

use super::gemmt::{accum, mat, mat_mut};
use super::{Accum, Side, TriKind, Uplo};
use crate::error::{Error, Result};
use crate::Real;
use ::faer::dyn_stack::{MemStack, StackReq};
use ::faer::linalg::matmul::matmul;
use ::faer::linalg::triangular_solve as tri;
use ::faer::prelude::{Reborrow, ReborrowMut};
use ::faer::{MatMut, MatRef, Par};
use ndarray::{ArrayView2, ArrayViewMut2};
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The scalar types this backend computes in, `f32` and `f64`: faer's real fields.
pub trait Scalar: ::faer::traits::RealField {}
impl Scalar for f32 {}
impl Scalar for f64 {}

/// The backend's name in [`crate::runtime()`](fn@crate::runtime).
pub const NAME: &str = "faer";

/// Threads asked for by [`set_threads`] (0: all of rayon's pool), or [`UNSET`].
static THREADS: AtomicUsize = AtomicUsize::new(UNSET);
const UNSET: usize = usize::MAX;

fn par() -> Par {
    let mut n = THREADS.load(Ordering::Relaxed);
    if n == UNSET {
        n = std::env::var("MATGRAD_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1);
        THREADS.store(n, Ordering::Relaxed);
    }
    match n {
        1 => Par::Seq,
        n => Par::rayon(n),
    }
}

/// faer's version and how it dispatches.
pub fn config() -> String {
    "faer 0.24 (pure Rust, SIMD chosen at run time)".to_string()
}

/// The widest instruction set faer's kernels use on this CPU (they choose at run time,
/// as faer's GEMM does: AVX-512, else AVX2 with FMA, else the portable code).
pub fn kernel() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512".to_string();
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "AVX2+FMA".to_string();
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        return "NEON".to_string();
    }
    #[allow(unreachable_code)]
    "portable".to_string()
}

/// Threads a large call runs on.
pub fn threads() -> usize {
    par().degree()
}

/// Runs later calls on `n` threads of rayon's pool (1: sequentially, 0: all of them).
pub fn set_threads(n: usize) {
    THREADS.store(n, Ordering::Relaxed);
}

/// `C ← alpha·A·B` or `C ← C + alpha·A·B` for checked, non-empty shapes.
pub fn gemm<T: Real>(
    c: ArrayViewMut2<'_, T>,
    acc: Accum,
    a: ArrayView2<'_, T>,
    b: ArrayView2<'_, T>,
    alpha: T,
) -> Result<()> {
    matmul(mat_mut(c), accum(acc), mat(a), mat(b), alpha, par());
    Ok(())
}

/// Order below which [`trmm_lower`] multiplies by scalar loops.
const TRMM_BLOCK: usize = 32;

/// `B ← L·B` in place for a lower triangular `L`: `B₂ ← L₂₂B₂ + L₂₁B₁` first (it
/// reads the old `B₁`), then `B₁ ← L₁₁B₁`, recursively, so all but `O(n·32)` of the
/// flops are GEMM and nothing is allocated.
fn trmm_lower<T: Real>(l: MatRef<'_, T>, mut b: MatMut<'_, T>, par: Par) {
    let n = l.nrows();
    if n <= TRMM_BLOCK {
        for j in 0..b.ncols() {
            let mut col = b.rb_mut().col_mut(j);
            for i in (0..n).rev() {
                let mut s = l[(i, i)] * col[i];
                for k in 0..i {
                    s += l[(i, k)] * col[k];
                }
                col[i] = s;
            }
        }
        return;
    }
    let h = n / 2;
    let (l11, _, l21, l22) = l.split_at(h, h);
    let (b1, mut b2) = b.split_at_row_mut(h);
    trmm_lower(l22, b2.rb_mut(), par);
    matmul(b2, ::faer::Accum::Add, l21, b1.rb(), T::one(), par);
    trmm_lower(l11, b1, par);
}

/// TRSM or TRMM with the `uplo` triangle of the square `a` on `side` of the non-empty
/// `b`, shapes checked by the caller.
pub fn triangular<T: Real>(
    kind: TriKind,
    mut b: ArrayViewMut2<'_, T>,
    side: Side,
    a: ArrayView2<'_, T>,
    uplo: Uplo,
    alpha: T,
) -> Result<()> {
    let par = par();
    if alpha != T::one() {
        b.mapv_inplace(|x| alpha * x);
    }
    let (a, b) = (mat(a), mat_mut(b));
    // B·A = (Aᵀ·Bᵀ)ᵀ: the right side is the left side of the transposes, and the
    // transpose of a triangle is the other triangle.
    let (a, b, uplo) = match side {
        Side::Left => (a, b, uplo),
        Side::Right => (a.transpose(), b.transpose_mut(), uplo.flip()),
    };
    match (kind, uplo) {
        (TriKind::Solve, Uplo::Lower) => tri::solve_lower_triangular_in_place(a, b, par),
        (TriKind::Solve, Uplo::Upper) => tri::solve_upper_triangular_in_place(a, b, par),
        (TriKind::Mul, Uplo::Lower) => trmm_lower(a, b, par),
        // JUJ is lower triangular for the exchange matrix J: U·B = J·(JUJ)·(J·B).
        (TriKind::Mul, Uplo::Upper) => {
            trmm_lower(a.reverse_rows_and_cols(), b.reverse_rows_mut(), par)
        }
    }
    Ok(())
}

thread_local! {
    /// Scratch for faer's Cholesky, kept per thread so that steady-state calls allocate
    /// nothing (OpenBLAS keeps its buffers the same way).
    static SCRATCH: RefCell<Vec<MaybeUninit<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a stack of at least `req`, this thread's scratch when it is free.
fn with_scratch<R>(req: StackReq, f: impl FnOnce(&mut MemStack) -> R) -> R {
    let need = req.unaligned_bytes_required();
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < need {
                buf.resize(need, MaybeUninit::uninit());
            }
            f(MemStack::new(&mut buf[..]))
        }
        Err(_) => f(MemStack::new(&mut vec![MaybeUninit::uninit(); need][..])),
    })
}

/// Cholesky on the lower triangle of the square, non-empty `a`; the strict upper
/// triangle is neither read nor written.
pub fn potrf_lower<T: Real>(op: &'static str, a: ArrayViewMut2<'_, T>) -> Result<()> {
    use ::faer::linalg::cholesky::llt::factor as llt;
    let n = a.nrows();
    let par = par();
    let req = llt::cholesky_in_place_scratch::<T>(n, par, Default::default());
    with_scratch(req, |stack| {
        llt::cholesky_in_place(
            mat_mut(a),
            Default::default(),
            par,
            stack,
            Default::default(),
        )
    })
    .map(|_| ())
    .map_err(|e| match e {
        llt::LltError::NonPositivePivot { index } => Error::NotPositiveDefinite { op, index },
    })
}

/// Columns below which [`lu`] factors a panel by scalar loops.
const LU_BLOCK: usize = 16;

/// Swaps rows `i` and `piv[i]` of `a`, for each `i` in order.
fn interchange<T: Real>(mut a: MatMut<'_, T>, piv: &[i32]) {
    for j in 0..a.ncols() {
        let mut col = a.rb_mut().col_mut(j);
        for (i, &p) in piv.iter().enumerate() {
            let p = p as usize;
            if p != i {
                let t = col[i];
                col[i] = col[p];
                col[p] = t;
            }
        }
    }
}

/// `A = PLU` in place for `m ≥ n`, LAPACK's getrf2 recursion: the left half, its
/// interchanges applied to the right half, a unit lower triangular solve and a GEMM,
/// then the right half. `piv` gets the 0-based interchanges (row `i` with `piv[i]`);
/// returns the first exactly zero pivot. As in LAPACK, a zero pivot is kept (its
/// column is not scaled) and the factorisation goes on.
fn lu<T: Real>(mut a: MatMut<'_, T>, piv: &mut [i32], par: Par) -> Option<usize> {
    let n = a.ncols();
    if n <= LU_BLOCK {
        return lu_panel(a, piv);
    }
    let h = n / 2;
    let (mut left, mut right) = a.rb_mut().split_at_col_mut(h);
    let zero_left = lu(left.rb_mut(), &mut piv[..h], par);
    interchange(right.rb_mut(), &piv[..h]);
    let (mut a12, mut a22) = right.split_at_row_mut(h);
    {
        let (l11, l21) = left.rb().split_at_row(h);
        tri::solve_unit_lower_triangular_in_place(l11, a12.rb_mut(), par);
        matmul(
            a22.rb_mut(),
            ::faer::Accum::Add,
            l21,
            a12.rb(),
            -T::one(),
            par,
        );
    }
    let zero_right = lu(a22, &mut piv[h..], par);
    interchange(left.split_at_row_mut(h).1, &piv[h..]);
    for p in &mut piv[h..] {
        *p += h as i32;
    }
    zero_left.or(zero_right.map(|k| k + h))
}

/// [`lu`] of a narrow panel by LAPACK's getf2 loop: the first entry of largest
/// magnitude in the column is the pivot.
fn lu_panel<T: Real>(mut a: MatMut<'_, T>, piv: &mut [i32]) -> Option<usize> {
    let (m, n) = (a.nrows(), a.ncols());
    let mut zero = None;
    for j in 0..n {
        let mut p = j;
        let mut max = a[(j, j)].abs();
        for i in j + 1..m {
            let v = a[(i, j)].abs();
            if v > max {
                max = v;
                p = i;
            }
        }
        piv[j] = p as i32;
        if max == T::zero() {
            zero = zero.or(Some(j));
        } else {
            if p != j {
                for c in 0..n {
                    let t = a[(j, c)];
                    a[(j, c)] = a[(p, c)];
                    a[(p, c)] = t;
                }
            }
            let d = a[(j, j)];
            if max >= T::min_positive_value() {
                let r = T::one() / d;
                for i in j + 1..m {
                    a[(i, j)] *= r;
                }
            } else {
                for i in j + 1..m {
                    a[(i, j)] /= d;
                }
            }
        }
        for c in j + 1..n {
            let f = a[(j, c)];
            if f != T::zero() {
                for i in j + 1..m {
                    let l = a[(i, j)];
                    a[(i, c)] -= l * f;
                }
            }
        }
    }
    zero
}

/// `A = PLU` in place on the square, non-empty `a`; `ipiv` gets LAPACK's 1-based
/// interchanges. Returns the first exactly zero pivot.
pub fn getrf<T: Real>(
    _op: &'static str,
    a: ArrayViewMut2<'_, T>,
    ipiv: &mut [i32],
) -> Result<Option<usize>> {
    let n = a.nrows();
    let piv = &mut ipiv[..n];
    let zero = lu(mat_mut(a), piv, par());
    for p in piv.iter_mut() {
        *p += 1;
    }
    Ok(zero)
}

/// Solves `AX = B` (or `AᵀX = B` when `transposed`) in place in the non-empty `b`, with
/// the factors and 1-based interchanges of [`getrf`].
pub fn getrs<T: Real>(
    _op: &'static str,
    lu: ArrayView2<'_, T>,
    ipiv: &[i32],
    transposed: bool,
    b: ArrayViewMut2<'_, T>,
) -> Result<()> {
    let par = par();
    let n = lu.nrows();
    let piv: smallvec::SmallVec<[i32; 64]> = ipiv[..n].iter().map(|&p| p - 1).collect();
    let (lu, mut b) = (mat(lu), mat_mut(b));
    if transposed {
        // Aᵀ = UᵀLᵀPᵀ: X = P·L⁻ᵀ·U⁻ᵀ·B, P applied as the interchanges in reverse.
        tri::solve_lower_triangular_in_place(lu.transpose(), b.rb_mut(), par);
        tri::solve_unit_upper_triangular_in_place(lu.transpose(), b.rb_mut(), par);
        for j in 0..b.ncols() {
            let mut col = b.rb_mut().col_mut(j);
            for (i, &p) in piv.iter().enumerate().rev() {
                let p = p as usize;
                if p != i {
                    let t = col[i];
                    col[i] = col[p];
                    col[p] = t;
                }
            }
        }
    } else {
        // X = U⁻¹·L⁻¹·Pᵀ·B, Pᵀ applied as the interchanges in order.
        interchange(b.rb_mut(), &piv);
        tri::solve_unit_lower_triangular_in_place(lu, b.rb_mut(), par);
        tri::solve_upper_triangular_in_place(lu, b, par);
    }
    Ok(())
}

/// Elements of `T` that hold `req`.
fn elems<T>(req: StackReq) -> usize {
    req.unaligned_bytes_required()
        .div_ceil(std::mem::size_of::<T>())
}

/// A caller's scratch of `T` as faer's stack.
fn stack_of<T: Real>(work: &mut [T]) -> &mut MemStack {
    let bytes = std::mem::size_of_val(work);
    // SAFETY: `work` is a unique borrow of `bytes` bytes; every byte is a valid
    // `MaybeUninit<u8>`, and whatever bytes faer leaves behind are valid `f32`/`f64`
    // values (every bit pattern is). The slice reborrows `work` for its lifetime.
    let raw = unsafe {
        std::slice::from_raw_parts_mut(work.as_mut_ptr().cast::<MaybeUninit<u8>>(), bytes)
    };
    MemStack::new(raw)
}

/// faer's scratch for a symmetric eigendecomposition of order `n` with vectors, in f64.
fn evd_req(n: usize) -> StackReq {
    ::faer::linalg::evd::self_adjoint_evd_scratch::<f64>(
        n,
        ::faer::linalg::evd::ComputeEigenvectors::Yes,
        par(),
        Default::default(),
    )
}

/// [`syevd`]'s stack: the matrix, its eigenvectors and eigenvalues in f64, and faer's scratch.
fn syevd_req(n: usize) -> StackReq {
    StackReq::all_of(&[
        StackReq::new::<f64>(n * n).array(2),
        StackReq::new::<f64>(n),
        evd_req(n),
    ])
}

/// `(work, iwork)` sizes for [`syevd`] of order `n > 0`.
pub fn syevd_workspace<T: Real>(n: usize) -> Result<(usize, usize)> {
    Ok((elems::<T>(syevd_req(n)), 1))
}

/// Eigenvalues ascending into `w`, eigenvectors over the column-major `a` whose lower
/// triangle holds the symmetric matrix (non-empty, checked by the caller).
///
/// The eigendecomposition and the SVD run in f64 whatever `T` is: faer's f32 solvers
/// are about ten times less accurate than LAPACK's (relative errors of 1e-6 to 7e-6
/// against 3e-7 to 2e-6 on random matrices of order 30 to 75), enough to fail the f32
/// gradient checks of the spectral norm. In f32 this costs the f64 solve's time.
pub fn syevd<T: Real>(
    op: &'static str,
    mut a: ArrayViewMut2<'_, T>,
    w: &mut [T],
    work: &mut [T],
    _iwork: &mut [i32],
) -> Result<()> {
    let n = a.nrows();
    let need = elems::<T>(syevd_req(n));
    if work.len() < need {
        return Err(Error::Workspace {
            op,
            needed: need,
            got: work.len(),
        });
    }
    let stack = stack_of(work);
    let (mut copy, stack) = stack.make_with::<f64>(n * n, |k| a[(k % n, k / n)].to64());
    let e = rescale(&mut copy);
    let (mut vecs, stack) = stack.make_with::<f64>(n * n, |_| 0.0);
    let (mut vals, stack) = stack.make_with::<f64>(n, |_| 0.0);
    ::faer::linalg::evd::self_adjoint_evd(
        MatRef::from_column_major_slice(&copy, n, n),
        ::faer::ColMut::from_slice_mut(&mut vals).as_diagonal_mut(),
        Some(MatMut::from_column_major_slice_mut(&mut vecs, n, n)),
        par(),
        stack,
        Default::default(),
    )
    .map_err(|_| Error::NoConvergence { op })?;
    for ((i, j), x) in a.indexed_iter_mut() {
        *x = T::of(vecs[i + j * n]);
    }
    for (wi, &v) in w.iter_mut().zip(vals.iter()) {
        *wi = T::of(unscale(v, e));
    }
    Ok(())
}

/// Scales `a` in place by a power of two `2^-e` that brings its largest magnitude into
/// `[2^-450, 2^450]`, and returns the exponent `e` to scale results back with
/// [`unscale`]. faer's eigen and SVD solvers do not rescale (LAPACK's `dsyevd` and
/// `dgesdd` do) and fail to converge, or lose tiny singular values, on matrices near the
/// ends of the exponent range. Powers of two scale exactly; the factor is applied in
/// two halves because `2^1074` itself is not a finite `f64`.
fn rescale(a: &mut [f64]) -> i32 {
    const LIMIT: i32 = 450;
    let top = a.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    if top == 0.0 || !top.is_finite() {
        return 0;
    }
    let e = top.log2().floor() as i32;
    if (-LIMIT..=LIMIT).contains(&e) {
        return 0;
    }
    let (f1, f2) = (2f64.powi(-e / 2), 2f64.powi(-e - (-e / 2)));
    for x in a.iter_mut() {
        *x = *x * f1 * f2;
    }
    e
}

/// `v · 2^e`, the inverse of [`rescale`]'s factor.
fn unscale(v: f64, e: i32) -> f64 {
    v * 2f64.powi(e / 2) * 2f64.powi(e - e / 2)
}

/// [`gesdd`]'s stack: `A`, `U`, `V` and `s` in f64, and faer's scratch.
fn gesdd_req(m: usize, n: usize) -> StackReq {
    use ::faer::linalg::svd::ComputeSvdVectors::Thin;
    let k = m.min(n);
    StackReq::all_of(&[
        StackReq::new::<f64>(m * n),
        StackReq::new::<f64>(m * k),
        StackReq::new::<f64>(n * k),
        StackReq::new::<f64>(k),
        ::faer::linalg::svd::svd_scratch::<f64>(m, n, Thin, Thin, par(), Default::default()),
    ])
}

/// `work` size for [`gesdd`] of an `m×n` matrix, `min(m, n) > 0`.
pub fn gesdd_workspace<T: Real>(m: usize, n: usize) -> Result<usize> {
    Ok(elems::<T>(gesdd_req(m, n)))
}

/// The thin SVD `A = U diag(s) Vᵀ`, `s` descending, of the non-empty `a` (shapes
/// checked by the caller), in f64 as [`syevd`].
#[allow(clippy::too_many_arguments)]
pub fn gesdd<T: Real>(
    op: &'static str,
    a: ArrayViewMut2<'_, T>,
    s: &mut [T],
    mut u: ArrayViewMut2<'_, T>,
    mut vt: ArrayViewMut2<'_, T>,
    work: &mut [T],
    _iwork: &mut [i32],
) -> Result<()> {
    let (m, n) = a.dim();
    let k = m.min(n);
    let need = gesdd_workspace::<T>(m, n)?;
    if work.len() < need {
        return Err(Error::Workspace {
            op,
            needed: need,
            got: work.len(),
        });
    }
    let stack = stack_of(work);
    let (mut copy, stack) = stack.make_with::<f64>(m * n, |q| a[(q % m, q / m)].to64());
    let e = rescale(&mut copy);
    let (mut uf, stack) = stack.make_with::<f64>(m * k, |_| 0.0);
    let (mut vf, stack) = stack.make_with::<f64>(n * k, |_| 0.0);
    let (mut sf, stack) = stack.make_with::<f64>(k, |_| 0.0);
    ::faer::linalg::svd::svd(
        MatRef::from_column_major_slice(&copy, m, n),
        ::faer::ColMut::from_slice_mut(&mut sf).as_diagonal_mut(),
        Some(MatMut::from_column_major_slice_mut(&mut uf, m, k)),
        Some(MatMut::from_column_major_slice_mut(&mut vf, n, k)),
        par(),
        stack,
        Default::default(),
    )
    .map_err(|_| Error::NoConvergence { op })?;
    for ((i, j), x) in u.indexed_iter_mut() {
        *x = T::of(uf[i + j * m]);
    }
    for ((i, j), x) in vt.indexed_iter_mut() {
        *x = T::of(vf[j + i * n]);
    }
    for (si, &v) in s.iter_mut().zip(sf.iter()) {
        *si = T::of(unscale(v, e));
    }
    Ok(())
}
