//! Every primitive with its configuration, and what the harness knows about it
//! independently of the crate: which shapes it accepts and what it returns for them
//! (its shape rule, from the documentation), natural input values, which value errors
//! it must or may return, and an `f64` reference of its outputs from scalar loops.

use crate::gen::{self, dim, dim1, randn};
use crate::linalg::{self, mm, mm_abs};
use matgrad::prelude::*;
use matgrad::{naive, Error, Real, Rule, Shape};
use ndarray::{Array2, Order};
use rand::rngs::StdRng;
use rand::Rng;

/// The scalar functions of `Map`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Elem {
    Tanh,
    Sigmoid,
    Relu,
    Exp,
    Log,
    Sin,
    Cos,
    Square,
    Softplus,
}

const ELEMS: [Elem; 9] = [
    Elem::Tanh,
    Elem::Sigmoid,
    Elem::Relu,
    Elem::Exp,
    Elem::Log,
    Elem::Sin,
    Elem::Cos,
    Elem::Square,
    Elem::Softplus,
];

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        x.exp() / (1.0 + x.exp())
    }
}

impl Elem {
    /// `g(x)` in `f64`.
    fn f(self, x: f64) -> f64 {
        match self {
            Elem::Tanh => x.tanh(),
            Elem::Sigmoid => sigmoid(x),
            Elem::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Elem::Exp => x.exp(),
            Elem::Log => x.ln(),
            Elem::Sin => x.sin(),
            Elem::Cos => x.cos(),
            Elem::Square => x * x,
            Elem::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
        }
    }
}

/// Cholesky's reverse-pass algorithm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CholMethod {
    Auto,
    Blocked(usize),
    Symbolic,
    Unblocked,
}

/// A primitive and its configuration.
#[derive(Clone, Debug)]
pub enum Spec {
    Add,
    AddBias,
    Map(Elem),
    Hadamard,
    Tril(isize),
    Triu(isize),
    Mask(Array2<bool>),
    Reshape(usize, usize, bool),
    Vectorize,
    Unvec(usize, usize),
    Transpose,
    MatMul(bool, bool),
    Sum,
    Mean,
    LogSumExp,
    LogSoftmax,
    SoftmaxCe(Vec<usize>),
    Mse,
    Frobenius,
    Nuclear,
    Spectral,
    Trace,
    CholLogDet,
    ChoSolve,
    TriSolve {
        left: bool,
        trans: bool,
        lower: bool,
    },
    Cholesky {
        lower: bool,
        method: CholMethod,
    },
    SymEig {
        lower: bool,
    },
    Svd,
    Expm,
    MatPoly(Vec<f64>),
    Inverse,
    Det,
    SlogDet,
    LuSolve(bool),
}

/// The error kinds a call may end in, by variant name.
pub type Kinds = Vec<&'static str>;

/// The variant name of an error.
pub fn kind(e: &Error) -> &'static str {
    match e {
        Error::ShapeMismatch { .. } => "ShapeMismatch",
        Error::WrongShape { .. } => "WrongShape",
        Error::NotSquare { .. } => "NotSquare",
        Error::BadReshape { .. } => "BadReshape",
        Error::Arity { .. } => "Arity",
        Error::NotPositiveDefinite { .. } => "NotPositiveDefinite",
        Error::Singular { .. } => "Singular",
        Error::NonFinite { .. } => "NonFinite",
        Error::DegenerateEigenvalues { .. } => "DegenerateEigenvalues",
        Error::ZeroSingularValue { .. } => "ZeroSingularValue",
        Error::InvalidArgument { .. } => "InvalidArgument",
        Error::TooLarge { .. } => "TooLarge",
        Error::Workspace { .. } => "Workspace",
        Error::Lapack { .. } => "Lapack",
        Error::LabelOutOfRange { .. } => "LabelOutOfRange",
        Error::Empty { .. } => "Empty",
        Error::ForeignVar { .. } => "ForeignVar",
        Error::NotScalar { .. } => "NotScalar",
        Error::Released { .. } => "Released",
        Error::CannotAllocate { .. } => "CannotAllocate",
        Error::IllConditioned { .. } => "IllConditioned",
        Error::Perturbed { .. } => "Perturbed",
        Error::Overflow { .. } => "Overflow",
        Error::NoConvergence { .. } => "NoConvergence",
    }
}

/// What the harness expects of a forward pass at these values (shapes accepted).
#[derive(Default, Debug)]
pub struct Verdict {
    /// The input is invalid: the call must fail with one of these.
    pub must: Option<Kinds>,
    /// The call may fail with one of these (a borderline input: nearly singular,
    /// nearly indefinite, close to overflow).
    pub may: Kinds,
    /// Kinds the reverse and forward-mode rules may return at this point for finite
    /// cotangents and tangents.
    pub rules_may: Kinds,
}

impl Verdict {
    fn must(kinds: &[&'static str]) -> Self {
        Verdict {
            must: Some(kinds.to_vec()),
            ..Default::default()
        }
    }
}

/// The reference outputs: the differentiable outputs in `f64` with an error bound for
/// each entry (in units of the tolerance: allowed `|got − ref| ≤ C·ε·bound`), or, for
/// outputs only determined up to a choice (eigenvectors), a property check instead.
pub struct Ref {
    /// Per differentiable output: `Some((value, bound))` to compare, `None` to leave to
    /// `check`.
    pub y: Vec<Option<(Array2<f64>, Array2<f64>)>>,
    /// Whether finite inputs give finite outputs here (no overflow in the reference).
    pub finite: bool,
    /// How much an input perturbation is amplified (1 for benign primitives), for the
    /// derivative comparisons; infinite where the derivative is not to be compared.
    pub cond: f64,
    /// Every differentiable output (for finite differences), when the reference has
    /// them all.
    pub plain: Option<Vec<Array2<f64>>>,
}

/// A scalar bound broadcast to a shape.
fn bound(v: &Array2<f64>, b: f64) -> Array2<f64> {
    Array2::from_elem(v.raw_dim(), b)
}

fn same(v: Array2<f64>, b: Array2<f64>) -> Option<(Array2<f64>, Array2<f64>)> {
    Some((v, b))
}

fn exact(v: Array2<f64>) -> Option<(Array2<f64>, Array2<f64>)> {
    let b = Array2::zeros(v.raw_dim());
    Some((v, b))
}

fn scalar(v: f64) -> Array2<f64> {
    Array2::from_elem((1, 1), v)
}

/// `(2ᵉA, e)` with `2ᵉ` bringing the largest entry near 1 (`e = 0` for zero or
/// non-finite entries); `2ᵉ` is applied in two halves, each a normal power of two.
fn pow2_scaled(a: &Array2<f64>) -> (Array2<f64>, i32) {
    let big = linalg::max_abs(a);
    if !(big > 0.0 && big.is_finite()) {
        return (a.clone(), 0);
    }
    let e = -(big.log2().floor() as i32);
    (a.mapv(|v| v * 2f64.powi(e / 2) * 2f64.powi(e - e / 2)), e)
}

/// `c·2⁻ᵏᵉ`, one normal power of two at a time: it under- or overflows only where
/// the value does.
fn unscale(c: f64, k: usize, e: i32) -> f64 {
    (0..k).fold(c, |c, _| c * 2f64.powi(-(e / 2)) * 2f64.powi(-(e - e / 2)))
}

fn square(s: Shape) -> bool {
    s.0 == s.1
}

/// Both dimensions within LAPACK's 32-bit integers.
fn lapack_dims(s: Shape) -> bool {
    i32::try_from(s.0).is_ok() && i32::try_from(s.1).is_ok()
}

/// The shape rule of a solve `op(L)⁻¹B` / `B·op(L)⁻¹`: `L` square, `B` fitting it on
/// `side`; for a non-square `L` either kind may come first.
fn solve_shapes(l: Shape, b: Shape, left: bool) -> Result<Vec<Shape>, Kinds> {
    let fits = if left { b.0 == l.0 } else { b.1 == l.1 };
    if !square(l) {
        Err(vec!["NotSquare", "ShapeMismatch"])
    } else if !fits {
        Err(vec!["ShapeMismatch"])
    } else {
        Ok(vec![b])
    }
}

impl Spec {
    /// A random primitive with shapes its shape rule accepts.
    pub fn random(rng: &mut StdRng) -> (Spec, Vec<Shape>) {
        let (m, n) = (dim(rng), dim(rng));
        let nsq = dim(rng);
        let sh = |r, c| Shape(r, c);
        match rng.gen_range(0..34) {
            0 => (Spec::Add, vec![sh(m, n); 2]),
            1 => (Spec::AddBias, vec![sh(m, n), sh(m, 1)]),
            2 => (
                Spec::Map(ELEMS[rng.gen_range(0..ELEMS.len())]),
                vec![sh(m, n)],
            ),
            3 => (Spec::Hadamard, vec![sh(m, n); 2]),
            4 => (Spec::Tril(rng.gen_range(-4..=4)), vec![sh(m, n)]),
            5 => (Spec::Triu(rng.gen_range(-4..=4)), vec![sh(m, n)]),
            6 => {
                let keep = Array2::from_shape_simple_fn((m, n), || rng.gen_bool(0.5));
                (Spec::Mask(keep), vec![sh(m, n)])
            }
            7 => {
                // A target with the same number of entries.
                let total = m * n;
                let divisors: Vec<usize> = (1..=total.max(1)).filter(|d| total % d == 0).collect();
                let r = if total == 0 {
                    rng.gen_range(0..4)
                } else {
                    divisors[rng.gen_range(0..divisors.len())]
                };
                let c = if total == 0 {
                    if r == 0 {
                        rng.gen_range(0..4)
                    } else {
                        0
                    }
                } else {
                    total / r
                };
                (Spec::Reshape(r, c, rng.gen_bool(0.5)), vec![sh(m, n)])
            }
            8 => (Spec::Vectorize, vec![sh(m, n)]),
            9 => (Spec::Unvec(m, n), vec![sh(m * n, 1)]),
            10 => (Spec::Transpose, vec![sh(m, n)]),
            11 => {
                let (ta, tb) = (rng.gen_bool(0.5), rng.gen_bool(0.5));
                let k = dim(rng);
                let a = if ta { sh(k, m) } else { sh(m, k) };
                let b = if tb { sh(n, k) } else { sh(k, n) };
                (Spec::MatMul(ta, tb), vec![a, b])
            }
            12 => (Spec::Sum, vec![sh(m, n)]),
            13 => (Spec::Mean, vec![sh(m.max(1), n.max(1))]),
            14 => (Spec::LogSumExp, vec![sh(m, n)]),
            15 => (Spec::LogSoftmax, vec![sh(m, n)]),
            16 => {
                let (k, n) = (dim1(rng), dim1(rng));
                let labels = (0..n).map(|_| rng.gen_range(0..k)).collect();
                (Spec::SoftmaxCe(labels), vec![sh(k, n)])
            }
            17 => (Spec::Mse, vec![sh(m.max(1), n); 2]),
            18 => (Spec::Frobenius, vec![sh(m, n)]),
            19 => (Spec::Nuclear, vec![sh(m, n)]),
            20 => (Spec::Spectral, vec![sh(m, n)]),
            21 => (Spec::Trace, vec![sh(nsq, nsq)]),
            22 => (Spec::CholLogDet, vec![sh(nsq, nsq)]),
            23 => (Spec::ChoSolve, vec![sh(nsq, nsq), sh(nsq, n)]),
            24 => {
                let (left, trans, lower) =
                    (rng.gen_bool(0.5), rng.gen_bool(0.5), rng.gen_bool(0.5));
                let b = if left { sh(nsq, n) } else { sh(m, nsq) };
                (Spec::TriSolve { left, trans, lower }, vec![sh(nsq, nsq), b])
            }
            25 => {
                let method = match rng.gen_range(0..4) {
                    0 => CholMethod::Auto,
                    1 => CholMethod::Blocked(rng.gen_range(1..=8)),
                    2 => CholMethod::Symbolic,
                    _ => CholMethod::Unblocked,
                };
                let spec = Spec::Cholesky {
                    lower: rng.gen_bool(0.5),
                    method,
                };
                (spec, vec![sh(nsq, nsq)])
            }
            26 => (
                Spec::SymEig {
                    lower: rng.gen_bool(0.5),
                },
                vec![sh(nsq, nsq)],
            ),
            27 => (Spec::Svd, vec![sh(m, n)]),
            28 => (Spec::Expm, vec![sh(nsq, nsq)]),
            29 => {
                let mut coeffs: Vec<f64> = (0..rng.gen_range(0..=5))
                    .map(|_| gen::normal(rng))
                    .collect();
                if !coeffs.is_empty() && rng.gen_bool(0.1) {
                    let k = rng.gen_range(0..coeffs.len());
                    coeffs[k] = [f64::NAN, f64::INFINITY, 1e300, 1e-310][rng.gen_range(0..4)];
                }
                (Spec::MatPoly(coeffs), vec![sh(nsq, nsq)])
            }
            30 => (Spec::Inverse, vec![sh(nsq, nsq)]),
            31 => (Spec::Det, vec![sh(nsq, nsq)]),
            32 => (Spec::SlogDet, vec![sh(nsq, nsq)]),
            _ => (
                Spec::LuSolve(rng.gen_bool(0.5)),
                vec![sh(nsq, nsq), sh(nsq, n)],
            ),
        }
    }

    /// Breaks the shapes or the configuration; what the result is, the harness's own
    /// shape rule decides ([`Spec::expect`]).
    pub fn mutate(&mut self, shapes: &mut [Shape], rng: &mut StdRng) {
        match self {
            Spec::Reshape(r, c, _) | Spec::Unvec(r, c) if rng.gen_bool(0.5) => {
                if rng.gen_bool(0.5) {
                    *r += 1;
                } else {
                    *c = c.saturating_sub(1) + 2 * usize::from(*c == 0);
                }
                return;
            }
            Spec::SoftmaxCe(labels) if rng.gen_bool(0.5) => {
                match rng.gen_range(0..3) {
                    0 => labels.push(0),
                    1 => {
                        labels.pop();
                    }
                    _ => {
                        if let Some(l) = labels.last_mut() {
                            *l = shapes[0].0 + rng.gen_range(0..3);
                        }
                    }
                }
                return;
            }
            Spec::Mask(keep) if rng.gen_bool(0.3) => {
                *keep = keep.t().to_owned();
                if keep.nrows() == keep.ncols() {
                    *keep = Array2::from_elem((keep.nrows() + 1, keep.ncols()), true);
                }
                return;
            }
            Spec::Cholesky { method, .. } if rng.gen_bool(0.3) => {
                *method = CholMethod::Blocked(0);
                return;
            }
            _ => {}
        }
        let i = rng.gen_range(0..shapes.len());
        let Shape(r, c) = shapes[i];
        shapes[i] = match rng.gen_range(0..6) {
            0 => Shape(r + 1, c),
            1 => Shape(r, c + 1),
            2 => Shape(c, r),
            3 => Shape(0, c),
            4 => Shape(r.saturating_sub(1), c),
            _ => Shape(dim(rng), dim(rng)),
        };
    }

    pub fn name(&self) -> String {
        format!("{self:?}")
    }

    /// The primitive without its configuration (the elementwise function kept).
    pub fn prim(&self) -> String {
        match self {
            Spec::Map(e) => format!("Map({e:?})"),
            _ => {
                let s = self.name();
                let end = s.find(['(', ' ', '{']).unwrap_or(s.len());
                s[..end].to_string()
            }
        }
    }

    /// The primitive in precision `T`.
    pub fn build<T: Real>(&self) -> Box<dyn Rule<T>> {
        let flag = |t: bool| if t { Trans::Yes } else { Trans::No };
        let conv = |lower: bool| {
            if lower {
                Convention::Lower
            } else {
                Convention::Symmetric
            }
        };
        match self {
            Spec::Add => Box::new(Add),
            Spec::AddBias => Box::new(AddBias),
            Spec::Map(e) => match e {
                Elem::Tanh => Box::new(Map(Tanh)),
                Elem::Sigmoid => Box::new(Map(Sigmoid)),
                Elem::Relu => Box::new(Map(Relu)),
                Elem::Exp => Box::new(Map(Exp)),
                Elem::Log => Box::new(Map(Log)),
                Elem::Sin => Box::new(Map(Sin)),
                Elem::Cos => Box::new(Map(Cos)),
                Elem::Square => Box::new(Map(Square)),
                Elem::Softplus => Box::new(Map(Softplus)),
            },
            Spec::Hadamard => Box::new(Hadamard),
            Spec::Tril(k) => Box::new(Tril::new(*k)),
            Spec::Triu(k) => Box::new(Triu::new(*k)),
            Spec::Mask(keep) => Box::new(Mask::new(keep.clone())),
            Spec::Reshape(r, c, row) => Box::new(Reshape::new(
                *r,
                *c,
                if *row {
                    Order::RowMajor
                } else {
                    Order::ColumnMajor
                },
            )),
            Spec::Vectorize => Box::new(Vectorize),
            Spec::Unvec(r, c) => Box::new(Unvec::new(*r, *c)),
            Spec::Transpose => Box::new(Transpose),
            Spec::MatMul(ta, tb) => Box::new(MatMul::new(flag(*ta), flag(*tb))),
            Spec::Sum => Box::new(Sum),
            Spec::Mean => Box::new(Mean),
            Spec::LogSumExp => Box::new(LogSumExp),
            Spec::LogSoftmax => Box::new(LogSoftmax),
            Spec::SoftmaxCe(labels) => Box::new(SoftmaxCrossEntropy::new(labels.clone())),
            Spec::Mse => Box::new(MeanSquaredError),
            Spec::Frobenius => Box::new(FrobeniusNorm),
            Spec::Nuclear => Box::new(NuclearNorm),
            Spec::Spectral => Box::new(SpectralNorm),
            Spec::Trace => Box::new(Trace),
            Spec::CholLogDet => Box::new(CholLogDet),
            Spec::ChoSolve => Box::new(ChoSolve),
            Spec::TriSolve { left, trans, lower } => {
                let op = TriSolve::new(
                    Side::Left,
                    flag(*trans),
                    if *lower { Uplo::Lower } else { Uplo::Upper },
                );
                Box::new(if *left { op } else { op.right() })
            }
            Spec::Cholesky { lower, method } => {
                let method = match method {
                    CholMethod::Auto => Method::Auto,
                    CholMethod::Blocked(block) => Method::Blocked { block: *block },
                    CholMethod::Symbolic => Method::Symbolic,
                    CholMethod::Unblocked => Method::Unblocked,
                };
                Box::new(Cholesky::new().convention(conv(*lower)).method(method))
            }
            Spec::SymEig { lower } => Box::new(SymEig::new().convention(conv(*lower))),
            Spec::Svd => Box::new(Svd),
            Spec::Expm => Box::new(Expm),
            Spec::MatPoly(c) => Box::new(MatPoly::new(c.clone())),
            Spec::Inverse => Box::new(Inverse),
            Spec::Det => Box::new(Det),
            Spec::SlogDet => Box::new(SlogDet),
            Spec::LuSolve(t) => Box::new(if *t {
                LuSolve::transposed()
            } else {
                LuSolve::new()
            }),
        }
    }

    /// Number of differentiable outputs.
    pub fn outputs(&self) -> usize {
        match self {
            Spec::SymEig { .. } | Spec::SlogDet => 2,
            Spec::Svd => 3,
            _ => 1,
        }
    }

    /// Whether the residual outputs at `x` (rounded to `T`) are exactly representable
    /// with room to spare: for the LU family, the factors of `A`, whose `U` grows past
    /// `max|A|` (`A` of `f32` entries up to `1.7·10³⁸` has `|Uᵢⱼ|` up to `4·10³⁸`, beyond
    /// `f32::MAX ≈ 3.4·10³⁸`, while `X = A⁻¹B` and `log|det A|` are moderate).
    pub fn residuals_in_range<T: Real>(&self, x: &[Array2<f64>]) -> bool {
        match self {
            Spec::Det | Spec::SlogDet | Spec::LuSolve(_)
                if x[0].is_square() && gen::finite(&x[0]) =>
            {
                linalg::max_abs(&linalg::lu(&x[0]).lu) < T::max_value().to64() * 1e-3
            }
            _ => true,
        }
    }

    /// Whether the outputs and derivatives are products BLAS's GEMM sums in an order of
    /// its own (`MatMul`; `MatPoly`'s Horner steps). Where the sum of magnitudes a bound
    /// holds reaches the largest finite value, a partial sum may overflow though the
    /// exact result is in range, as in every BLAS: matgrad does not guard GEMM against
    /// it, since a magnitude scan of both operands costs a fifth of the product at
    /// n = 64 (`docs/math.md`, "Products near the overflow threshold").
    pub fn gemm_sums(&self) -> bool {
        matches!(self, Spec::MatMul(..) | Spec::MatPoly(_))
    }

    /// A bound on the norm of the Jacobian at `x` where the harness has no reference
    /// gradient and the coefficients of the configuration scale it: for `MatPoly`,
    /// `‖p'(A)‖ ≤ Σₖ k|cₖ|‖A‖₁ᵏ⁻¹` (a coefficient 10³⁰⁰ makes the gradient 10³⁰⁰·C̄).
    pub fn jacobian_bound(&self, x: &[Array2<f64>]) -> f64 {
        match self {
            Spec::MatPoly(c) => {
                let a = linalg::norm1(&x[0]);
                c.iter()
                    .enumerate()
                    .skip(1)
                    .map(|(k, ck)| k as f64 * ck.abs() * a.powi(k as i32 - 1))
                    .sum()
            }
            _ => 1.0,
        }
    }

    /// The harness's shape rule: every output shape (residuals last), or the error
    /// kinds a call must end in.
    pub fn expect(&self, x: &[Shape]) -> Result<Vec<Shape>, Kinds> {
        let a = x[0];
        let Shape(m, n) = a;
        let need_square = |out: Vec<Shape>| {
            if square(a) {
                Ok(out)
            } else {
                Err(vec!["NotSquare"])
            }
        };
        let one = Shape(1, 1);
        match self {
            Spec::Add | Spec::Hadamard => {
                if x[0] == x[1] {
                    Ok(vec![a])
                } else {
                    Err(vec!["ShapeMismatch"])
                }
            }
            Spec::Mse => {
                if x[0] != x[1] {
                    Err(vec!["ShapeMismatch"])
                } else if m == 0 || n == 0 {
                    Err(vec!["Empty"])
                } else {
                    Ok(vec![one])
                }
            }
            Spec::AddBias => {
                if x[1] == Shape(m, 1) {
                    Ok(vec![a])
                } else {
                    Err(vec!["ShapeMismatch"])
                }
            }
            Spec::Map(_) | Spec::Tril(_) | Spec::Triu(_) | Spec::LogSoftmax => Ok(vec![a]),
            Spec::Mask(keep) => {
                if keep.dim() == (m, n) {
                    Ok(vec![a])
                } else {
                    Err(vec!["ShapeMismatch"])
                }
            }
            Spec::Reshape(r, c, _) => {
                if r.checked_mul(*c).is_some() && r.checked_mul(*c) == m.checked_mul(n) {
                    Ok(vec![Shape(*r, *c)])
                } else {
                    Err(vec!["BadReshape"])
                }
            }
            Spec::Vectorize => match m.checked_mul(n) {
                Some(t) => Ok(vec![Shape(t, 1)]),
                None => Err(vec!["BadReshape"]),
            },
            Spec::Unvec(r, c) => match r.checked_mul(*c) {
                Some(t) if Some(t) == m.checked_mul(n) && a == Shape(t, 1) => {
                    Ok(vec![Shape(*r, *c)])
                }
                Some(t) if Some(t) == m.checked_mul(n) => Err(vec!["WrongShape"]),
                _ => Err(vec!["BadReshape"]),
            },
            Spec::Transpose => Ok(vec![Shape(n, m)]),
            Spec::MatMul(ta, tb) => {
                let (am, ak) = if *ta { (n, m) } else { (m, n) };
                let (bk, bn) = if *tb {
                    (x[1].1, x[1].0)
                } else {
                    (x[1].0, x[1].1)
                };
                if ak == bk {
                    Ok(vec![Shape(am, bn)])
                } else {
                    Err(vec!["ShapeMismatch"])
                }
            }
            Spec::Sum | Spec::Frobenius => Ok(vec![one]),
            Spec::Mean => {
                if m == 0 || n == 0 {
                    Err(vec!["Empty"])
                } else {
                    Ok(vec![one])
                }
            }
            Spec::LogSumExp => Ok(vec![Shape(1, n)]),
            Spec::SoftmaxCe(labels) => {
                let mut k = Vec::new();
                if labels.len() != n {
                    k.push("ShapeMismatch");
                }
                if n == 0 {
                    k.push("Empty");
                }
                if labels.iter().any(|&l| l >= m) {
                    k.push("LabelOutOfRange");
                }
                if k.is_empty() {
                    Ok(vec![one, a])
                } else {
                    Err(k)
                }
            }
            Spec::Nuclear | Spec::Spectral | Spec::Svd if !lapack_dims(a) => Err(vec!["TooLarge"]),
            Spec::SymEig { .. } if square(a) && !lapack_dims(a) => Err(vec!["TooLarge"]),
            Spec::Nuclear => {
                let k = m.min(n);
                Ok(vec![one, Shape(m, k), Shape(k, 1), Shape(n, k)])
            }
            Spec::Spectral => Ok(vec![one, Shape(m, 1), Shape(n, 1), one]),
            Spec::Svd => {
                let k = m.min(n);
                Ok(vec![Shape(m, k), Shape(k, 1), Shape(n, k)])
            }
            Spec::Trace | Spec::CholLogDet => need_square(vec![one]),
            Spec::Cholesky { method, .. } => {
                if !square(a) {
                    Err(vec!["NotSquare"])
                } else if *method == CholMethod::Blocked(0) {
                    // The block size is checked when the reverse pass runs; the forward
                    // pass does not use it.
                    Ok(vec![a])
                } else {
                    Ok(vec![a])
                }
            }
            Spec::Expm | Spec::MatPoly(_) | Spec::Inverse => need_square(vec![a]),
            Spec::SymEig { .. } => need_square(vec![Shape(m, 1), a]),
            Spec::Det => need_square(vec![one, a, Shape(m, 1)]),
            Spec::SlogDet => need_square(vec![one, one, a, Shape(m, 1)]),
            Spec::ChoSolve => solve_shapes(a, x[1], true).map(|v| vec![v[0], v[0]]),
            Spec::TriSolve { left, .. } => solve_shapes(a, x[1], *left),
            Spec::LuSolve(_) => solve_shapes(a, x[1], true).map(|v| vec![v[0], a, Shape(m, 1)]),
        }
    }

    /// Natural values for these (accepted) shapes: what a user would pass.
    pub fn gen(&self, x: &[Shape], rng: &mut StdRng) -> Vec<Array2<f64>> {
        let r = |s: Shape, rng: &mut StdRng| randn(s.0, s.1, rng);
        match self {
            Spec::Map(Elem::Log) => vec![r(x[0], rng).mapv(|v| v.abs() + 0.1)],
            Spec::LogSumExp | Spec::LogSoftmax | Spec::SoftmaxCe(_) => {
                vec![r(x[0], rng).mapv(|v| 3.0 * v)]
            }
            Spec::CholLogDet => vec![lower_factor(x[0], rng)],
            Spec::ChoSolve => vec![lower_factor(x[0], rng), r(x[1], rng)],
            Spec::TriSolve { lower, .. } => {
                let mut l = lower_factor(x[0], rng);
                if l.nrows() == l.ncols() {
                    // Random signs on the diagonal; the other triangle is junk that must
                    // not be read.
                    for i in 0..l.nrows() {
                        if rng.gen_bool(0.3) {
                            l[(i, i)] = -l[(i, i)];
                        }
                    }
                    if !*lower {
                        l = l.t().to_owned();
                    }
                }
                vec![l, r(x[1], rng)]
            }
            Spec::Cholesky { .. } => vec![spd(x[0], rng)],
            // Random lower triangle; the upper one is junk that must not be read.
            Spec::SymEig { .. } => vec![r(x[0], rng)],
            Spec::Expm => {
                let s = [0.1, 0.5, 1.0, 3.0][rng.gen_range(0..4)];
                vec![r(x[0], rng).mapv(|v| v * s)]
            }
            Spec::MatPoly(_) => {
                let s = 1.0 / (x[0].0.max(1) as f64).sqrt();
                vec![r(x[0], rng).mapv(|v| v * s)]
            }
            Spec::Inverse | Spec::Det | Spec::SlogDet | Spec::LuSolve(_) => {
                let mut v: Vec<Array2<f64>> = x.iter().map(|&s| r(s, rng)).collect();
                if rng.gen_bool(0.5) && square(x[0]) {
                    for i in 0..x[0].0 {
                        v[0][(i, i)] += 2.0 * (x[0].0 as f64).sqrt();
                    }
                }
                v
            }
            _ => x.iter().map(|&s| r(s, rng)).collect(),
        }
    }

    /// Values the harness expects the forward pass to reject or allow to reject, and
    /// the rule errors allowed, at these (accepted-shape, rounded to `T`) inputs.
    pub fn verdict<T: Real>(&self, x: &[Array2<f64>]) -> Verdict {
        let eps = T::epsilon().to64();
        let tmax = T::max_value().to64();
        let fin = |a: &Array2<f64>| gen::finite(a);
        let n = x[0].nrows();
        // Values below the normal range keep only this absolute precision.
        let spacing = 1e5 * T::min_positive_value().to64() * eps;
        let near_singular = |a: &Array2<f64>| {
            let k = linalg::cond(a);
            k * eps * (n.max(1) as f64) > 1e-4
        };
        match self {
            Spec::Cholesky { method, .. } => {
                let low = linalg::lower_part(&x[0]);
                if !fin(&low) {
                    return Verdict::must(&["NonFinite"]);
                }
                let mut v = chol_verdict(&x[0], eps);
                if *method == CholMethod::Blocked(0) {
                    v.rules_may.push("InvalidArgument");
                }
                v
            }
            Spec::SymEig { .. } => {
                if !fin(&linalg::lower_part(&x[0])) {
                    return Verdict::must(&["NonFinite"]);
                }
                let (lambda, _) = linalg::eigh(&linalg::sym_from_lower(&x[0]));
                let scale = lambda.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let mut v = Verdict::default();
                if min_gap(&lambda) <= 1e5 * eps * scale + spacing {
                    v.rules_may.push("DegenerateEigenvalues");
                }
                v
            }
            Spec::Svd | Spec::Nuclear | Spec::Spectral | Spec::Frobenius => {
                if !fin(&x[0]) {
                    return Verdict::must(&["NonFinite"]);
                }
                let mut v = Verdict::default();
                if matches!(self, Spec::Frobenius) {
                    if linalg::fro(&x[0]) > tmax * 0.5 {
                        v.may.push("InvalidArgument");
                    }
                    return v;
                }
                let (_, s, _) = linalg::svd(&x[0]);
                let s1 = s.first().copied().unwrap_or(0.0);
                let tol = 1e5 * eps * s1 + spacing;
                match self {
                    Spec::Svd => {
                        let gaps = s.windows(2).any(|w| w[0] - w[1] <= tol);
                        if gaps {
                            v.rules_may.push("DegenerateEigenvalues");
                        }
                        if s.iter().any(|&si| si <= tol) {
                            v.rules_may.push("ZeroSingularValue");
                            v.rules_may.push("DegenerateEigenvalues");
                        }
                    }
                    Spec::Spectral if s.len() > 1 && s[0] - s[1] <= tol && s1 > 0.0 => {
                        v.rules_may.push("DegenerateEigenvalues");
                    }
                    _ => {}
                }
                v
            }
            Spec::Expm => {
                if !fin(&x[0]) {
                    return Verdict::must(&["NonFinite"]);
                }
                let e = linalg::expm(&x[0]);
                let mut v = Verdict::default();
                let big = linalg::max_abs(&e);
                if !(big < tmax * 1e-6) || linalg::norm1(&x[0]) > 1e3 {
                    v.may.push("InvalidArgument");
                    v.rules_may.push("InvalidArgument");
                }
                v
            }
            Spec::Inverse | Spec::SlogDet | Spec::LuSolve(_) => {
                if !fin(&x[0]) {
                    return Verdict::must(&["NonFinite"]);
                }
                if matches!(self, Spec::LuSolve(_)) && !fin(&x[1]) {
                    // A singular A may be found before B is scanned.
                    return Verdict::must(&["NonFinite", "Singular"]);
                }
                let mut v = Verdict::default();
                let inv = linalg::inverse(&x[0]);
                let overflow = match &inv {
                    Some(c) => !(linalg::max_abs(c) < tmax * 1e-3),
                    None => true,
                };
                let solution_overflow = match (self, &inv) {
                    (Spec::LuSolve(_), Some(c)) => {
                        !(linalg::max_abs(c) * linalg::max_abs(&x[1]) * (n as f64) < tmax * 1e-3)
                    }
                    _ => false,
                };
                if near_singular(&x[0]) || overflow || solution_overflow {
                    v.may.push("Singular");
                    v.rules_may.push("Singular");
                }
                // The solve with a numerically singular A is backward stable only: its X
                // can be as large as rounding makes it, and overflow.
                if matches!(self, Spec::LuSolve(_))
                    && (near_singular(&x[0]) || overflow || solution_overflow)
                {
                    v.may.push("Overflow");
                }
                v
            }
            Spec::Det => {
                if !fin(&x[0]) {
                    return Verdict::must(&["NonFinite"]);
                }
                let mut v = Verdict::default();
                let hadamard: f64 = x[0]
                    .rows()
                    .into_iter()
                    .map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt())
                    .product();
                if !(hadamard < tmax * 1e-3) {
                    // det A may overflow T: refused by the forward pass and by the
                    // reverse and forward-mode rules, which need it too.
                    v.may.push("InvalidArgument");
                    v.rules_may.push("InvalidArgument");
                }
                v
            }
            Spec::CholLogDet => {
                let d: Vec<f64> = (0..n).map(|i| x[0][(i, i)]).collect();
                if let Some(&first) = d.iter().find(|v| v.is_nan() || **v <= 0.0) {
                    // The first bad diagonal entry decides the kind.
                    return Verdict::must(&[if first.is_nan() {
                        "NonFinite"
                    } else if first == 0.0 {
                        "Singular"
                    } else {
                        "InvalidArgument"
                    }]);
                }
                Verdict::default()
            }
            Spec::ChoSolve => {
                let d: Vec<f64> = (0..n).map(|i| x[0][(i, i)]).collect();
                if d.contains(&0.0) {
                    return Verdict::must(&["Singular"]);
                }
                let mut v = Verdict::default();
                v.may.push("NonFinite");
                // A pivot whose reciprocal overflows: rejected as numerically singular.
                if d.iter().any(|p| !(1.0 / p.abs() < tmax)) {
                    v.may.push("IllConditioned");
                    v.rules_may.push("IllConditioned");
                }
                v
            }
            Spec::TriSolve { .. } => {
                let d: Vec<f64> = (0..n).map(|i| x[0][(i, i)]).collect();
                if d.contains(&0.0) {
                    return Verdict::must(&["Singular"]);
                }
                let mut v = Verdict::default();
                v.may.push("NonFinite");
                // A pivot whose reciprocal overflows: rejected as numerically singular.
                if d.iter().any(|p| !(1.0 / p.abs() < tmax)) {
                    v.may.push("IllConditioned");
                    v.rules_may.push("IllConditioned");
                }
                // A solution that overflows from finite L and B: rejected too.
                let overflow = self
                    .solve_ref(x)
                    .map_or(true, |s| !(linalg::max_abs(&s) < tmax * 1e-3));
                if fin(&x[1]) && overflow {
                    v.may.extend(["IllConditioned", "Overflow"]);
                }
                v
            }
            _ => Verdict::default(),
        }
    }

    /// The `f64` reference of the differentiable outputs at `x` (inputs rounded to the
    /// precision of the call), or `None` where the harness has none for these values.
    pub fn reference(&self, x: &[Array2<f64>]) -> Option<Ref> {
        let a = &x[0];
        let (m, n) = a.dim();
        let abs = |v: &Array2<f64>| v.mapv(f64::abs);
        let fin_all = x.iter().all(gen::finite);
        let plain = |y: Vec<Option<(Array2<f64>, Array2<f64>)>>| Ref {
            plain: Some(
                y.iter()
                    .map(|v| {
                        v.as_ref()
                            .map_or_else(|| Array2::zeros((0, 0)), |v| v.0.clone())
                    })
                    .collect(),
            ),
            y,
            finite: true,
            cond: 1.0,
        };
        let r = match self {
            Spec::Add => {
                let y = &x[0] + &x[1];
                plain(vec![same(y, abs(&x[0]) + abs(&x[1]))])
            }
            Spec::AddBias => {
                let y = &x[0] + &x[1];
                plain(vec![same(y, abs(&x[0]) + abs(&x[1]))])
            }
            Spec::Map(e) => {
                let y = a.mapv(|v| e.f(v));
                let b = abs(&y);
                plain(vec![same(y, b)])
            }
            Spec::Hadamard => {
                let y = &x[0] * &x[1];
                let b = abs(&y);
                plain(vec![same(y, b)])
            }
            Spec::Tril(k) => plain(vec![exact(naive::tril(a.view(), *k))]),
            Spec::Triu(k) => {
                let y = Array2::from_shape_fn((m, n), |(i, j)| {
                    if j as isize - i as isize >= *k {
                        a[(i, j)]
                    } else {
                        0.0
                    }
                });
                plain(vec![exact(y)])
            }
            Spec::Mask(keep) => {
                let y = Array2::from_shape_fn(
                    (m, n),
                    |(i, j)| if keep[(i, j)] { a[(i, j)] } else { 0.0 },
                );
                plain(vec![exact(y)])
            }
            Spec::Reshape(r, c, row) => {
                let flat: Vec<f64> = if *row {
                    a.iter().copied().collect()
                } else {
                    a.t().iter().copied().collect()
                };
                let y = if *row {
                    Array2::from_shape_vec((*r, *c), flat).ok()?
                } else {
                    Array2::from_shape_vec((*c, *r), flat).ok()?.t().to_owned()
                };
                plain(vec![exact(y)])
            }
            Spec::Vectorize => plain(vec![exact(naive::vec(a.view()))]),
            Spec::Unvec(r, c) => plain(vec![exact(naive::vec_backward(a.view(), *r, *c).ok()?)]),
            Spec::Transpose => plain(vec![exact(naive::transpose(a.view()))]),
            Spec::MatMul(ta, tb) => {
                let av = if *ta { a.t() } else { a.view() };
                let bv = if *tb { x[1].t() } else { x[1].view() };
                let k = av.ncols() as f64;
                let y = mm(av, bv);
                let b = mm_abs(av, bv) * k;
                plain(vec![same(y, b)])
            }
            Spec::Sum => {
                let s: f64 = a.sum();
                let b = abs(a).sum() * (a.len() as f64 + 1.0);
                plain(vec![same(scalar(s), scalar(b))])
            }
            Spec::Mean => {
                let len = a.len() as f64;
                let s: f64 = a.sum() / len;
                let b = abs(a).sum() / len * (len + 1.0);
                plain(vec![same(scalar(s), scalar(b))])
            }
            Spec::LogSumExp => {
                let mut y = Array2::zeros((1, n));
                let mut b = Array2::zeros((1, n));
                for j in 0..n {
                    let (mx, ls) = lse(a.column(j).iter().copied());
                    y[(0, j)] = mx + ls;
                    b[(0, j)] = (mx.abs() + (m as f64).ln() + 1.0) * (m as f64 + 1.0);
                }
                plain(vec![same(y, b)])
            }
            Spec::LogSoftmax => {
                let mut y = Array2::zeros((m, n));
                let mut b = Array2::zeros((m, n));
                for j in 0..n {
                    let (mx, ls) = lse(a.column(j).iter().copied());
                    for i in 0..m {
                        y[(i, j)] = (a[(i, j)] - mx) - ls;
                        b[(i, j)] = ((a[(i, j)] - mx).abs() + ls.abs() + 1.0) * (m as f64 + 1.0);
                    }
                }
                plain(vec![same(y, b)])
            }
            Spec::SoftmaxCe(labels) => {
                let (mut s, mut b) = (0.0, 0.0);
                for (j, &l) in labels.iter().enumerate() {
                    let (mx, ls) = lse(a.column(j).iter().copied());
                    s += (mx - a[(l, j)]) + ls;
                    b += ((mx - a[(l, j)]).abs() + ls.abs() + 1.0) * (m as f64 + 1.0);
                }
                let nn = n as f64;
                plain(vec![same(scalar(s / nn), scalar(b / nn * 2.0))])
            }
            Spec::Mse => {
                let d = &x[0] - &x[1];
                let len = d.len() as f64;
                let s = d.iter().map(|v| v * v).sum::<f64>() / len;
                let b = (abs(&x[0]) + abs(&x[1])).iter().map(|v| v * v).sum::<f64>() / len
                    * (len + 2.0);
                plain(vec![same(scalar(s), scalar(b))])
            }
            Spec::Frobenius => {
                let f = linalg::fro(a);
                plain(vec![same(scalar(f), scalar(f * (a.len() as f64 + 1.0)))])
            }
            Spec::Nuclear | Spec::Spectral => {
                let (_, s, _) = linalg::svd(a);
                let s1 = s.first().copied().unwrap_or(0.0);
                let v = if matches!(self, Spec::Nuclear) {
                    s.iter().sum()
                } else {
                    s1
                };
                let b = s1 * ((m + n) as f64 + 1.0) * (s.len() as f64 + 1.0);
                plain(vec![same(scalar(v), scalar(b))])
            }
            Spec::Trace => {
                let t: f64 = (0..n).map(|i| a[(i, i)]).sum();
                let b: f64 = (0..n).map(|i| a[(i, i)].abs()).sum::<f64>() * (n as f64 + 1.0);
                plain(vec![same(scalar(t), scalar(b))])
            }
            Spec::CholLogDet => {
                let t: f64 = (0..n).map(|i| 2.0 * a[(i, i)].ln()).sum();
                let b: f64 = (0..n)
                    .map(|i| 2.0 * a[(i, i)].ln().abs() + 2.0)
                    .sum::<f64>()
                    * (n as f64 + 1.0);
                plain(vec![same(scalar(t), scalar(b))])
            }
            // Solves and factorisations are checked by their residuals (run.rs).
            Spec::ChoSolve | Spec::TriSolve { .. } | Spec::Inverse | Spec::LuSolve(_) => {
                let k = match self {
                    Spec::ChoSolve => {
                        let l = linalg::lower_part(a);
                        linalg::cond(&mm(l.view(), l.t()))
                    }
                    Spec::TriSolve { lower, .. } => {
                        let t = if *lower {
                            linalg::lower_part(a)
                        } else {
                            linalg::upper_part(a)
                        };
                        linalg::cond(&t)
                    }
                    _ => linalg::cond(a),
                };
                let y = self.solve_ref(x)?;
                Ref {
                    finite: gen::finite(&y),
                    y: vec![None],
                    cond: k,
                    plain: Some(vec![y]),
                }
            }
            Spec::Cholesky { .. } => {
                let l = naive::cholesky::cholesky(a.view()).ok()?;
                let k = linalg::cond(&linalg::sym_from_lower(a));
                Ref {
                    y: vec![None],
                    finite: gen::finite(&l),
                    cond: k,
                    plain: Some(vec![l]),
                }
            }
            Spec::SymEig { .. } => {
                let s = linalg::sym_from_lower(a);
                let (lambda, v) = linalg::eigh(&s);
                let scale = lambda.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let l = Array2::from_shape_vec((n, 1), lambda.clone()).ok()?;
                let b = bound(&l, scale * (n as f64 + 1.0) * 4.0);
                let gap = min_gap(&lambda);
                Ref {
                    plain: Some(vec![l.clone(), v]),
                    y: vec![same(l, b), None],
                    finite: true,
                    cond: if gap > 0.0 {
                        scale / gap
                    } else {
                        f64::INFINITY
                    },
                }
            }
            Spec::Svd => {
                let (u, s, v) = linalg::svd(a);
                let k = s.len();
                let s1 = s.first().copied().unwrap_or(0.0);
                let sv = Array2::from_shape_vec((k, 1), s.clone()).ok()?;
                let b = bound(&sv, s1 * ((m + n) as f64 + 1.0) * 4.0);
                let mut gap = min_gap(&s);
                if m != n {
                    gap = gap.min(s.last().copied().unwrap_or(1.0));
                }
                Ref {
                    plain: Some(vec![u, sv.clone(), v]),
                    y: vec![None, same(sv, b), None],
                    finite: true,
                    cond: if gap > 0.0 { s1 / gap } else { f64::INFINITY },
                }
            }
            Spec::Expm => {
                let e = linalg::expm(a);
                let b = bound(
                    &e,
                    linalg::max_abs(&e) * (n as f64 + 1.0) * (1.0 + linalg::norm1(a)) * 8.0,
                );
                Ref {
                    plain: Some(vec![e.clone()]),
                    finite: gen::finite(&e),
                    y: vec![same(e, b)],
                    cond: 1.0 + linalg::norm1(a),
                }
            }
            Spec::MatPoly(c) => {
                // Powers of Â = 2ᵉA (near 1), cₖAᵏ = (cₖ2⁻ᵏᵉ)Âᵏ: A² of entries near
                // 10⁻³⁰³ underflows f64, while 10³⁰⁰·A² (≈ 10⁻³⁰⁶) is an ordinary term.
                let (ah, e) = pow2_scaled(a);
                let absa = abs(&ah);
                let mut y = Array2::zeros((n, n));
                let mut b = Array2::zeros((n, n));
                let mut p = linalg::eye(n);
                let mut pa = linalg::eye(n);
                for (k, &ck) in c.iter().enumerate() {
                    if k > 0 {
                        p = mm(p.view(), ah.view());
                        pa = mm(pa.view(), absa.view());
                    }
                    let ck = unscale(ck, k, e);
                    y = y + &p * ck;
                    b = b + &pa * (ck.abs() * (k as f64 + 1.0) * (n as f64 + 1.0));
                }
                let c_fin = c.iter().all(|v| v.is_finite());
                Ref {
                    plain: Some(vec![y.clone()]),
                    finite: c_fin && gen::finite(&y),
                    y: vec![same(y, b)],
                    cond: 1.0 + linalg::norm1(a) * c.len() as f64,
                }
            }
            Spec::Det => {
                let lu = linalg::lu(a);
                let d = lu.det();
                let k = linalg::cond(a);
                let hadamard: f64 = a
                    .rows()
                    .into_iter()
                    .map(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt())
                    .product();
                let b = (n as f64 + 1.0)
                    * (if k.is_finite() {
                        (k * d.abs()).min(hadamard)
                    } else {
                        hadamard
                    });
                Ref {
                    plain: Some(vec![scalar(d)]),
                    finite: d.is_finite(),
                    y: vec![same(scalar(d), scalar(b))],
                    cond: k,
                }
            }
            Spec::SlogDet => {
                // The f64 reference of a matrix of subnormal numbers factors 2ᵉA: in the
                // subnormal range elimination rounds to an absolute 5·10⁻³²⁴, which for
                // 4×4 entries near 10⁻³¹¹ moved log|det A| ≈ −2870 by 7·10⁻¹¹ (50 times
                // the allowed error; the library, which scales, was right to 10⁻¹²).
                let big = linalg::max_abs(a);
                let e = if big > 0.0 && big < f64::MIN_POSITIVE / f64::EPSILON {
                    -(big.log2().floor() as i32)
                } else {
                    0
                };
                let scaled = a.mapv(|v| v * 2f64.powi(e / 2) * 2f64.powi(e - e / 2));
                let shift = n as f64 * f64::from(e) * std::f64::consts::LN_2;
                let lu = linalg::lu(&scaled);
                let (s, l) = lu.slogdet();
                let l = l - shift;
                let k = linalg::cond(&scaled);
                let sure = k.is_finite() && !lu.singular;
                // The perturbation's effect, and the rounding of the sum of logarithms
                // itself: a relative ε in each term, however the terms are grouped
                // (a matrix factored at a power-of-two scale adds n·e·log 2 in one).
                let terms: f64 = lu
                    .lu
                    .diag()
                    .iter()
                    .map(|u| (u.abs().ln() - f64::from(e) * std::f64::consts::LN_2).abs())
                    .sum();
                let b = (n as f64 + 1.0) * k + terms;
                Ref {
                    plain: Some(vec![scalar(s), scalar(l)]),
                    finite: l.is_finite(),
                    y: vec![
                        if sure { exact(scalar(s)) } else { None },
                        if sure {
                            same(scalar(l), scalar(b))
                        } else {
                            None
                        },
                    ],
                    cond: k,
                }
            }
        };
        let mut r = r;
        r.finite &= fin_all;
        for y in r.y.iter().flatten() {
            r.finite &= gen::finite(&y.0);
        }
        Some(r)
    }

    /// `X` of the solves and `C = A⁻¹`, from scalar loops.
    pub fn solve_ref(&self, x: &[Array2<f64>]) -> Option<Array2<f64>> {
        let a = &x[0];
        match self {
            Spec::ChoSolve => {
                let l = linalg::lower_part(a);
                let y = linalg::tri_solve(&l, &x[1], true, false, true)?;
                linalg::tri_solve(&l, &y, true, true, true)
            }
            Spec::TriSolve { left, trans, lower } => {
                linalg::tri_solve(a, &x[1], *left, *trans, *lower)
            }
            Spec::Inverse => linalg::inverse(a),
            Spec::LuSolve(t) => {
                if *t {
                    linalg::lu(&a.t().to_owned()).solve(&x[1])
                } else {
                    linalg::lu(a).solve(&x[1])
                }
            }
            _ => None,
        }
    }
}

/// `(M, log s)` with `M = max v` and `s = Σ exp(v − M)`, so that
/// `log Σ exp(v) = M + log s` without the rounding of `M + log s`; `(−∞, 0)` for no
/// values.
fn lse(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let mx = v.clone().fold(f64::NEG_INFINITY, |m, x| {
        if x.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(x)
        }
    });
    if !mx.is_finite() {
        return (mx, 0.0);
    }
    let s: f64 = v.map(|x| (x - mx).exp()).sum();
    (mx, s.ln())
}

/// Smallest distance between two of the values.
pub fn min_gap(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(f64::INFINITY, f64::min)
}

/// A lower-triangular factor with a positive diagonal and junk above it.
fn lower_factor(s: Shape, rng: &mut StdRng) -> Array2<f64> {
    let mut l = randn(s.0, s.1, rng);
    for i in 0..s.0.min(s.1) {
        l[(i, i)] = 1.0 + l[(i, i)].abs();
    }
    l
}

/// `GGᵀ/n + I` in the lower triangle, junk above it.
fn spd(s: Shape, rng: &mut StdRng) -> Array2<f64> {
    let g = randn(s.0, s.1, rng);
    if s.0 != s.1 {
        return g;
    }
    let n = s.0;
    let mut a = mm(g.view(), g.t()) / n.max(1) as f64;
    for i in 0..n {
        a[(i, i)] += 1.0;
    }
    let junk = randn(n, n, rng);
    for i in 0..n {
        for j in i + 1..n {
            a[(i, j)] = junk[(i, j)];
        }
    }
    a
}

/// Cholesky of the lower triangle: must fail when a pivot is clearly negative, may fail
/// when one is small.
fn chol_verdict(a: &Array2<f64>, eps: f64) -> Verdict {
    let n = a.nrows();
    let scale = (0..n).map(|i| a[(i, i)].abs()).fold(0.0f64, f64::max);
    let mut l = Array2::<f64>::zeros((n, n));
    let mut v = Verdict::default();
    let tol = 1e3 * (n as f64 + 1.0) * eps * scale;
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[(i, j)];
            for k in 0..j {
                s -= l[(i, k)] * l[(j, k)];
            }
            if i == j {
                if s <= -tol {
                    return Verdict::must(&["NotPositiveDefinite"]);
                }
                if s <= tol || !s.is_finite() {
                    v.may.push("NotPositiveDefinite");
                    return v;
                }
                l[(i, i)] = s.sqrt();
            } else {
                l[(i, j)] = s / l[(j, j)];
            }
        }
    }
    if !gen::finite(&l) {
        v.may.push("NotPositiveDefinite");
    }
    v
}

impl Elem {
    /// `g'(x)` in `f64`.
    fn df(self, x: f64) -> f64 {
        match self {
            Elem::Tanh => 1.0 - x.tanh() * x.tanh(),
            Elem::Sigmoid => sigmoid(x) * (1.0 - sigmoid(x)),
            Elem::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Elem::Exp => x.exp(),
            Elem::Log => 1.0 / x,
            Elem::Sin => x.cos(),
            Elem::Cos => -x.sin(),
            Elem::Square => 2.0 * x,
            Elem::Softplus => sigmoid(x),
        }
    }
}

/// A reference gradient: per input, the value and the bound of its rounding error.
pub type Grads = Vec<(Array2<f64>, Array2<f64>)>;

impl Spec {
    /// Whether the primitive is differentiable with a moderate second derivative around
    /// `x`, so that finite differences of the reference are a fair check of the JVP.
    pub fn smooth(&self, x: &[Array2<f64>], r: &Ref) -> bool {
        let a = &x[0];
        let rel_gap = |s: &[f64]| {
            let scale = s.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            scale > 0.0 && min_gap(s) > 1e-3 * scale
        };
        match self {
            Spec::Map(Elem::Relu) => a.iter().all(|v| v.abs() > 1e-3),
            Spec::Map(Elem::Log) => a.iter().all(|&v| v > 1e-2),
            Spec::Frobenius => linalg::max_abs(a) > 1e-3,
            Spec::CholLogDet => (0..a.nrows()).all(|i| a[(i, i)] > 1e-2),
            Spec::SymEig { .. } => {
                let (l, v) = linalg::eigh(&linalg::sym_from_lower(a));
                rel_gap(&l) && linalg::sign_margin(&v) > 1e-3
            }
            Spec::Svd | Spec::Nuclear | Spec::Spectral => {
                let (u, s, _) = linalg::svd(a);
                let s1 = s.first().copied().unwrap_or(0.0);
                let last = s.last().copied().unwrap_or(0.0);
                match self {
                    Spec::Svd => {
                        rel_gap(&s) && last > 1e-3 * s1 && linalg::sign_margin(&u) > 1e-3
                            || s.is_empty()
                    }
                    Spec::Nuclear => last > 1e-3 * s1 || s.is_empty(),
                    _ => s.len() < 2 || s[0] - s[1] > 1e-3 * s1,
                }
            }
            Spec::Cholesky { .. } => chol_verdict(a, 1e-8).may.is_empty() && r.cond < 1e6,
            _ => true,
        }
    }

    /// The reverse rule by scalar loops, for the primitives whose rule is a formula in
    /// the inputs and the cotangent (`None` cotangents are zero); `None` for the others.
    /// `p_floor`: the absolute error of a probability the primitive computed in its own
    /// precision, `MIN_POSITIVE` of that precision (below it the probability underflows),
    /// in the units of the bounds (which the comparison multiplies by `C·ε`).
    pub fn vjp_ref(
        &self,
        x: &[Array2<f64>],
        ybar: &[Option<Array2<f64>>],
        p_floor: f64,
    ) -> Option<Grads> {
        let a = &x[0];
        let (m, n) = a.dim();
        let zero_like = |s: (usize, usize)| Array2::<f64>::zeros(s);
        let out_shape = |s: Shape| (s.0, s.1);
        let shapes: Vec<Shape> = x.iter().map(|v| Shape(v.nrows(), v.ncols())).collect();
        let ys = self.expect(&shapes).ok()?;
        let cb = ybar[0]
            .clone()
            .unwrap_or_else(|| zero_like(out_shape(ys[0])));
        let abs = |v: &Array2<f64>| v.mapv(f64::abs);
        let exact = |v: Array2<f64>| {
            let z = Array2::zeros(v.raw_dim());
            (v, z)
        };
        let c0 = cb.get((0, 0)).copied().unwrap_or(0.0);
        Some(match self {
            Spec::Add => vec![exact(cb.clone()), exact(cb)],
            Spec::AddBias => {
                let b: Array2<f64> = cb.sum_axis(ndarray::Axis(1)).insert_axis(ndarray::Axis(1));
                let bb = abs(&cb)
                    .sum_axis(ndarray::Axis(1))
                    .insert_axis(ndarray::Axis(1))
                    * (n as f64 + 1.0);
                vec![exact(cb), (b, bb)]
            }
            Spec::Map(e) => {
                let d = a.mapv(|v| e.df(v));
                let g = &d * &cb;
                let b = abs(&cb) * (d.mapv(f64::abs) + 1.0) * 4.0;
                vec![(g, b)]
            }
            Spec::Hadamard => {
                let ga = &cb * &x[1];
                let gb = &cb * &x[0];
                let (ba, bb) = (abs(&ga), abs(&gb));
                vec![(ga, ba), (gb, bb)]
            }
            Spec::Tril(k) => vec![exact(naive::tril(cb.view(), *k))],
            Spec::Triu(k) => vec![exact(Array2::from_shape_fn((m, n), |(i, j)| {
                if j as isize - i as isize >= *k {
                    cb[(i, j)]
                } else {
                    0.0
                }
            }))],
            Spec::Mask(keep) => vec![exact(Array2::from_shape_fn((m, n), |(i, j)| {
                if keep[(i, j)] {
                    cb[(i, j)]
                } else {
                    0.0
                }
            }))],
            Spec::Reshape(_, _, row) => {
                let flat: Vec<f64> = if *row {
                    cb.iter().copied().collect()
                } else {
                    cb.t().iter().copied().collect()
                };
                let g = if *row {
                    Array2::from_shape_vec((m, n), flat).ok()?
                } else {
                    Array2::from_shape_vec((n, m), flat).ok()?.t().to_owned()
                };
                vec![exact(g)]
            }
            Spec::Vectorize => vec![exact(naive::vec_backward(cb.view(), m, n).ok()?)],
            Spec::Unvec(..) => vec![exact(naive::vec(cb.view()))],
            Spec::Transpose => vec![exact(naive::transpose(cb.view()))],
            Spec::MatMul(ta, tb) => {
                let av = if *ta { a.t() } else { a.view() };
                let bv = if *tb { x[1].t() } else { x[1].view() };
                let k = av.ncols() as f64 + 1.0;
                let (ga, gb) = naive::matmul_backward(av, bv, cb.view()).ok()?;
                let ba = linalg::mm_abs(cb.view(), bv.t()) * k;
                let bb = linalg::mm_abs(av.t(), cb.view()) * (av.nrows() as f64 + 1.0);
                let t = |v: Array2<f64>, yes: bool| if yes { v.t().to_owned() } else { v };
                vec![(t(ga, *ta), t(ba, *ta)), (t(gb, *tb), t(bb, *tb))]
            }
            Spec::Sum => vec![exact(Array2::from_elem((m, n), c0))],
            Spec::Mean => {
                let v = c0 / (m * n) as f64;
                vec![(
                    Array2::from_elem((m, n), v),
                    Array2::from_elem((m, n), v.abs() * 2.0),
                )]
            }
            Spec::Trace => vec![exact(Array2::from_shape_fn((m, n), |(i, j)| {
                if i == j {
                    c0
                } else {
                    0.0
                }
            }))],
            Spec::Frobenius => {
                if linalg::fro(a) == 0.0 {
                    vec![exact(Array2::zeros((m, n)))]
                } else {
                    // A/‖A‖ does not change with the scale of A: taken where A's entries
                    // are exactly scaled near 1, so that neither a subnormal ‖A‖ nor a
                    // subnormal product c̄·Aᵢⱼ loses bits of the reference.
                    let k = -(linalg::max_abs(a).log2().floor() as i32);
                    let a = a.mapv(|v| v * 2f64.powi(k / 2) * 2f64.powi(k - k / 2));
                    let f = linalg::fro(&a);
                    let g = a.mapv(|v| c0 * (v / f));
                    let b = abs(&g) * 4.0;
                    vec![(g, b)]
                }
            }
            Spec::Mse => {
                let len = (m * n) as f64;
                let g = (&x[0] - &x[1]).mapv(|v| 2.0 * c0 * v / len);
                let b = (abs(&x[0]) + abs(&x[1])).mapv(|v| 2.0 * c0.abs() * v / len * 4.0);
                vec![(g.clone(), b.clone()), (-g, b)]
            }
            Spec::CholLogDet => {
                let g =
                    Array2::from_shape_fn(
                        (m, n),
                        |(i, j)| if i == j { 2.0 * c0 / a[(i, i)] } else { 0.0 },
                    );
                let b = abs(&g) * 4.0;
                vec![(g, b)]
            }
            Spec::LogSumExp | Spec::LogSoftmax | Spec::SoftmaxCe(_) => {
                let mut g = Array2::zeros((m, n));
                let mut b = Array2::zeros((m, n));
                for j in 0..n {
                    let (mx, ls) = lse(a.column(j).iter().copied());
                    let p: Vec<f64> = (0..m).map(|i| ((a[(i, j)] - mx) - ls).exp()).collect();
                    let width = |i: usize| (m as f64 + 2.0 + a[(i, j)].abs() + mx.abs()) * 2.0;
                    match self {
                        Spec::LogSumExp => {
                            // c̄ⱼ·pᵢ as (e^(d/2)·c̄ⱼ)·e^(d/2), d = log pᵢ: pᵢ alone underflows
                            // f64 (e⁻⁸⁰⁰) where c̄ⱼ·pᵢ (with c̄ⱼ ≈ 10³⁰⁰) does not.
                            for i in 0..m {
                                let h = (((a[(i, j)] - mx) - ls) / 2.0).exp();
                                g[(i, j)] = h * cb[(0, j)] * h;
                                b[(i, j)] = g[(i, j)].abs() * width(i);
                            }
                        }
                        Spec::LogSoftmax => {
                            let s: f64 = cb.column(j).sum();
                            let sa: f64 = cb.column(j).iter().map(|v| v.abs()).sum();
                            for i in 0..m {
                                g[(i, j)] = cb[(i, j)] - p[i] * s;
                                b[(i, j)] = cb[(i, j)].abs() + p[i] * sa * width(i);
                            }
                        }
                        Spec::SoftmaxCe(labels) => {
                            // The rule reads the softmax P it saved in its own precision,
                            // where a pᵢ below MIN_POSITIVE has underflowed (to 0 or a
                            // subnormal): an absolute error of MIN_POSITIVE in pᵢ, hence
                            // |k|·MIN_POSITIVE in the gradient, tiny next to its largest
                            // entry (|k|·(1 − p) for the label) but not next to k·pᵢ
                            // itself when |k| is huge.
                            let k = c0 / n as f64;
                            for i in 0..m {
                                let y = if labels[j] == i { 1.0 } else { 0.0 };
                                g[(i, j)] = k * (p[i] - y);
                                b[(i, j)] = k.abs() * (p[i] * width(i) + y + p_floor);
                            }
                        }
                        _ => unreachable!(),
                    }
                }
                vec![(g, b)]
            }
            _ => return None,
        })
    }
}
