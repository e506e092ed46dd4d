//! # matgrad
//!
//! Reverse-mode (`C̄ → Ā, B̄`) and forward-mode (`Ȧ, Ḃ → Ċ`) rules for matrix
//! primitives, each computed with level-3 BLAS and LAPACK, and one shared checker
//! that proves any rule, the crate's own or yours.
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let a = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];      // 2×3
//! let b = array![[1.0, -1.0], [0.5, 2.0], [3.0, 0.0]];   // 3×2
//! let c = MatMul::nn().apply([a.view(), b.view()])?;      // C = AB
//! let cbar = array![[1.0, 0.0], [0.0, 1.0]];
//! let [abar, bbar] = c.backward(cbar.view())?;            // Ā = C̄Bᵀ, B̄ = AᵀC̄
//! assert_eq!(abar.dim(), (2, 3));
//! assert_eq!(bbar.dim(), (3, 2));
//!
//! // Every rule passes the same checker.
//! let report = Checker::new().check(&MatMul::nn(), &[a.view(), b.view()])?;
//! assert!(report.passed(), "{report}");
//! # Ok::<(), matgrad::Error>(())
//! ```
//!
//! A primitive implements [`Rule`]: a shape rule, a forward pass into the caller's
//! buffers, one reverse rule that skips, first-writes or adds each input's gradient
//! ([`Grad`]), one forward-mode rule, what its reverse rule reads ([`Saves`]) and the
//! scratch it needs. Every caller goes through [`Primitive`], which validates shapes once
//! against the shape rule. `docs/adding-a-primitive.md` walks through writing one in your
//! own crate; `docs/math.md` has the rules and their sources.
//!
//! The checker ([`check`]) and the scalar-loop references ([`naive`]) sit behind the
//! default-on feature `check`; without it the crate does not depend on `rand`.

#![warn(missing_docs)]

// Links the BLAS and LAPACK the CBLAS features name.
#[cfg(feature = "cblas")]
extern crate blas_src;

pub mod blas;
#[cfg(feature = "check")]
pub mod check;
pub mod error;
#[cfg(feature = "check")]
pub mod naive;
pub mod nn;
pub mod ops;
pub mod primitive;
pub mod runtime;
mod scalar;
pub mod tape;

pub use blas::{Accum, Trans};
pub use error::{Error, Shape};
pub use ops::{Applied, Apply, Arg};
pub use primitive::{Grad, Partials, Pass, Primitive, Rule, Saves, Shapes, Structure};
pub use runtime::{runtime, set_threads, Runtime};
pub use scalar::Real;

/// `Result` with matgrad's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything a user of the rules needs in scope. It brings no `Result`, `Vec` or
/// `Order` that would shadow std's or ndarray's.
pub mod prelude {
    pub use crate::blas::{Accum, Side, Trans, Uplo};
    #[cfg(feature = "check")]
    pub use crate::check::{Checker, Report};
    pub use crate::error::{Error, Shape};
    pub use crate::nn::{Adam, Dense, Optimizer, Sgd};
    pub use crate::ops::add::{Add, AddBias};
    pub use crate::ops::cho_solve::ChoSolve;
    pub use crate::ops::cholesky::{Cholesky, Convention, Method};
    pub use crate::ops::eigh::SymEig;
    pub use crate::ops::elementwise::{
        Cos, Deriv, ElemFn, Exp, Hadamard, Log, Map, Relu, Sigmoid, Sin, Softplus, Square, Tanh,
    };
    pub use crate::ops::expm::Expm;
    pub use crate::ops::logdet::CholLogDet;
    pub use crate::ops::loss::{MeanSquaredError, SoftmaxCrossEntropy};
    pub use crate::ops::lu::{Det, Inverse, LuSolve, SlogDet};
    pub use crate::ops::mask::{Mask, Tril, Triu};
    pub use crate::ops::matmul::MatMul;
    pub use crate::ops::norms::{FrobeniusNorm, NuclearNorm, SpectralNorm};
    pub use crate::ops::poly::MatPoly;
    pub use crate::ops::reduce::{LogSoftmax, LogSumExp, Mean, Sum};
    pub use crate::ops::reshape::{Reshape, Unvec, Vectorize};
    pub use crate::ops::svd::Svd;
    pub use crate::ops::trace::Trace;
    pub use crate::ops::transpose::Transpose;
    pub use crate::ops::triangular::TriSolve;
    pub use crate::ops::{Applied, Apply, Arg};
    pub use crate::primitive::{Grad, Partials, Pass, Primitive, Rule, Saves, Shapes, Structure};
    pub use crate::tape::{Gradients, Recorded, Tape, Var};
    pub use crate::Real;
    pub use smallvec::smallvec;
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The guide for adding a primitive, whose code blocks are compiled and run as doctests.
#[cfg(all(doctest, feature = "check"))]
#[doc = include_str!("../docs/adding-a-primitive.md")]
struct AddingAPrimitiveDoctests;
