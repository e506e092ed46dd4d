//! Cholesky factorisation `A = LLᵀ` of a symmetric positive definite matrix, with its
//! forward- and reverse-mode rules (Murray 2016).
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let a = array![[4.0, 0.0], [2.0, 10.0]];   // only the lower triangle is read
//! let chol = Cholesky::new().apply(a.view())?;
//! assert_eq!(chol.value(), &array![[2.0, 0.0], [1.0, 3.0]]);
//!
//! let lbar = array![[1.0, 0.0], [0.5, -1.0]];
//! let abar = chol.backward(lbar.view())?;                 // symmetric: Ā = Āᵀ
//! assert_eq!(abar[(0, 1)], abar[(1, 0)]);
//!
//! let lower = Cholesky::new().convention(Convention::Lower);
//! let abar_lower = lower.apply(a.view())?.backward(lbar.view())?;
//! assert_eq!(abar_lower[(1, 0)], 2.0 * abar[(1, 0)]);   // off-diagonal doubled
//! assert_eq!(abar_lower[(0, 1)], 0.0);                  // upper triangle is not an input
//! # Ok::<(), matgrad::Error>(())
//! ```
//!
//! # Which gradient convention
//!
//! Use [`Convention::Symmetric`] (the default, as in PyTorch, JAX and TensorFlow) when
//! `A` is a symmetric matrix computed by other differentiable operations, such as a
//! kernel matrix or `XXᵀ + σ²I`, whose gradient must flow back through both triangles.
//! Use [`Convention::Lower`] when the independent parameters are the entries LAPACK
//! reads, the lower triangle of `A`, with nothing stored above the diagonal (Murray's
//! routines, LAPACK-style code that keeps one triangle).
//!
//! Both are the same derivative in different coordinates: under a symmetric perturbation
//! the pair `Aᵢⱼ = Aⱼᵢ` moves together, so the lower-triangle gradient there is the sum
//! over the pair, twice the symmetric gradient. A plain finite-difference check that
//! perturbs each of the `n²` entries on its own matches neither in general, because it
//! measures the derivative with respect to whichever entries an implementation happens
//! to read, not a property of a function of a symmetric matrix (PyTorch issue 18825,
//! where such a check and a composition through Cholesky disagreed). For this forward
//! pass, which reads only the lower triangle, it reproduces `Lower` and rejects
//! `Symmetric`; for one that read the upper triangle it would reject both. Hence the
//! primitive declares its input's [`Structure`] and the checker perturbs only along it.
//!
//! # Rules
//!
//! With `Φ(X)` the lower triangle of `X` with its diagonal halved:
//! - forward mode, `L̇ = L Φ(L⁻¹ Ȧ L⁻ᵀ)` for symmetric `Ȧ`;
//! - reverse mode, `P = Φ(LᵀL̄)`, `S = L⁻ᵀ P L⁻¹`, then `Ā = (S + Sᵀ)/2` (symmetric) or
//!   `Ā = Φ(S + Sᵀ)` (lower: diagonal `Sᵢᵢ`, below it `Sᵢⱼ + Sⱼᵢ`, above it zero).
//!
//! The reverse pass comes in three algorithms ([`Method`]): the two triangular solves
//! above ([`backward_symbolic`]), the reverse of the blocked factorisation with level-3
//! BLAS on off-diagonal blocks ([`backward_blocked`], the fastest for all but tiny `n`),
//! and the scalar loop of [`crate::naive::cholesky`].

use super::{one, Unary};
use crate::blas::{addressable, gemm, to_i32, trmm, trsm, Diag, Side, Trans, Uplo};
use crate::error::{expect_shape, shape_of, Error, Result, Shape};
use crate::naive;
use crate::primitive::{check_arity, Primitive, Structure};
use crate::Real;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, CowArray, Ix2, Zip};

const OP: &str = "Cholesky";

/// Below this order [`Method::Auto`] runs the scalar loop, which beats the BLAS calls
/// there (the crossover in `benches/cholesky.rs`, group `cholesky_small`).
const AUTO_UNBLOCKED_BELOW: usize = 40;

/// From this order on [`Method::Auto`] doubles the block: each block's GEMM streams the
/// whole trailing gradient through memory, and fewer, wider blocks stream it fewer
/// times (group `cholesky_block`: at n = 2000 block 128 is 5–8% faster than 64 on both
/// the SSE3 and the AVX-512 kernels, at n = 500 no faster).
const AUTO_WIDE_BLOCK_FROM: usize = 1024;

/// Side of the square tiles in which the `O(n²)` passes visit `(i, j)` and `(j, i)`.
const TILE: usize = 64;

/// What `Ā` means: the gradient with respect to a symmetric `A`, or with respect to the
/// lower triangle that potrf reads. See the [module documentation](self) for when to use which.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub enum Convention {
    /// `Ā = (S + Sᵀ)/2`, symmetric; correct for symmetric perturbations `Ȧ`. The
    /// convention of PyTorch, JAX, TensorFlow and HIPS autograd.
    #[default]
    Symmetric,
    /// `Ā = Φ(S + Sᵀ)`: the gradient with respect to the entries potrf reads. Below the
    /// diagonal `Sᵢⱼ + Sⱼᵢ`, twice the symmetric gradient; above it zero (Murray 2016, LAPACK).
    Lower,
}

impl Convention {
    /// The perturbations of `A` under which this gradient is the derivative.
    pub fn structure(self) -> Structure {
        match self {
            Convention::Symmetric => Structure::Symmetric,
            Convention::Lower => Structure::LowerTriangular,
        }
    }
}

/// Algorithm of the reverse pass. All give the same `Ā` up to rounding.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub enum Method {
    /// The fastest for the size: the scalar loop for tiny `n`, blocked with
    /// [`Real::CHOL_BLOCK`] otherwise, twice that from `n = 1024` on.
    #[default]
    Auto,
    /// Reverse of the blocked factorisation, in place on `L̄` ([`backward_blocked`]).
    Blocked {
        /// Order of the diagonal blocks.
        block: usize,
    },
    /// `S = L⁻ᵀ Φ(LᵀL̄) L⁻¹` by one TRMM and two TRSMs on the whole matrix ([`backward_symbolic`]).
    Symbolic,
    /// The scalar reverse loop of [`naive::cholesky::cholesky_backward`].
    Unblocked,
}

/// A [`Method`] with `Auto` decided and the block size checked.
#[derive(Clone, Copy)]
enum Algorithm {
    Blocked(usize),
    Symbolic,
    Unblocked,
}

impl Method {
    fn algorithm<T: Real>(self, n: usize) -> Result<Algorithm> {
        Ok(match self {
            Method::Auto if n < AUTO_UNBLOCKED_BELOW => Algorithm::Unblocked,
            Method::Auto if n < AUTO_WIDE_BLOCK_FROM => Algorithm::Blocked(T::CHOL_BLOCK),
            Method::Auto => Algorithm::Blocked(2 * T::CHOL_BLOCK),
            Method::Blocked { block } => Algorithm::Blocked(check_block(block)?),
            Method::Symbolic => Algorithm::Symbolic,
            Method::Unblocked => Algorithm::Unblocked,
        })
    }
}

/// `L = chol(A)`, the lower-triangular factor with positive diagonal and `A = LLᵀ`,
/// reading only the lower triangle of `A` (Murray 2016).
///
/// - Forward: `L` by LAPACK potrf.
/// - JVP: `L̇ = L Φ(L⁻¹ Ȧ L⁻ᵀ)`, `Ȧ` taken symmetric: `(Ȧ + Ȧᵀ)/2` under
///   [`Convention::Symmetric`], the symmetric matrix with `Ȧ`'s lower triangle under
///   [`Convention::Lower`].
/// - VJP: `S = L⁻ᵀ Φ(LᵀL̄) L⁻¹`, `Ā = (S + Sᵀ)/2` or `Ā = Φ(S + Sᵀ)` per [`Convention`],
///   computed by the chosen [`Method`].
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub struct Cholesky {
    /// What `Ā` means.
    pub convention: Convention,
    /// Algorithm of the reverse pass.
    pub method: Method,
}

impl Cholesky {
    /// Symmetric convention, automatic method.
    pub fn new() -> Self {
        Self::default()
    }
    /// The same primitive with another gradient convention.
    pub fn convention(self, convention: Convention) -> Self {
        Cholesky { convention, ..self }
    }
    /// The same primitive with another reverse-pass algorithm.
    pub fn method(self, method: Method) -> Self {
        Cholesky { method, ..self }
    }

    /// `S + Sᵀ` (full, symmetric) in a copy of `L̄`.
    fn reverse<T: Real>(&self, l: ArrayView2<'_, T>, lbar: ArrayView2<'_, T>) -> Result<Array2<T>> {
        let n = check_factor(l.view())?;
        expect_shape(OP, "L̄", "L", Shape(n, n), shape_of(&lbar))?;
        let algorithm = self.method.algorithm::<T>(n)?;
        let mut g = lbar.as_standard_layout().into_owned();
        reverse_in_place(blas_ready(l).view(), g.view_mut(), algorithm)?;
        Ok(g)
    }
}

fn square<T>(name: &'static str, a: &ArrayView2<'_, T>) -> Result<usize> {
    let (r, c) = a.dim();
    if r == c {
        Ok(r)
    } else {
        Err(Error::NotSquare {
            op: OP,
            name,
            got: Shape(r, c),
        })
    }
}

/// Order of `L`, after checking that it is square with a nonzero diagonal (the reverse
/// pass divides by it).
fn check_factor<T: Real>(l: ArrayView2<'_, T>) -> Result<usize> {
    let n = square("L", &l)?;
    match l.diag().iter().position(|&d| d == T::zero()) {
        Some(index) => Err(Error::Singular { op: OP, index }),
        None => Ok(n),
    }
}

fn check_block(block: usize) -> Result<usize> {
    if block == 0 {
        Err(Error::InvalidArgument {
            op: OP,
            msg: "block size must be positive".into(),
        })
    } else {
        Ok(block)
    }
}

/// The view itself if BLAS can address it, otherwise one standard-layout copy, so that
/// the many BLAS calls on its blocks do not each copy a block.
fn blas_ready<T: Real>(x: ArrayView2<'_, T>) -> CowArray<'_, T, Ix2> {
    if addressable(&x) {
        x.into()
    } else {
        x.as_standard_layout().into_owned().into()
    }
}

/// `A = LLᵀ` by LAPACK potrf on one copy of the lower triangle of `A`; the strict upper
/// triangle of `L` is zero.
///
/// Errors: [`Error::NotSquare`]; [`Error::NonFinite`] for a NaN or infinity in the lower
/// triangle (the first in row-major order), checked before LAPACK sees it;
/// [`Error::NotPositiveDefinite`] with the 0-based index of the first pivot that is not
/// positive. Any view works (transposed, step-sliced, negatively strided).
pub fn cholesky<T: Real>(a: ArrayView2<'_, T>) -> Result<Array2<T>> {
    let n = square("A", &a)?;
    let ni = to_i32(OP, n)?;
    let mut l = Array2::<T>::uninit((n, n));
    let mut bad: Option<(usize, usize)> = None;
    Zip::indexed(&mut l).and(&a).for_each(|(i, j), x, &v| {
        if j > i {
            x.write(T::zero());
        } else {
            if !v.is_finite() && bad.map_or(true, |first| (i, j) < first) {
                bad = Some((i, j));
            }
            x.write(v);
        }
    });
    if let Some((row, col)) = bad {
        return Err(Error::NonFinite {
            op: OP,
            name: "A",
            row,
            col,
        });
    }
    // SAFETY: the loop above wrote every element.
    let mut l = unsafe { l.assume_init() };
    if n == 0 {
        return Ok(l);
    }
    // The row-major buffer read column-major is Aᵀ, whose upper triangle is A's lower
    // one: potrf 'U' then leaves Uᵀ = L there, in row-major order, with no transposition.
    // SAFETY: `l` is a standard-layout n×n buffer, i.e. column-major with lda = n.
    let info = unsafe { T::potrf(b'U', ni, l.as_mut_ptr(), ni) };
    match info {
        0 => Ok(l),
        k if k > 0 => Err(Error::NotPositiveDefinite {
            op: OP,
            index: k as usize - 1,
        }),
        k => Err(Error::Lapack { op: OP, info: k }),
    }
}

/// `Ā` by the symbolic rule on the whole matrix: `P = Φ(LᵀL̄)` (one TRMM),
/// `S = L⁻ᵀ P L⁻¹` (two TRSMs), then the [`Convention`]. About `3n³` flops, since BLAS
/// does not exploit the triangular shape of `P`. The strict upper triangle of `L̄` is
/// ignored.
pub fn backward_symbolic<T: Real>(
    l: ArrayView2<'_, T>,
    lbar: ArrayView2<'_, T>,
    conv: Convention,
) -> Result<Array2<T>> {
    let mut g = Cholesky::new().method(Method::Symbolic).reverse(l, lbar)?;
    finish(g.view_mut(), conv);
    Ok(g)
}

/// `Ā` by the reverse of the blocked right-looking factorisation, overwriting `L̄` in
/// place. Murray 2016 reverses the left-looking order; the right-looking one puts nearly
/// all the work in one GEMM per block that only reads the finished trailing gradient.
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
/// No buffer of the order of `L̄` is allocated: the result is `lbar` itself (unless its
/// strides are not BLAS-addressable, when one standard-layout copy is made; the same
/// holds for `l`). The strict upper triangle of `L̄` is ignored.
pub fn backward_blocked<T: Real>(
    l: ArrayView2<'_, T>,
    mut lbar: Array2<T>,
    block: usize,
    conv: Convention,
) -> Result<Array2<T>> {
    let block = check_block(block)?;
    let n = check_factor(l.view())?;
    expect_shape(OP, "L̄", "L", Shape(n, n), shape_of(&lbar))?;
    if !addressable(&lbar.view()) {
        lbar = lbar.as_standard_layout().into_owned();
    }
    blocked_in_place(blas_ready(l).view(), lbar.view_mut(), block)?;
    finish(lbar.view_mut(), conv);
    Ok(lbar)
}

/// Overwrites `g`, which holds `L̄` in its lower triangle (the strict upper triangle is
/// ignored), with the full symmetric `S + Sᵀ`, from which both conventions follow by
/// one pass without transposition.
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
            naive::cholesky::backward_in_place(l, g.view_mut());
            let n = g.nrows();
            for_each_below(n, |i, j| g[(j, i)] = g[(i, j)]);
            g.diag_mut().mapv_inplace(|d| d + d);
            Ok(())
        }
    }
}

/// `g ← S + Sᵀ` with `S = L⁻ᵀ Φ(LᵀL̄) L⁻¹`. The strict upper triangle of `L̄` does not
/// matter: the lower triangle of `LᵀL̄` does not depend on it.
fn symbolic_in_place<T: Real>(l: ArrayView2<'_, T>, mut g: ArrayViewMut2<'_, T>) -> Result<()> {
    multiply(Side::Left, Trans::Yes, l, g.view_mut())?;
    phi(g.view_mut());
    solve(Side::Left, Trans::Yes, l, g.view_mut())?;
    solve(Side::Right, Trans::No, l, g.view_mut())?;
    let n = g.nrows();
    for_each_below(n, |i, j| {
        let v = g[(i, j)] + g[(j, i)];
        g[(i, j)] = v;
        g[(j, i)] = v;
    });
    g.diag_mut().mapv_inplace(|d| d + d);
    Ok(())
}

/// Order of the diagonal blocks inside a larger diagonal block: the symbolic rule costs
/// `3b³` in small, inefficient TRSMs, so large blocks are themselves reversed blocked.
const DIAG_BLOCK: usize = 32;

/// `g ← S + Sᵀ` as [`symbolic_in_place`], by the reverse of the blocked right-looking
/// factorisation (see [`backward_blocked`]).
fn blocked_in_place<T: Real>(
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
    let (one, minus) = (T::one(), -T::one());
    let (no, yes) = (Trans::No, Trans::Yes);
    for j in (0..n).step_by(block).rev() {
        let e = (j + block).min(n);
        let l_jj = l.slice(s![j..e, j..e]);
        let l_kj = l.slice(s![e.., j..e]);
        let (mut g_kj, g_kk, mut g_jj, mut g_jk) =
            g.multi_slice_mut((s![e.., j..e], s![e.., e..], s![j..e, j..e], s![j..e, e..]));
        // Forward: Â_KK −= L_KJ L_KJᵀ. g_KK holds (S + Sᵀ)_KK, full, from the blocks below.
        gemm(OP, minus, g_kk.view(), no, l_kj, no, one, g_kj.view_mut())?;
        // Forward: L_KJ = Â_KJ L_JJ⁻ᵀ. From here on g_KJ holds Ā_KJ = (S + Sᵀ)_KJ.
        solve(Side::Right, Trans::No, l_jj, g_kj.view_mut())?;
        // Only the lower triangle of this update matters, and the diagonal block's rule
        // ignores the upper one: one GEMM is cheaper than masking.
        gemm(OP, minus, g_kj.view(), yes, l_kj, no, one, g_jj.view_mut())?;
        // Forward: L_JJ = chol(Â_JJ).
        blocked_in_place(l_jj, g_jj.view_mut(), block.min(DIAG_BLOCK))?;
        g_jk.assign(&g_kj.t());
    }
    Ok(())
}

/// `X ← op(L)⁻¹X` (`Side::Left`) or `X ← X op(L)⁻¹` (`Side::Right`), `L` lower triangular.
fn solve<T: Real>(
    side: Side,
    t: Trans,
    l: ArrayView2<'_, T>,
    x: ArrayViewMut2<'_, T>,
) -> Result<()> {
    trsm(OP, side, Uplo::Lower, t, Diag::NonUnit, T::one(), l, x)
}

/// `X ← op(L)X` (`Side::Left`) or `X ← X op(L)` (`Side::Right`), `L` lower triangular.
fn multiply<T: Real>(
    side: Side,
    t: Trans,
    l: ArrayView2<'_, T>,
    x: ArrayViewMut2<'_, T>,
) -> Result<()> {
    trmm(OP, side, Uplo::Lower, t, Diag::NonUnit, T::one(), l, x)
}

/// `Φ(X)`: zero the strict upper triangle, halve the diagonal.
fn phi<T: Real>(mut x: ArrayViewMut2<'_, T>) {
    let half = T::of(0.5);
    for ((i, j), v) in x.indexed_iter_mut() {
        if j > i {
            *v = T::zero();
        } else if j == i {
            *v *= half;
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

/// Turns `S + Sᵀ` into the convention's `Ā`: half of it, or `Φ` of it.
fn finish<T: Real>(mut g: ArrayViewMut2<'_, T>, conv: Convention) {
    let half = T::of(0.5);
    match conv {
        Convention::Symmetric => g.mapv_inplace(|x| x * half),
        Convention::Lower => phi(g),
    }
}

/// `out += Ā` for `g = S + Sᵀ`.
fn accumulate<T: Real>(g: ArrayView2<'_, T>, out: ArrayViewMut2<'_, T>, conv: Convention) {
    let half = T::of(0.5);
    match conv {
        Convention::Symmetric => Zip::from(out).and(g).for_each(|o, &x| *o += x * half),
        Convention::Lower => Zip::indexed(out).and(g).for_each(|(i, j), o, &x| {
            if i > j {
                *o += x;
            } else if i == j {
                *o += x * half;
            }
        }),
    }
}

impl<T: Real> Primitive<T> for Cholesky {
    fn name(&self) -> String {
        let conv = match self.convention {
            Convention::Symmetric => "symmetric",
            Convention::Lower => "lower",
        };
        format!("{OP}({conv})")
    }
    fn arity(&self) -> usize {
        1
    }
    fn structure(&self, _input: usize) -> Structure {
        self.convention.structure()
    }
    fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>> {
        let a = one(OP, "inputs", inputs)?;
        cholesky(a.view())
    }
    fn backward(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
    ) -> Result<Vec<Array2<T>>> {
        let a = one(OP, "inputs", inputs)?;
        expect_shape(OP, "output L", "A", shape_of(a), shape_of(&output))?;
        let mut g = self.reverse(output, cbar)?;
        finish(g.view_mut(), self.convention);
        Ok(vec![g])
    }
    fn backward_into(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        cbar: ArrayView2<'_, T>,
        grads: &mut [Option<ArrayViewMut2<'_, T>>],
    ) -> Result<()> {
        let a = one(OP, "inputs", inputs)?;
        check_arity(OP, "gradient buffers", 1, grads.len())?;
        expect_shape(OP, "output L", "A", shape_of(a), shape_of(&output))?;
        if let Some(buf) = grads[0].as_mut() {
            expect_shape(OP, "Ā buffer", "A", shape_of(a), shape_of(buf))?;
            // The reverse pass needs a workspace for L̄ whatever the caller's buffer holds;
            // the final pass, which applies the convention, adds into the buffer.
            let g = self.reverse(output, cbar)?;
            accumulate(g.view(), buf.view_mut(), self.convention);
        }
        Ok(())
    }
    fn jvp(
        &self,
        inputs: &[ArrayView2<'_, T>],
        output: ArrayView2<'_, T>,
        tangents: &[ArrayView2<'_, T>],
    ) -> Result<Array2<T>> {
        let a = one(OP, "inputs", inputs)?;
        let adot = one(OP, "tangents", tangents)?;
        let n = square("A", a)?;
        expect_shape(OP, "output L", "A", Shape(n, n), shape_of(&output))?;
        expect_shape(OP, "Ȧ", "A", Shape(n, n), shape_of(adot))?;
        let l = blas_ready(output);
        let mut x = match self.convention {
            Convention::Symmetric => {
                let half = T::of(0.5);
                Array2::from_shape_fn((n, n), |(i, j)| (adot[(i, j)] + adot[(j, i)]) * half)
            }
            Convention::Lower => Array2::from_shape_fn((n, n), |(i, j)| adot[(i.max(j), i.min(j))]),
        };
        let l = l.view();
        solve(Side::Left, Trans::No, l, x.view_mut())?;
        solve(Side::Right, Trans::Yes, l, x.view_mut())?;
        phi(x.view_mut());
        // L times a lower-triangular matrix: the strict upper triangle stays zero.
        multiply(Side::Left, Trans::No, l, x.view_mut())?;
        Ok(x)
    }
}

impl<T: Real> Unary<T> for Cholesky {}
