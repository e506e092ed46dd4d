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
//! let c = MatMul::nn().apply(a.view(), b.view())?;        // C = AB
//! let cbar = array![[1.0, 0.0], [0.0, 1.0]];
//! let (abar, bbar) = c.backward(cbar.view())?;            // Ā = C̄Bᵀ, B̄ = AᵀC̄
//! assert_eq!(abar.dim(), (2, 3));
//! assert_eq!(bbar.dim(), (3, 2));
//!
//! // Every rule passes the same checker.
//! let report = Checker::new().check(&MatMul::nn(), &[a.view(), b.view()])?;
//! assert!(report.passed(), "{report}");
//! # Ok::<(), matgrad::Error>(())
//! ```

#![warn(missing_docs)]

extern crate blas_src;

pub mod blas;
pub mod check;
pub mod error;
pub mod naive;
pub mod ops;
pub mod primitive;
mod scalar;

pub use blas::{Accum, Trans};
pub use error::{Error, Result, Shape};
pub use primitive::{Primitive, Structure};
pub use scalar::Real;

/// Everything a user of the rules needs in scope.
pub mod prelude {
    pub use crate::blas::{Accum, Side, Trans, Uplo};
    pub use crate::check::{Checker, Report};
    pub use crate::error::{Error, Result};
    pub use crate::ops::add::{Add, AddBias};
    pub use crate::ops::cho_solve::ChoSolve;
    pub use crate::ops::cholesky::{Cholesky, Convention, Method};
    pub use crate::ops::elementwise::{
        Cos, ElemFn, Exp, Hadamard, Log, Map, Relu, Sigmoid, Sin, Square, Tanh,
    };
    pub use crate::ops::logdet::CholLogDet;
    pub use crate::ops::mask::{Mask, Tril, Triu};
    pub use crate::ops::matmul::MatMul;
    pub use crate::ops::reshape::{Order, Reshape, Unvec, Vec as VecOp};
    pub use crate::ops::transpose::Transpose;
    pub use crate::ops::triangular::TriSolve;
    pub use crate::ops::{Binary, Unary};
    pub use crate::primitive::{Primitive, Structure};
    pub use crate::Real;
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
