//! Training a feedforward network with the primitives: a dense layer
//! `H' = g(WH + b1ᵀ)` built from [`MatMul`], [`AddBias`] and [`Map`], Glorot
//! initialisation, and the optimisers [`Sgd`] (with momentum) and [`Adam`], which update
//! parameter arrays in place.
//!
//! Examples are columns, as in the seed's section 4: `H` is `K×B` for a minibatch of
//! `B` examples, `W` is `K'×K`, `b` is `K'×1`.
//!
//! ```
//! use matgrad::check::random;
//! use matgrad::nn::{glorot_uniform, Adam, Dense, Identity, Optimizer};
//! use matgrad::prelude::*;
//! use ndarray::Array2;
//!
//! let mut rng = random::rng(7);
//! // Two classes in 2-D: the sign of x₀·x₁.
//! let x = random::randn::<f64>(2, 64, &mut rng);
//! let labels: Vec<usize> = x.columns().into_iter().map(|c| usize::from(c[0] * c[1] > 0.0)).collect();
//! let loss = SoftmaxCrossEntropy::new(labels);
//!
//! let mut l1 = Dense::new(glorot_uniform(16, 2, &mut rng), Array2::zeros((16, 1)), Tanh)?;
//! let mut l2 = Dense::new(glorot_uniform(2, 16, &mut rng), Array2::zeros((2, 1)), Identity)?;
//! let mut opt = Adam::new(0.05);
//! // Gradient buffers, first-written by each backward pass.
//! let (mut w1, mut b1) = (Array2::zeros((16, 2)), Array2::zeros((16, 1)));
//! let (mut w2, mut b2) = (Array2::zeros((2, 16)), Array2::zeros((2, 1)));
//! let mut first = f64::NAN;
//! let mut last = f64::NAN;
//! for step in 0..300 {
//!     let h = l1.forward(x.view())?;
//!     let z = l2.forward(h.value())?;
//!     let c = (&loss).apply([z.value()])?;
//!     last = c.value()[(0, 0)];
//!     if step == 0 {
//!         first = last;
//!     }
//!     let [zbar] = c.backward(ndarray::arr2(&[[1.0]]).view())?;
//!     let mut hbar = Array2::zeros((16, 64));
//!     z.backward_into(zbar.view(), &mut [
//!         Grad::Write(w2.view_mut()), Grad::Write(b2.view_mut()), Grad::Write(hbar.view_mut()),
//!     ])?;
//!     h.backward_into(hbar.view(), &mut [
//!         Grad::Write(w1.view_mut()), Grad::Write(b1.view_mut()), Grad::Skip,
//!     ])?;
//!     drop((h, z));
//!     opt.step(
//!         &mut [l1.w.view_mut(), l1.b.view_mut(), l2.w.view_mut(), l2.b.view_mut()],
//!         &[w1.view(), b1.view(), w2.view(), b2.view()],
//!     )?;
//! }
//! assert!(last < 0.25 * first, "{first} → {last}");
//! # Ok::<(), matgrad::Error>(())
//! ```

use crate::error::{shape_of, Error, Result, Shape};
use crate::ops::add::AddBias;
use crate::ops::elementwise::{Deriv, ElemFn, Map};
use crate::ops::matmul::MatMul;
use crate::ops::{Applied, Apply, Arg};
use crate::primitive::Grad;
use crate::Real;
use ndarray::{ArcArray2, Array2, ArrayView2, ArrayViewMut2, Zip};
use num_traits::Float;

const DENSE: &str = "Dense";
const SGD: &str = "Sgd";
const ADAM: &str = "Adam";

/// `g(x) = x`, the activation of a linear layer (the logits before a loss), with
/// `g' = 1`.
///
/// Through [`Map`] it costs a copy of the activations; it exists so that a [`Dense`]
/// layer without a nonlinearity has the same type of steps as the others.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash)]
pub struct Identity;

impl<T: Real> ElemFn<T> for Identity {
    fn name(&self) -> &'static str {
        "Identity"
    }
    fn reads(&self) -> Deriv {
        // `g'` reads nothing; `Input` is the smallest declaration there is.
        Deriv::Input
    }
    fn f(&self, x: T) -> T {
        x
    }
    fn df(&self, _x: T, _y: T) -> T {
        T::one()
    }
}

/// A dense layer `H' = g(WH + b1ᵀ)` (the seed's eqs. 8 and 9) with its parameters: `W`
/// (`K'×K`), the bias column `b` (`K'×1`) and the activation `g`, any [`ElemFn`]
/// ([`crate::ops::elementwise::Tanh`], [`Identity`] for logits, …).
///
/// [`Dense::forward`] applies the three primitives through the typed layer and returns
/// a [`DenseOut`], whose reverse pass gives `W̄`, `b̄` and `H̄` into first-write or
/// adding buffers. The fields are public so that an optimiser can update `w` and `b`
/// in place (once the `DenseOut`, which borrows them, is dropped).
#[derive(Clone, Debug)]
pub struct Dense<T, G> {
    /// The weights, `K'×K`.
    pub w: Array2<T>,
    /// The bias, a `K'×1` column.
    pub b: Array2<T>,
    /// The activation.
    pub act: G,
}

impl<T: Real, G: ElemFn<T> + Clone> Dense<T, G> {
    /// A layer with these parameters; `b` must be a column with one entry per row of
    /// `w` ([`Error::ShapeMismatch`]).
    pub fn new(w: Array2<T>, b: Array2<T>, act: G) -> Result<Self> {
        if shape_of(&b) != Shape(w.nrows(), 1) {
            return Err(Error::ShapeMismatch {
                op: DENSE,
                what: "b must be a column with one entry per row of W",
                lhs_name: "W",
                lhs: shape_of(&w),
                rhs_name: "b",
                rhs: shape_of(&b),
            });
        }
        Ok(Dense { w, b, act })
    }

    /// The forward pass `A = WH + b1ᵀ`, `H' = g(A)` on a minibatch `H` (`K×B`), keeping
    /// what the reverse pass needs. A shape error names the primitive that failed
    /// (`MatMul(A·B)` when `H` has the wrong number of rows).
    pub fn forward<'a>(&'a self, h: impl Into<Arg<'a, T>>) -> Result<DenseOut<'a, T, G>> {
        let wh = MatMul::nn().apply([Arg::from(self.w.view()), h.into()])?;
        let a = AddBias.apply([Arg::from(wh.value()), Arg::from(self.b.view())])?;
        let out = Map(self.act.clone()).apply([Arg::from(a.value())])?;
        Ok(DenseOut { wh, a, out })
    }
}

/// The three applied steps of [`Dense::forward`]: `WH`, `A = WH + b1ᵀ`, `H' = g(A)`.
pub struct DenseOut<'a, T, G> {
    /// `WH`.
    pub wh: Applied<'a, MatMul, T, 2>,
    /// `A = WH + b1ᵀ`.
    pub a: Applied<'a, AddBias, T, 2>,
    /// `H' = g(A)`.
    pub out: Applied<'a, Map<G>, T, 1>,
}

impl<T: Real, G: ElemFn<T>> DenseOut<'_, T, G> {
    /// The layer's output `H'`, which can feed the next layer without a copy.
    pub fn value(&self) -> &ArcArray2<T> {
        self.out.value()
    }

    /// The reverse pass for the cotangent `H̄'` of the output, per parameter skip, first
    /// write or add (`grads` = `[W̄, b̄, H̄]`):
    /// `Ā = g'(A) ⊙ H̄'` (eq. 14), `b̄ = Ā1` (eq. 11), `W̄ = ĀHᵀ` (eq. 12),
    /// `H̄ = WᵀĀ` (eq. 13).
    ///
    /// The cotangent of `WH` is `Ā` itself (the bias rule's `X̄ = C̄`), so `Ā` goes
    /// straight to the product's rule; it is the one temporary this allocates (`K'×B`).
    pub fn backward_into(
        &self,
        hbar: ArrayView2<'_, T>,
        grads: &mut [Grad<'_, T>; 3],
    ) -> Result<()> {
        let mut abar = Array2::zeros(self.a.value().raw_dim());
        self.out
            .backward_into(&[Some(hbar)], &mut [Grad::Write(abar.view_mut())], None)?;
        let [wg, bg, hg] = grads;
        if bg.wanted() {
            self.a
                .backward_into(&[Some(abar.view())], &mut [Grad::Skip, reborrow(bg)], None)?;
        }
        if wg.wanted() || hg.wanted() {
            self.wh.backward_into(
                &[Some(abar.view())],
                &mut [reborrow(wg), reborrow(hg)],
                None,
            )?;
        }
        Ok(())
    }

    /// `[W̄, b̄, H̄]` for the cotangent `H̄'` of the output, in new arrays.
    pub fn backward(&self, hbar: ArrayView2<'_, T>) -> Result<[Array2<T>; 3]> {
        let [w, h] = self.wh.input_shapes();
        let b = self.a.input_shapes()[1];
        let mut out = [
            Array2::zeros((w.0, w.1)),
            Array2::zeros((b.0, b.1)),
            Array2::zeros((h.0, h.1)),
        ];
        {
            let [w, b, h] = &mut out;
            self.backward_into(
                hbar,
                &mut [
                    Grad::Write(w.view_mut()),
                    Grad::Write(b.view_mut()),
                    Grad::Write(h.view_mut()),
                ],
            )?;
        }
        Ok(out)
    }
}

/// The same buffer and mode, for a shorter borrow.
fn reborrow<'b, T>(g: &'b mut Grad<'_, T>) -> Grad<'b, T> {
    g.target().map_or(Grad::Skip, |(v, acc)| Grad::new(v, acc))
}

/// Glorot (Xavier) uniform initialisation of a `fan_out×fan_in` weight matrix: entries
/// uniform in `[−r, r)` with `r = √(6/(fan_in + fan_out))` (Glorot and Bengio 2010,
/// eq. 16), which keeps the variance of activations and gradients about constant across
/// `tanh` layers. Needs `rand`, so it sits behind the default-on feature `check`; it
/// takes any generator, e.g. [`crate::check::random::rng`].
#[cfg(feature = "check")]
pub fn glorot_uniform<T: Real, R: rand::Rng + ?Sized>(
    fan_out: usize,
    fan_in: usize,
    rng: &mut R,
) -> Array2<T> {
    let fans = (fan_in + fan_out) as f64;
    if fans == 0.0 {
        return Array2::zeros((fan_out, fan_in));
    }
    let r = (6.0 / fans).sqrt();
    Array2::from_shape_simple_fn((fan_out, fan_in), || T::of(rng.gen_range(-r..r)))
}

/// An optimiser: updates parameter arrays in place from their gradients.
pub trait Optimizer<T: Real> {
    /// One update of every parameter from its gradient (the same number, each the
    /// shape of its parameter). State is created on the first call, for these shapes:
    /// later calls allocate nothing and must pass the same number and shapes of
    /// parameters, in the same order (else a typed error, and nothing is updated).
    fn step(
        &mut self,
        params: &mut [ArrayViewMut2<'_, T>],
        grads: &[ArrayView2<'_, T>],
    ) -> Result<()>;
    /// Forgets the state (velocities, moments, step count): the next step is a first one.
    fn reset(&mut self);
}

/// Checks the gradients against the parameters, and the state (if any) against both.
fn expect_matching<T: Real>(
    op: &'static str,
    params: &[ArrayViewMut2<'_, T>],
    grads: &[ArrayView2<'_, T>],
    state: &[Array2<T>],
) -> Result<()> {
    if grads.len() != params.len() {
        return Err(Error::Arity {
            op,
            what: "gradients (one per parameter)",
            expected: params.len(),
            got: grads.len(),
        });
    }
    if !state.is_empty() && state.len() != params.len() {
        return Err(Error::Arity {
            op,
            what: "parameters (as many as on the first step)",
            expected: state.len(),
            got: params.len(),
        });
    }
    for (i, (p, g)) in params.iter().zip(grads).enumerate() {
        let (ps, gs) = (shape_of(p), shape_of(g));
        if gs != ps {
            return Err(Error::WrongShape {
                op,
                name: "gradient",
                of: "its parameter",
                expected: ps,
                got: gs,
            });
        }
        if let Some(s) = state.get(i) {
            if shape_of(s) != ps {
                return Err(Error::WrongShape {
                    op,
                    name: "parameter",
                    of: "the same parameter on the first step",
                    expected: shape_of(s),
                    got: ps,
                });
            }
        }
    }
    Ok(())
}

/// Stochastic gradient descent with (heavy-ball) momentum:
/// `V ← μV + G`, `P ← P − ηV`, with `V = 0` before the first step (so the first step is
/// `P ← P − ηG`), as PyTorch's `SGD` without dampening or Nesterov (Sutskever et al.
/// 2013, eq. 1 up to the placement of `η`). With `μ = 0` it is plain
/// `P ← P − ηG` and keeps no state.
#[derive(Clone, Debug)]
pub struct Sgd<T> {
    /// The learning rate `η`.
    pub lr: T,
    /// The momentum `μ` (0 for none).
    pub momentum: T,
    velocity: Vec<Array2<T>>,
}

impl<T: Real> Sgd<T> {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: T) -> Self {
        Sgd {
            lr,
            momentum: T::zero(),
            velocity: Vec::new(),
        }
    }
    /// With momentum `μ`.
    pub fn momentum(mut self, momentum: T) -> Self {
        self.momentum = momentum;
        self
    }
    /// The velocities `V`, one per parameter (empty before the first step with
    /// momentum).
    pub fn velocity(&self) -> &[Array2<T>] {
        &self.velocity
    }
}

impl<T: Real> Optimizer<T> for Sgd<T> {
    fn step(
        &mut self,
        params: &mut [ArrayViewMut2<'_, T>],
        grads: &[ArrayView2<'_, T>],
    ) -> Result<()> {
        expect_matching(SGD, params, grads, &self.velocity)?;
        let (lr, mu) = (self.lr, self.momentum);
        if mu == T::zero() && self.velocity.is_empty() {
            for (p, g) in params.iter_mut().zip(grads) {
                p.scaled_add(-lr, g);
            }
            return Ok(());
        }
        if self.velocity.is_empty() {
            self.velocity = params.iter().map(|p| Array2::zeros(p.raw_dim())).collect();
        }
        for ((p, g), v) in params.iter_mut().zip(grads).zip(&mut self.velocity) {
            Zip::from(p).and(g).and(v).for_each(|p, &g, v| {
                *v = mu * *v + g;
                *p -= lr * *v;
            });
        }
        Ok(())
    }
    fn reset(&mut self) {
        self.velocity.clear();
    }
}

/// Adam (Kingma and Ba 2015, Algorithm 1): with `t` the step count,
/// `M ← β₁M + (1 − β₁)G`, `V ← β₂V + (1 − β₂)G⊙G`, and
/// `P ← P − η (M/(1 − β₁ᵗ)) / (√(V/(1 − β₂ᵗ)) + ε)` entrywise, from `M = V = 0`:
/// the bias corrections `1 − βᵗ` undo the pull of the zero start.
///
/// Defaults as in the paper: `β₁ = 0.9`, `β₂ = 0.999`, `ε = 10⁻⁸`. A `β` outside
/// `[0, 1)` is [`Error::InvalidArgument`] at the step.
#[derive(Clone, Debug)]
pub struct Adam<T> {
    /// The learning rate `η`.
    pub lr: T,
    /// Decay of the first moment, `β₁`.
    pub beta1: T,
    /// Decay of the second moment, `β₂`.
    pub beta2: T,
    /// Added to `√V̂` against division by zero, `ε`.
    pub eps: T,
    t: i32,
    m: Vec<Array2<T>>,
    v: Vec<Array2<T>>,
}

impl<T: Real> Adam<T> {
    /// Adam with learning rate `lr` and the paper's defaults.
    pub fn new(lr: T) -> Self {
        Adam {
            lr,
            beta1: T::of(0.9),
            beta2: T::of(0.999),
            eps: T::of(1e-8),
            t: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }
    /// With these moment decays.
    pub fn betas(mut self, beta1: T, beta2: T) -> Self {
        self.beta1 = beta1;
        self.beta2 = beta2;
        self
    }
    /// With this `ε`.
    pub fn eps(mut self, eps: T) -> Self {
        self.eps = eps;
        self
    }
    /// Steps taken since creation or [`Optimizer::reset`].
    pub fn steps(&self) -> usize {
        self.t as usize
    }
    /// The first moments `M`, one per parameter (empty before the first step).
    pub fn first_moments(&self) -> &[Array2<T>] {
        &self.m
    }
    /// The second moments `V`, one per parameter (empty before the first step).
    pub fn second_moments(&self) -> &[Array2<T>] {
        &self.v
    }
}

impl<T: Real> Optimizer<T> for Adam<T> {
    fn step(
        &mut self,
        params: &mut [ArrayViewMut2<'_, T>],
        grads: &[ArrayView2<'_, T>],
    ) -> Result<()> {
        let in_range = |b: T| b >= T::zero() && b < T::one();
        if !in_range(self.beta1) || !in_range(self.beta2) {
            return Err(Error::InvalidArgument {
                op: ADAM,
                msg: format!(
                    "beta1 = {} and beta2 = {} must be in [0, 1)",
                    self.beta1, self.beta2
                ),
            });
        }
        expect_matching(ADAM, params, grads, &self.m)?;
        if self.m.is_empty() {
            self.m = params.iter().map(|p| Array2::zeros(p.raw_dim())).collect();
            self.v = params.iter().map(|p| Array2::zeros(p.raw_dim())).collect();
            self.t = 0;
        }
        self.t = self.t.saturating_add(1);
        let (b1, b2, eps, lr) = (self.beta1, self.beta2, self.eps, self.lr);
        let c1 = T::one() / (T::one() - Float::powi(b1, self.t));
        let c2 = T::one() / (T::one() - Float::powi(b2, self.t));
        let (one_b1, one_b2) = (T::one() - b1, T::one() - b2);
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            Zip::from(p).and(g).and(m).and(v).for_each(|p, &g, m, v| {
                *m = b1 * *m + one_b1 * g;
                *v = b2 * *v + one_b2 * g * g;
                *p -= lr * (*m * c1) / ((*v * c2).sqrt() + eps);
            });
        }
        Ok(())
    }
    fn reset(&mut self) {
        self.m.clear();
        self.v.clear();
        self.t = 0;
    }
}
