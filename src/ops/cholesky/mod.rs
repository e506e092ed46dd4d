//! Cholesky factorisation `A = LLᵀ` of a symmetric positive definite matrix, with its
//! forward- and reverse-mode rules (Murray 2016). The factorisation and the forward
//! mode are here, the reverse pass in `reverse.rs`.
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let a = array![[4.0, 0.0], [2.0, 10.0]];   // only the lower triangle is read
//! let chol = Cholesky::new().apply([a.view()])?;
//! assert_eq!(chol.value(), &array![[2.0, 0.0], [1.0, 3.0]]);
//!
//! let lbar = array![[1.0, 0.0], [0.5, -1.0]];
//! let [abar] = chol.backward(lbar.view())?;               // symmetric: Ā = Āᵀ
//! assert_eq!(abar[(0, 1)], abar[(1, 0)]);
//!
//! let lower = Cholesky::new().convention(Convention::Lower);
//! let [abar_lower] = lower.apply([a.view()])?.backward(lbar.view())?;
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
//! primitive declares its input's [`Structure`] and the checker perturbs only along it
//! (`docs/math.md`, two gradient conventions).
//!
//! # Rules
//!
//! With `Φ(X)` the lower triangle of `X` with its diagonal halved:
//! - forward mode, `L̇ = L Φ(L⁻¹ Ȧ L⁻ᵀ)` for symmetric `Ȧ`;
//! - reverse mode, `P = Φ(LᵀL̄)`, `S = L⁻ᵀ P L⁻¹`, then `Ā = (S + Sᵀ)/2` (symmetric) or
//!   `Ā = Φ(S + Sᵀ)` (lower: diagonal `Sᵢᵢ`, below it `Sᵢⱼ + Sⱼᵢ`, above it zero).
//!
//! The reverse pass comes in four algorithms ([`Method`]): the two triangular solves
//! above ([`backward_symbolic`]), the reverse of the recursive factorisation, which halves
//! `L` and puts most of its `(2/3)n³` flops in a few large GEMMs (the default for all but
//! tiny `n`), the reverse of the blocked factorisation with level-3 BLAS on off-diagonal
//! blocks ([`backward_blocked`]), and the scalar loop run backwards entry by entry
//! (`docs/math.md`, Cholesky).

mod reverse;

pub use reverse::{backward_blocked, backward_blocked_in_place, backward_symbolic};

use super::square;
use super::triangular::nonsingular;
use crate::blas::{addressable, potrf_lower, trmm, trsm, Side, Tri, Uplo};
use crate::error::{shape_of, Error, Result, Shape};
use crate::primitive::{Grad, Partials, Pass, Rule, Saves, Shapes, Structure};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, CowArray, Ix2, Zip};
use reverse::Algorithm;
use smallvec::smallvec;

const OP: &str = "Cholesky";

/// Below this order [`Method::Auto`] runs the scalar loop, which beats the BLAS calls
/// there (the crossover in `benches/cholesky.rs`, group `cholesky_small`).
const AUTO_UNBLOCKED_BELOW: usize = 40;

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
    /// The fastest for the size: the scalar loop below `n = 40`, recursive from there on.
    #[default]
    Auto,
    /// Reverse of the recursive factorisation, halving `L` down to order 32: half of the
    /// `(2/3)n³` flops in one GEMM of order `n/2`, the rest in a triangular solve and a
    /// lower-triangle product of that order, each itself made of large GEMMs (see
    /// `docs/math.md`). In place on `Ā`'s buffer, like the others.
    Recursive,
    /// Reverse of the blocked factorisation, in place on `L̄` ([`backward_blocked`]).
    Blocked {
        /// Order of the diagonal blocks.
        block: usize,
    },
    /// `S = L⁻ᵀ Φ(LᵀL̄) L⁻¹` by one TRMM and two TRSMs on the whole matrix ([`backward_symbolic`]).
    Symbolic,
    /// The scalar loop of the factorisation run backwards, entry by entry.
    Unblocked,
}

impl Method {
    /// Block order of [`Method::blocked`], for `f32` and `f64` alike.
    pub const DEFAULT_BLOCK: usize = 64;

    /// [`Method::Blocked`] with [`Method::DEFAULT_BLOCK`].
    pub const fn blocked() -> Self {
        Method::Blocked {
            block: Self::DEFAULT_BLOCK,
        }
    }

    /// The algorithm for order `n`, with `Auto` decided and the block size checked.
    fn algorithm(self, n: usize) -> Result<Algorithm> {
        Ok(match self {
            Method::Auto if n < AUTO_UNBLOCKED_BELOW => Algorithm::Unblocked,
            Method::Auto | Method::Recursive => Algorithm::Recursive,
            Method::Blocked { block } => Algorithm::Blocked(positive_block(block)?),
            Method::Symbolic => Algorithm::Symbolic,
            Method::Unblocked => Algorithm::Unblocked,
        })
    }
}

/// `L = chol(A)`, the lower-triangular factor with positive diagonal and `A = LLᵀ`,
/// reading only the lower triangle of `A` (Murray 2016; `docs/math.md`, Cholesky).
///
/// - Forward: `L` by LAPACK potrf, after a scan of the lower triangle for NaN and
///   infinity.
/// - JVP: `L̇ = L Φ(L⁻¹ Ȧ L⁻ᵀ)`, `Ȧ` taken symmetric: `(Ȧ + Ȧᵀ)/2` under
///   [`Convention::Symmetric`], the symmetric matrix with `Ȧ`'s lower triangle under
///   [`Convention::Lower`]. Written in place in `L̇`: two TRSMs and one TRMM.
/// - VJP: `S = L⁻ᵀ Φ(LᵀL̄) L⁻¹`, `Ā = (S + Sᵀ)/2` or `Ā = Φ(S + Sᵀ)` per [`Convention`],
///   computed by the chosen [`Method`] in `Ā`'s buffer when it is a first write, in an
///   `n×n` workspace otherwise.
///
/// The reverse rule reads the output `L` only. Its workspace is `n²` elements.
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
}

/// Order of `L`, after checking that it is square with a nonzero diagonal (the reverse
/// pass divides by it).
fn factor_order<T: Real>(l: &ArrayView2<'_, T>) -> Result<usize> {
    let n = square(OP, "L", shape_of(l))?;
    nonsingular(OP, l)?;
    Ok(n)
}

/// Errors unless `got` is `n×n`, naming it as the cotangent `L̄`.
fn cotangent_shape(n: usize, got: Shape) -> Result<()> {
    if got == Shape(n, n) {
        Ok(())
    } else {
        Err(Error::WrongShape {
            op: OP,
            name: "L̄",
            of: "L",
            expected: Shape(n, n),
            got,
        })
    }
}

fn positive_block(block: usize) -> Result<usize> {
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

/// `Φ(X)` of a square `X`: zero the strict upper triangle, halve the diagonal.
fn phi<T: Real>(mut x: ArrayViewMut2<'_, T>) {
    Uplo::Lower.zero_outside(x.view_mut());
    x.diag_mut().mapv_inplace(|d| d * T::of(0.5));
}

/// `L ← chol(A)` into `l` (not read): the lower triangle of `A` is copied in and the
/// strict upper triangle zeroed, then LAPACK potrf factors in place.
///
/// Errors: [`Error::NonFinite`] for a NaN or infinity in the lower triangle (the first
/// in row-major order), checked before LAPACK sees it; [`Error::NotPositiveDefinite`]
/// with the 0-based index of the first pivot that is not positive.
fn factor_into<T: Real>(a: ArrayView2<'_, T>, mut l: ArrayViewMut2<'_, T>) -> Result<()> {
    let mut bad: Option<(usize, usize)> = None;
    Zip::indexed(l.view_mut())
        .and(&a)
        .for_each(|(i, j), x, &v| {
            if j > i {
                *x = T::zero();
            } else {
                if !v.is_finite() && bad.map_or(true, |first| (i, j) < first) {
                    bad = Some((i, j));
                }
                *x = v;
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
    potrf_lower(OP, l)
}

/// `A = LLᵀ` by LAPACK potrf on one copy of the lower triangle of `A`; the strict upper
/// triangle of `L` is zero.
///
/// Errors: [`Error::NotSquare`]; [`Error::NonFinite`] for a NaN or infinity in the lower
/// triangle (the first in row-major order), checked before LAPACK sees it;
/// [`Error::NotPositiveDefinite`] with the 0-based index of the first pivot that is not
/// positive. Any view works (transposed, step-sliced, negatively strided).
pub fn cholesky<T: Real>(a: ArrayView2<'_, T>) -> Result<Array2<T>> {
    let n = square(OP, "A", shape_of(&a))?;
    let mut l = Array2::zeros((n, n));
    factor_into(a, l.view_mut())?;
    Ok(l)
}

impl<T: Real> Rule<T> for Cholesky {
    fn name(&self) -> &'static str {
        match self.convention {
            Convention::Symmetric => "Cholesky(symmetric)",
            Convention::Lower => "Cholesky(lower)",
        }
    }
    fn arity(&self) -> usize {
        1
    }
    fn structure(&self, _i: usize) -> Structure {
        self.convention.structure()
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        let n = square(OP, "A", x[0])?;
        Ok(smallvec![Shape(n, n)])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE.output(0)
    }
    fn workspace(&self, x: &[Shape]) -> usize {
        x[0].0 * x[0].0
    }
    /// Only the reverse pass uses the workspace, and not when it runs in place in a
    /// first-write buffer BLAS can address.
    fn pass_workspace(&self, x: &[Shape], pass: Pass<'_, '_, T>) -> usize {
        match pass {
            Pass::Pullback([Grad::Skip]) => 0,
            Pass::Pullback([Grad::Write(g)]) if addressable(&g.view()) => 0,
            Pass::Pullback(_) => Rule::<T>::workspace(self, x),
            Pass::Eval | Pass::Pushforward => 0,
        }
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        factor_into(x[0].view(), y[0].view_mut())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        ws: &mut [T],
    ) -> Result<()> {
        let l = y[0].view();
        let n = factor_order(&l)?;
        let algorithm = self.method.algorithm(n)?;
        reverse::pullback(
            l,
            ybar.view(0),
            &mut grads[0],
            ws,
            algorithm,
            self.convention,
        )
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        factor_order(&y[0])?;
        let adot = xdot.view(0);
        let mut x = ydot[0].view_mut();
        // Ȧ made symmetric as the convention reads it, straight into L̇.
        match self.convention {
            Convention::Symmetric => {
                let half = T::of(0.5);
                Zip::indexed(x.view_mut())
                    .for_each(|(i, j), v| *v = (adot[(i, j)] + adot[(j, i)]) * half);
            }
            Convention::Lower => {
                Zip::indexed(x.view_mut()).for_each(|(i, j), v| *v = adot[(i.max(j), i.min(j))]);
            }
        }
        let l = blas_ready(y[0].view());
        let l = Tri::lower(l.view());
        trsm(x.view_mut(), Side::Left, l, T::one())?;
        trsm(x.view_mut(), Side::Right, l.t(), T::one())?;
        phi(x.view_mut());
        // L times a lower-triangular matrix: the strict upper triangle stays zero.
        trmm(x, Side::Left, l, T::one())
    }
}

#[cfg(test)]
mod tests;
