//! Masks, `C = r(A)`: keep some entries of `A` and zero the rest. The lower and upper
//! triangles with a diagonal offset (as numpy's `tril`/`triu`), or a fixed mask.
//!
//! A mask is its own adjoint, so `Ā = r(C̄)` and `Ċ = r(Ȧ)` (Giles 2008).
//! Any shape works, square or not.

use super::{one, Unary};
use crate::error::{expect_shape, shape_of, Error, Result, Shape};
use crate::primitive::{check_arity, Primitive};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};

/// The lower triangle from diagonal `k` down: `C[i][j] = A[i][j]` where `j − i ≤ k`,
/// zero elsewhere. `k = 0` keeps the main diagonal, `k = −1` drops it, `k = 1` keeps
/// one superdiagonal too (numpy's `tril(A, k)`).
///
/// Forward `Ċ = tril_k(Ȧ)`; reverse `Ā = tril_k(C̄)` (Giles 2008).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Tril {
    /// Diagonal offset: positive above the main diagonal, negative below.
    pub k: isize,
}

/// The upper triangle from diagonal `k` up: `C[i][j] = A[i][j]` where `j − i ≥ k`,
/// zero elsewhere (numpy's `triu(A, k)`).
///
/// Forward `Ċ = triu_k(Ȧ)`; reverse `Ā = triu_k(C̄)` (Giles 2008).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Triu {
    /// Diagonal offset: positive above the main diagonal, negative below.
    pub k: isize,
}

/// A fixed mask `M` of `A`'s shape: `C = M ⊙ A` with `M` boolean.
///
/// Forward `Ċ = M ⊙ Ȧ`; reverse `Ā = M ⊙ C̄` (Giles 2008). An input whose
/// shape differs from the mask's is an error.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct Mask {
    keep: Array2<bool>,
}

fn offset(i: usize, j: usize) -> isize {
    // Array dimensions never exceed isize::MAX, so neither index wraps.
    j as isize - i as isize
}

impl Tril {
    /// `tril_k`.
    pub fn new(k: isize) -> Self {
        Tril { k }
    }
    /// Whether entry `(i, j)` is kept.
    pub fn keeps(&self, i: usize, j: usize) -> bool {
        offset(i, j) <= self.k
    }
    fn check(&self, _a: Shape) -> Result<()> {
        Ok(())
    }
}

impl Triu {
    /// `triu_k`.
    pub fn new(k: isize) -> Self {
        Triu { k }
    }
    /// Whether entry `(i, j)` is kept.
    pub fn keeps(&self, i: usize, j: usize) -> bool {
        offset(i, j) >= self.k
    }
    fn check(&self, _a: Shape) -> Result<()> {
        Ok(())
    }
}

impl Mask {
    /// A mask that keeps the entries where `keep` is `true`.
    pub fn new(keep: Array2<bool>) -> Self {
        Mask { keep }
    }
    /// A mask that keeps the nonzero entries of `m` (a 0/1 matrix, say).
    pub fn nonzero<T: Real>(m: ArrayView2<'_, T>) -> Self {
        Mask {
            keep: m.mapv(|x| x != T::zero()),
        }
    }
    /// The mask itself.
    pub fn mask(&self) -> ArrayView2<'_, bool> {
        self.keep.view()
    }
    /// Whether entry `(i, j)` is kept; entries outside the mask are not.
    pub fn keeps(&self, i: usize, j: usize) -> bool {
        self.keep.get((i, j)).copied().unwrap_or(false)
    }
    fn check(&self, a: Shape) -> Result<()> {
        let m = shape_of(&self.keep);
        if m == a {
            Ok(())
        } else {
            Err(Error::ShapeMismatch {
                op: "Mask",
                what: "the mask and the input have different shapes",
                lhs_name: "A",
                lhs: a,
                rhs_name: "mask",
                rhs: m,
            })
        }
    }
}

impl From<Array2<bool>> for Mask {
    fn from(keep: Array2<bool>) -> Self {
        Mask::new(keep)
    }
}

/// `r(x)`, a new array.
fn masked<T: Real>(x: &ArrayView2<'_, T>, keeps: impl Fn(usize, usize) -> bool) -> Array2<T> {
    Zip::indexed(x).map_collect(|(i, j), &v| if keeps(i, j) { v } else { T::zero() })
}

macro_rules! impl_mask {
    ($ty:ty, $op:literal, $name:expr) => {
        impl<T: Real> Primitive<T> for $ty {
            fn name(&self) -> String {
                #[allow(clippy::redundant_closure_call)]
                ($name)(self)
            }
            fn arity(&self) -> usize {
                1
            }
            fn forward(&self, inputs: &[ArrayView2<'_, T>]) -> Result<Array2<T>> {
                let a = one($op, "inputs", inputs)?;
                self.check(shape_of(a))?;
                Ok(masked(a, |i, j| self.keeps(i, j)))
            }
            fn backward(
                &self,
                inputs: &[ArrayView2<'_, T>],
                _output: ArrayView2<'_, T>,
                cbar: ArrayView2<'_, T>,
            ) -> Result<Vec<Array2<T>>> {
                let a = one($op, "inputs", inputs)?;
                self.check(shape_of(a))?;
                expect_shape($op, "C̄", "C", shape_of(a), shape_of(&cbar))?;
                Ok(vec![masked(&cbar, |i, j| self.keeps(i, j))])
            }
            fn backward_into(
                &self,
                inputs: &[ArrayView2<'_, T>],
                _output: ArrayView2<'_, T>,
                cbar: ArrayView2<'_, T>,
                grads: &mut [Option<ArrayViewMut2<'_, T>>],
            ) -> Result<()> {
                let a = one($op, "inputs", inputs)?;
                check_arity($op, "gradient buffers", 1, grads.len())?;
                self.check(shape_of(a))?;
                expect_shape($op, "C̄", "C", shape_of(a), shape_of(&cbar))?;
                if let Some(g) = grads[0].as_mut() {
                    expect_shape($op, "Ā buffer", "A", shape_of(a), shape_of(g))?;
                    Zip::indexed(g).and(&cbar).for_each(|(i, j), g, &c| {
                        if self.keeps(i, j) {
                            *g += c;
                        }
                    });
                }
                Ok(())
            }
            fn jvp(
                &self,
                inputs: &[ArrayView2<'_, T>],
                _output: ArrayView2<'_, T>,
                tangents: &[ArrayView2<'_, T>],
            ) -> Result<Array2<T>> {
                let a = one($op, "inputs", inputs)?;
                let ad = one($op, "tangents", tangents)?;
                self.check(shape_of(a))?;
                expect_shape($op, "Ȧ", "A", shape_of(a), shape_of(ad))?;
                Ok(masked(ad, |i, j| self.keeps(i, j)))
            }
        }

        impl<T: Real> Unary<T> for $ty {}
    };
}

impl_mask!(Tril, "Tril", |m: &Tril| format!("Tril(k={})", m.k));
impl_mask!(Triu, "Triu", |m: &Triu| format!("Triu(k={})", m.k));
impl_mask!(Mask, "Mask", |_: &Mask| "Mask".to_string());
