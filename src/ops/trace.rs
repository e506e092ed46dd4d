//! Trace, `c = tr A = Σᵢ Aᵢᵢ`, as a `1×1` matrix.
//!
//! ```
//! use matgrad::prelude::*;
//! use ndarray::array;
//!
//! let a = array![[1.0f64, 2.0], [3.0, 4.0]];
//! let c = Trace.apply([a.view()])?;
//! assert_eq!(c.value()[(0, 0)], 5.0);
//! let [abar] = c.backward(array![[2.0]].view())?;
//! assert_eq!(abar, array![[2.0, 0.0], [0.0, 2.0]]);     // Ā = c̄I
//! # Ok::<(), matgrad::Error>(())
//! ```

use super::square;
use crate::blas::Accum;
use crate::error::{Result, Shape};
use crate::primitive::{Grad, Partials, Rule, Saves, Shapes};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2};
use smallvec::smallvec;

const OP: &str = "Trace";

/// `c = tr A` for a square `A`, as a `1×1` matrix.
///
/// Forward `ċ = tr Ȧ`; reverse `Ā = c̄I`, since `⟨c̄, tr Ȧ⟩ = ⟨c̄I, Ȧ⟩` (a linear map,
/// its own rule; Giles 2008 writes traces through `tr(AᵀB) = ⟨A, B⟩` throughout, and
/// `docs/math.md`, "Trace"). Errors: [`crate::Error::NotSquare`]. Saves nothing: the
/// reverse rule reads only `c̄`. No workspace.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Trace;

impl<T: Real> Rule<T> for Trace {
    fn name(&self) -> &'static str {
        OP
    }
    fn arity(&self) -> usize {
        1
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        square(OP, "A", x[0])?;
        Ok(smallvec![Shape(1, 1)])
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::NONE
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        y[0][(0, 0)] = x[0].diag().sum();
        Ok(())
    }
    fn pullback(
        &self,
        _x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        let cbar = ybar.view(0)[(0, 0)];
        if let Some((mut g, acc)) = grads[0].target() {
            if acc == Accum::Replace {
                g.fill(T::zero());
            }
            g.diag_mut().iter_mut().for_each(|d| acc.store(d, cbar));
        }
        Ok(())
    }
    fn pushforward(
        &self,
        _x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _: &mut [T],
    ) -> Result<()> {
        ydot[0][(0, 0)] = xdot.view(0).diag().sum();
        Ok(())
    }
}
