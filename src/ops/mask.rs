//! Masks, `C = r(A)`: keep some entries of `A` and zero the rest. The lower and upper
//! triangles with a diagonal offset (as numpy's `tril`/`triu`), or a fixed mask.
//!
//! A mask is its own adjoint, so `Ā = r(C̄)` and `Ċ = r(Ȧ)` (Giles 2008;
//! `docs/math.md`). Any shape works, square or not.
//!
//! Masks, rearrangements ([`super::reshape`]) and [`super::transpose`] are linear maps
//! that only keep, drop or move entries; they share one rule, written once here for a
//! map and its adjoint (the crate-private `Linear`), which reads nothing in reverse.

use crate::blas::Accum;
use crate::error::{shape_of, Error, Result, Shape};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Zip};

/// A linear map of one input, `C = r(A)`, that keeps, drops or moves entries: its
/// rules are `Ċ = r(Ȧ)` and `Ā = r*(C̄)` with `r*` the adjoint (`r` itself for a mask,
/// `r⁻¹` for a rearrangement), and they read neither `A` nor `C`.
/// [`linear_rule!`] turns it into a [`crate::Rule`].
pub(crate) trait Linear {
    /// Name used in reports and errors.
    const NAME: &'static str;
    /// Shape of `r(A)` for `A` of shape `a`, or the error naming why `a` does not fit.
    fn out_shape(&self, a: Shape) -> Result<Shape>;
    /// `dst ← r(src)` (`dst`'s contents not read) or `dst += r(src)`.
    fn map_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()>;
    /// `dst ← r*(src)` (`dst`'s contents not read) or `dst += r*(src)`.
    fn adjoint_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()>;
}

/// `impl Rule<T>` for types implementing [`Linear`]: `Saves::NONE`, no workspace.
macro_rules! linear_rule {
    ($($ty:ty),+ $(,)?) => {$(
        impl<T: $crate::Real> $crate::primitive::Rule<T> for $ty {
            fn name(&self) -> &'static str {
                <$ty as $crate::ops::mask::Linear>::NAME
            }
            fn arity(&self) -> usize {
                1
            }
            fn shapes(&self, x: &[$crate::Shape]) -> $crate::Result<$crate::Shapes> {
                let c = $crate::ops::mask::Linear::out_shape(self, x[0])?;
                Ok(smallvec::smallvec![c])
            }
            fn saves(&self, _wanted: &[bool]) -> $crate::Saves {
                $crate::Saves::NONE
            }
            fn eval(
                &self,
                x: &[ndarray::ArrayView2<'_, T>],
                y: &mut [ndarray::ArrayViewMut2<'_, T>],
                _: &mut [T],
            ) -> $crate::Result<()> {
                let y = y[0].view_mut();
                $crate::ops::mask::Linear::map_into(self, x[0].view(), y, $crate::Accum::Replace)
            }
            fn pullback(
                &self,
                _x: &[ndarray::ArrayView2<'_, T>],
                _y: &[ndarray::ArrayView2<'_, T>],
                ybar: &$crate::Partials<'_, '_, T>,
                grads: &mut [$crate::Grad<'_, T>],
                _: &mut [T],
            ) -> $crate::Result<()> {
                match grads[0].target() {
                    Some((g, acc)) => {
                        $crate::ops::mask::Linear::adjoint_into(self, ybar.view(0), g, acc)
                    }
                    None => Ok(()),
                }
            }
            fn pushforward(
                &self,
                _x: &[ndarray::ArrayView2<'_, T>],
                _y: &[ndarray::ArrayView2<'_, T>],
                xdot: &$crate::Partials<'_, '_, T>,
                ydot: &mut [ndarray::ArrayViewMut2<'_, T>],
                _: &mut [T],
            ) -> $crate::Result<()> {
                let y = ydot[0].view_mut();
                $crate::ops::mask::Linear::map_into(self, xdot.view(0), y, $crate::Accum::Replace)
            }
        }
    )+};
}
pub(crate) use linear_rule;

/// The lower triangle from diagonal `k` down: `C[i][j] = A[i][j]` where `j − i ≤ k`,
/// zero elsewhere. `k = 0` keeps the main diagonal, `k = −1` drops it, `k = 1` keeps
/// one superdiagonal too (numpy's `tril(A, k)`).
///
/// Forward `Ċ = tril_k(Ȧ)`; reverse `Ā = tril_k(C̄)` (Giles 2008; `docs/math.md`).
/// The reverse rule reads nothing but `C̄`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Tril {
    /// Diagonal offset: positive above the main diagonal, negative below.
    pub k: isize,
}

/// The upper triangle from diagonal `k` up: `C[i][j] = A[i][j]` where `j − i ≥ k`,
/// zero elsewhere (numpy's `triu(A, k)`).
///
/// Forward `Ċ = triu_k(Ȧ)`; reverse `Ā = triu_k(C̄)` (Giles 2008; `docs/math.md`).
/// The reverse rule reads nothing but `C̄`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Triu {
    /// Diagonal offset: positive above the main diagonal, negative below.
    pub k: isize,
}

/// A fixed mask `M` of `A`'s shape: `C = M ⊙ A` with `M` boolean.
///
/// Forward `Ċ = M ⊙ Ȧ`; reverse `Ā = M ⊙ C̄` (Giles 2008; `docs/math.md`). An input
/// whose shape differs from the mask's is an error. The reverse rule reads nothing but
/// `C̄`. Apply it by reference, `(&mask).apply([a])`, to keep it without a copy.
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
}

impl From<Array2<bool>> for Mask {
    fn from(keep: Array2<bool>) -> Self {
        Mask::new(keep)
    }
}

/// `dst ← r(src)` or `dst += r(src)` for the mask `keeps`, entry by entry.
fn masked<T: Real>(
    src: ArrayView2<'_, T>,
    dst: ArrayViewMut2<'_, T>,
    acc: Accum,
    keeps: impl Fn(usize, usize) -> bool,
) {
    Zip::indexed(dst).and(&src).for_each(|(i, j), d, &s| {
        acc.store(d, if keeps(i, j) { s } else { T::zero() });
    });
}

impl Linear for Tril {
    const NAME: &'static str = "Tril";
    fn out_shape(&self, a: Shape) -> Result<Shape> {
        Ok(a)
    }
    fn map_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()> {
        masked(src, dst, acc, |i, j| self.keeps(i, j));
        Ok(())
    }
    fn adjoint_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()> {
        self.map_into(src, dst, acc)
    }
}

impl Linear for Triu {
    const NAME: &'static str = "Triu";
    fn out_shape(&self, a: Shape) -> Result<Shape> {
        Ok(a)
    }
    fn map_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()> {
        masked(src, dst, acc, |i, j| self.keeps(i, j));
        Ok(())
    }
    fn adjoint_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()> {
        self.map_into(src, dst, acc)
    }
}

impl Linear for Mask {
    const NAME: &'static str = "Mask";
    fn out_shape(&self, a: Shape) -> Result<Shape> {
        let m = shape_of(&self.keep);
        if m == a {
            Ok(a)
        } else {
            Err(Error::ShapeMismatch {
                op: Self::NAME,
                what: "the mask and the input have different shapes",
                lhs_name: "A",
                lhs: a,
                rhs_name: "mask",
                rhs: m,
            })
        }
    }
    fn map_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()> {
        // Same shapes (checked by `out_shape`): zip the mask itself, no bounds checks.
        Zip::from(dst)
            .and(&src)
            .and(&self.keep)
            .for_each(|d, &s, &k| acc.store(d, if k { s } else { T::zero() }));
        Ok(())
    }
    fn adjoint_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()> {
        self.map_into(src, dst, acc)
    }
}

linear_rule!(Tril, Triu, Mask);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitive::{Grad, Primitive, Rule, Saves};
    use ndarray::array;

    #[test]
    fn masks_keep_their_entries_in_every_pass() {
        let a = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let nan = a.mapv(|_| f64::NAN);
        let tril = Tril::new(0).forward(&[a.view()]).unwrap().remove(0);
        assert_eq!(tril, array![[1.0, 0.0, 0.0], [4.0, 5.0, 0.0]]);
        let triu = Triu::new(1)
            .jvp(&[nan.view()], &[nan.view()], &[Some(a.view())])
            .unwrap();
        assert_eq!(triu[0], array![[0.0, 2.0, 3.0], [0.0, 0.0, 6.0]]);

        let m = Mask::new(array![[true, false, true], [false, true, false]]);
        assert_eq!(Rule::<f64>::saves(&m, &[true]), Saves::NONE);
        let mut abar = a.clone();
        m.backward_into(
            &[nan.view()],
            &[nan.view()],
            &[Some(a.view())],
            &mut [Grad::Add(abar.view_mut())],
            None,
        )
        .unwrap();
        assert_eq!(abar, array![[2.0, 2.0, 6.0], [4.0, 10.0, 6.0]]);
        let mut abar = nan.clone();
        m.backward_into(
            &[nan.view()],
            &[nan.view()],
            &[Some(a.view())],
            &mut [Grad::Write(abar.view_mut())],
            None,
        )
        .unwrap();
        assert_eq!(abar, array![[1.0, 0.0, 3.0], [0.0, 5.0, 0.0]]);
    }

    #[test]
    fn a_mask_of_another_shape_is_an_error() {
        let m = Mask::new(Array2::from_elem((2, 2), true));
        let err = Rule::<f64>::shapes(&m, &[Shape(2, 3)]).unwrap_err();
        assert!(
            matches!(err, Error::ShapeMismatch { op: "Mask", .. }),
            "{err}"
        );
    }
}
