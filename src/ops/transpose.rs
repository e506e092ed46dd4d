//! Transpose, `C = Aᵀ`, materialised into the output buffer.
//!
//! Inside products a transpose is a view and a BLAS flag and never needs this
//! primitive; it is for graphs where `Aᵀ` is a node of its own.

use super::mask::{linear_rule, Linear};
use crate::blas::{copy, Accum};
use crate::error::{Result, Shape};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2};

/// `C = Aᵀ`, copied into the output (standard layout from [`crate::Primitive::forward`])
/// by cache-aligned tiles ([`crate::blas::copy`]), so that neither pass slows down at
/// power-of-two strides.
///
/// Forward `Ċ = Ȧᵀ`; reverse `Ā = C̄ᵀ` (Giles 2008; `docs/math.md`: a
/// rearrangement's adjoint is its inverse). The reverse rule reads nothing but `C̄`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Transpose;

impl Linear for Transpose {
    const NAME: &'static str = "Transpose";
    fn out_shape(&self, a: Shape) -> Result<Shape> {
        Ok(Shape(a.1, a.0))
    }
    fn map_into<T: Real>(
        &self,
        src: ArrayView2<'_, T>,
        dst: ArrayViewMut2<'_, T>,
        acc: Accum,
    ) -> Result<()> {
        copy(dst, src.t(), acc)
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

linear_rule!(Transpose);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitive::{Grad, Primitive};
    use ndarray::{array, Array2};

    #[test]
    fn transpose_in_every_pass() {
        let a = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let c = Transpose.forward(&[a.view()]).unwrap().remove(0);
        assert_eq!(c, a.t());
        let (an, cn) = (
            Array2::from_elem((2, 3), f64::NAN),
            Array2::from_elem((3, 2), f64::NAN),
        );
        let cd = Transpose
            .jvp(&[an.view()], &[cn.view()], &[Some(a.view())])
            .unwrap();
        assert_eq!(cd[0], a.t());
        let mut abar = Array2::ones((2, 3));
        Transpose
            .backward_into(
                &[an.view()],
                &[cn.view()],
                &[Some(c.view())],
                &mut [Grad::Add(abar.view_mut())],
                None,
            )
            .unwrap();
        assert_eq!(abar, a.mapv(|x| x + 1.0));
    }
}
