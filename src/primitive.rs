//! The rule interface: what an implementor writes ([`Rule`]) and what everyone calls
//! ([`Primitive`]), so that the checker, the typed layer and a tape can drive any
//! primitive, the crate's own and those defined in other crates, of any arity and with
//! any number of outputs.
//!
//! A [`Rule`] states its math once, on shapes that are already validated: a shape rule
//! (output shapes from input shapes), a forward pass that writes into the caller's
//! buffers, one reverse rule that per input skips it, writes the gradient without
//! reading the buffer, or adds into it ([`Grad`]), and one forward-mode rule. It also
//! says what its reverse rule reads ([`Saves`]) and how much scratch it needs
//! ([`Rule::workspace`]). Its forward pass may hand the other two values that are not
//! differentiable outputs (a factorization to reuse): [`Rule::residuals`].
//!
//! [`Primitive`] is implemented for every `Rule`. Its methods check arities and every
//! shape against the shape rule (inputs, outputs, cotangents, tangents, gradient and
//! output buffers, workspace) and then call the rule; the allocating forms
//! (`forward`, `backward`, `jvp`) are built on the writing ones.

use crate::error::{shape_of, Error, Result, Shape};
use crate::Real;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, ShapeBuilder};
use smallvec::SmallVec;

/// The output shapes a shape rule returns; up to four live inline, without allocation.
pub type Shapes = SmallVec<[Shape; 4]>;

/// What perturbations of an input are meaningful, so that the checker respects it.
///
/// A rule whose forward pass reads only part of an input (Cholesky reads the lower
/// triangle) has a gradient defined only on that part: the checker must perturb only
/// there, or a correct rule fails (`docs/math.md`, on the two Cholesky conventions).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, Default)]
pub enum Structure {
    /// Any entry may change independently.
    #[default]
    General,
    /// Perturbations are symmetric, `U = Uᵀ`; the gradient should be symmetric too.
    Symmetric,
    /// Only the lower triangle (with the diagonal) is an input; the gradient's strict
    /// upper triangle should be zero.
    LowerTriangular,
}

impl Structure {
    /// Whether entry `(i, j)` is an independent input under this structure: every entry
    /// for `General`, the lower triangle with the diagonal for `Symmetric` (the upper
    /// one mirrors it) and `LowerTriangular`. These are the entries a rule reads.
    pub fn independent(self, i: usize, j: usize) -> bool {
        match self {
            Structure::General => true,
            Structure::Symmetric | Structure::LowerTriangular => j <= i,
        }
    }
    /// Projects a matrix onto this structure, in place: the orthogonal projection
    /// `(U + Uᵀ)/2` for `Symmetric`, masking the strict upper triangle for
    /// `LowerTriangular`. A rule on a structured input projects its gradient with it.
    pub fn project_in_place<T: Real>(self, mut u: ArrayViewMut2<'_, T>) {
        match self {
            Structure::General => {}
            Structure::Symmetric => {
                let n = u.nrows().min(u.ncols());
                let half = T::of(0.5);
                for i in 0..n {
                    for j in 0..i {
                        let s = (u[(i, j)] + u[(j, i)]) * half;
                        u[(i, j)] = s;
                        u[(j, i)] = s;
                    }
                }
            }
            Structure::LowerTriangular => crate::blas::Uplo::Lower.zero_outside(u),
        }
    }
    /// [`Structure::project_in_place`] on an owned matrix.
    pub fn project<T: Real>(self, mut u: Array2<T>) -> Array2<T> {
        self.project_in_place(u.view_mut());
        u
    }
}

/// A pass of a rule, for [`Rule::pass_workspace`].
#[derive(Clone, Copy, Debug)]
pub enum Pass<'p, 'a, T> {
    /// The forward pass, [`Rule::eval`].
    Eval,
    /// The reverse pass, [`Rule::pullback`], with the gradient buffers it is given.
    Pullback(&'p [Grad<'a, T>]),
    /// Forward mode, [`Rule::pushforward`].
    Pushforward,
}

/// Where the reverse rule puts the gradient of one input.
#[derive(Debug)]
pub enum Grad<'a, T> {
    /// The gradient of this input is not wanted: no work is done for it.
    Skip,
    /// First writer: the gradient replaces the buffer's contents, which are never read
    /// (no zero fill needed; NaN there is harmless).
    Write(ArrayViewMut2<'a, T>),
    /// Later writers: the gradient is added to the buffer (GEMM with beta = 1).
    Add(ArrayViewMut2<'a, T>),
}

impl<'a, T> Grad<'a, T> {
    /// A buffer with an accumulation mode: `Write` for [`crate::Accum::Replace`], `Add`
    /// for [`crate::Accum::Add`].
    pub fn new(buf: ArrayViewMut2<'a, T>, accum: crate::Accum) -> Self {
        match accum {
            crate::Accum::Replace => Grad::Write(buf),
            crate::Accum::Add => Grad::Add(buf),
        }
    }
    /// `Add` for `Some`, `Skip` for `None`.
    pub fn add(buf: Option<ArrayViewMut2<'a, T>>) -> Self {
        buf.map_or(Grad::Skip, Grad::Add)
    }
    /// Whether this gradient is wanted.
    pub fn wanted(&self) -> bool {
        !matches!(self, Grad::Skip)
    }
    /// The buffer and its mode, reborrowed, or `None` to skip.
    pub fn target(&mut self) -> Option<(ArrayViewMut2<'_, T>, crate::Accum)> {
        match self {
            Grad::Skip => None,
            Grad::Write(b) => Some((b.view_mut(), crate::Accum::Replace)),
            Grad::Add(b) => Some((b.view_mut(), crate::Accum::Add)),
        }
    }
    fn shape(&self) -> Option<Shape> {
        match self {
            Grad::Skip => None,
            Grad::Write(b) | Grad::Add(b) => Some(shape_of(b)),
        }
    }
}

/// Which inputs and outputs a reverse rule reads, so that a caller keeps only those.
///
/// A value that is not saved reaches the rule as a placeholder of the right shape whose
/// entries are not to be read; the checker fills it with NaN to prove the declaration.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Saves {
    inputs: u64,
    outputs: u64,
}

impl Saves {
    /// Reads nothing (sums, masks, rearrangements).
    pub const NONE: Saves = Saves {
        inputs: 0,
        outputs: 0,
    };
    /// Reads everything: the safe default.
    pub const ALL: Saves = Saves {
        inputs: u64::MAX,
        outputs: u64::MAX,
    };
    /// This declaration, plus input `i` (`i < 64`).
    pub const fn input(self, i: usize) -> Saves {
        Saves {
            inputs: self.inputs | (1u64 << (i % 64)),
            ..self
        }
    }
    /// This declaration, plus output `k` (`k < 64`).
    pub const fn output(self, k: usize) -> Saves {
        Saves {
            outputs: self.outputs | (1u64 << (k % 64)),
            ..self
        }
    }
    /// Whether the reverse rule reads input `i`.
    pub fn reads_input(&self, i: usize) -> bool {
        i < 64 && self.inputs & (1u64 << i) != 0
    }
    /// Whether the reverse rule reads output `k`.
    pub fn reads_output(&self, k: usize) -> bool {
        k < 64 && self.outputs & (1u64 << k) != 0
    }
}

/// Cotangents of the outputs (reverse mode) or tangents of the inputs (forward mode),
/// one per slot, where a missing one means zero.
///
/// [`Partials::get`] tells a rule it may skip the work of a missing slot;
/// [`Partials::view`] gives every slot as a view, a missing one as a zero matrix of the
/// right shape that costs no memory.
pub struct Partials<'s, 'a, T> {
    given: &'s [Option<ArrayView2<'a, T>>],
    shapes: &'s [Shape],
    zero: T,
}

impl<'s, 'a, T: Real> Partials<'s, 'a, T> {
    /// Wraps slots whose shapes have been checked against `shapes`.
    pub(crate) fn new(given: &'s [Option<ArrayView2<'a, T>>], shapes: &'s [Shape]) -> Self {
        Partials {
            given,
            shapes,
            zero: T::zero(),
        }
    }
    /// Number of slots.
    pub fn len(&self) -> usize {
        self.given.len()
    }
    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.given.is_empty()
    }
    /// Slot `k`, or `None` when it is zero.
    pub fn get(&self, k: usize) -> Option<ArrayView2<'_, T>> {
        self.given.get(k).and_then(|g| g.as_ref().map(|v| v.view()))
    }
    /// Slot `k` as a view; a missing slot is a zero matrix of its shape (a broadcast of
    /// one zero, no allocation).
    pub fn view(&self, k: usize) -> ArrayView2<'_, T> {
        match self.get(k) {
            Some(v) => v,
            None => {
                let s = self.shapes.get(k).copied().unwrap_or(Shape(0, 0));
                broadcast(&self.zero, s)
            }
        }
    }
}

/// `value` broadcast to `shape` with zero strides: a read-only matrix of one value.
pub(crate) fn broadcast<T>(value: &T, shape: Shape) -> ArrayView2<'_, T> {
    ArrayView2::from_shape(
        (shape.0, shape.1).strides((0, 0)),
        std::slice::from_ref(value),
    )
    .unwrap_or_else(|_| ArrayView2::from_shape((0, 0), &[]).unwrap_or_else(|_| unreachable!()))
}

const INPUT_NAMES: [&str; 6] = ["A", "B", "D", "E", "F", "G"];
const OUTPUT_NAMES: [&str; 6] = ["C", "C1", "C2", "C3", "C4", "C5"];
const RESIDUAL_NAMES: [&str; 6] = ["R0", "R1", "R2", "R3", "R4", "R5"];

/// What an implementor writes: the math of one primitive `(Y₀, …) = f(X₀, …)` on 2-D
/// arrays, stated once, on shapes that [`Primitive`] has already validated.
///
/// Vectors are `n×1` columns and scalars `1×1`. Notation as in `docs/math.md`: `C̄`
/// is a cotangent, `Ċ` a tangent. See `docs/adding-a-primitive.md` for a walk-through.
pub trait Rule<T: Real> {
    /// Name used in reports and errors.
    fn name(&self) -> &'static str;
    /// Number of inputs.
    fn arity(&self) -> usize;
    /// Number of differentiable outputs (1 unless overridden).
    fn outputs(&self) -> usize {
        1
    }
    /// Number of residual outputs (0 unless overridden): values [`Rule::eval`] computes
    /// only for the rules' use, such as the LU factors and pivots a determinant's or an
    /// LU solve's reverse pass reuses instead of refactoring.
    ///
    /// They come after the [`Rule::outputs`] differentiable outputs: in
    /// [`Rule::shapes`], in `eval`'s `y`, and in the `y` that [`Rule::pullback`] and
    /// [`Rule::pushforward`] receive. They take no cotangent and no tangent and are not
    /// differentiated (the checker does not compare them with finite differences).
    /// [`Rule::saves`] may declare them, residual `j` as output `outputs() + j`.
    fn residuals(&self) -> usize {
        0
    }
    /// Name of input `i` in reports and errors; the default is `A`, `B`, `D`, … (`C`
    /// is the output), then `X`.
    fn input_name(&self, i: usize) -> &'static str {
        INPUT_NAMES.get(i).copied().unwrap_or("X")
    }
    /// Name of output `k`; the default is `C`, then `C1`, `C2`, … for the
    /// differentiable outputs, and `R0`, `R1`, … for the residuals that follow them.
    fn output_name(&self, k: usize) -> &'static str {
        match k.checked_sub(self.outputs()) {
            None => OUTPUT_NAMES.get(k).copied().unwrap_or("Y"),
            Some(j) => RESIDUAL_NAMES.get(j).copied().unwrap_or("R"),
        }
    }
    /// Structure of input `i`; the default is [`Structure::General`].
    fn structure(&self, _i: usize) -> Structure {
        Structure::General
    }
    /// The shape rule: the output shapes for these input shapes (as many as
    /// [`Rule::outputs`] plus [`Rule::residuals`], the residuals last), or the error
    /// naming what does not fit. The only shape check a rule writes.
    fn shapes(&self, inputs: &[Shape]) -> Result<Shapes>;
    /// What [`Rule::pullback`] reads when the gradients marked in `wanted` (one flag
    /// per input) are asked for. The default, everything, is always safe.
    fn saves(&self, _wanted: &[bool]) -> Saves {
        Saves::ALL
    }
    /// Elements of scratch space the three passes need at these input shapes (0 unless
    /// overridden). A caller may pass it in, so that repeated calls allocate nothing.
    fn workspace(&self, _inputs: &[Shape]) -> usize {
        0
    }
    /// Elements of scratch space one pass uses at these input shapes, at most
    /// [`Rule::workspace`]: the size of the workspace the library allocates for that
    /// pass when the caller passes none. A rule that needs its workspace only in some
    /// passes, or only for some gradient buffers (say, not when it works in place in a
    /// first-write buffer), says so here, and a large workspace it would not touch is
    /// never allocated. Default: all of [`Rule::workspace`].
    fn pass_workspace(&self, inputs: &[Shape], _pass: Pass<'_, '_, T>) -> usize {
        self.workspace(inputs)
    }
    /// Forward pass: writes every output, residuals included, into `y`, whose previous
    /// contents it must not read.
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()>;
    /// Reverse mode: for each input whose [`Grad`] is not `Skip`, writes or adds
    /// `X̄ᵢ = Σₖ (∂Yₖ/∂Xᵢ)ᵀ Ȳₖ`. `y` holds every output, residuals included; `ybar` one
    /// slot per differentiable output, at least one given. Inputs and outputs not
    /// declared in [`Rule::saves`] are placeholders that must not be read.
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        ws: &mut [T],
    ) -> Result<()>;
    /// Forward mode: writes `Ẏₖ = Σᵢ (∂Yₖ/∂Xᵢ) Ẋᵢ` into `ydot` (one per differentiable
    /// output), whose previous contents it must not read; `y` holds every output,
    /// residuals included; `xdot` has at least one slot given.
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        ws: &mut [T],
    ) -> Result<()>;
}

/// Forwards every method of [`Rule`] through a pointer type.
macro_rules! forward_rule {
    ($(#[$doc:meta])* $ptr:ty) => {
        $(#[$doc])*
        impl<T: Real, R: Rule<T> + ?Sized> Rule<T> for $ptr {
            fn name(&self) -> &'static str {
                (**self).name()
            }
            fn arity(&self) -> usize {
                (**self).arity()
            }
            fn outputs(&self) -> usize {
                (**self).outputs()
            }
            fn residuals(&self) -> usize {
                (**self).residuals()
            }
            fn input_name(&self, i: usize) -> &'static str {
                (**self).input_name(i)
            }
            fn output_name(&self, k: usize) -> &'static str {
                (**self).output_name(k)
            }
            fn structure(&self, i: usize) -> Structure {
                (**self).structure(i)
            }
            fn shapes(&self, inputs: &[Shape]) -> Result<Shapes> {
                (**self).shapes(inputs)
            }
            fn saves(&self, wanted: &[bool]) -> Saves {
                (**self).saves(wanted)
            }
            fn workspace(&self, inputs: &[Shape]) -> usize {
                (**self).workspace(inputs)
            }
            fn pass_workspace(&self, inputs: &[Shape], pass: Pass<'_, '_, T>) -> usize {
                (**self).pass_workspace(inputs, pass)
            }
            fn eval(
                &self,
                x: &[ArrayView2<'_, T>],
                y: &mut [ArrayViewMut2<'_, T>],
                ws: &mut [T],
            ) -> Result<()> {
                (**self).eval(x, y, ws)
            }
            fn pullback(
                &self,
                x: &[ArrayView2<'_, T>],
                y: &[ArrayView2<'_, T>],
                ybar: &Partials<'_, '_, T>,
                grads: &mut [Grad<'_, T>],
                ws: &mut [T],
            ) -> Result<()> {
                (**self).pullback(x, y, ybar, grads, ws)
            }
            fn pushforward(
                &self,
                x: &[ArrayView2<'_, T>],
                y: &[ArrayView2<'_, T>],
                xdot: &Partials<'_, '_, T>,
                ydot: &mut [ArrayViewMut2<'_, T>],
                ws: &mut [T],
            ) -> Result<()> {
                (**self).pushforward(x, y, xdot, ydot, ws)
            }
        }
    };
}

forward_rule!(
    /// A reference to a rule is the same rule, so that one holding data is used
    /// without a copy.
    &R
);
forward_rule!(
    /// A boxed rule is the rule, so that a list of different primitives can be kept.
    Box<R>
);

mod sealed {
    pub trait Sealed<T> {}
    impl<T, R: super::Rule<T> + ?Sized> Sealed<T> for R where T: crate::Real {}
}

pub(crate) type InShapes = SmallVec<[Shape; 4]>;

/// What everyone calls: every method validates arities and shapes against the rule's
/// shape rule once, then runs the rule. Implemented for every [`Rule`] (and sealed:
/// implement `Rule`, never this).
pub trait Primitive<T: Real>: Rule<T> + sealed::Sealed<T> {
    /// The output shapes for these inputs, after checking their number: the
    /// differentiable outputs, then the residuals.
    fn output_shapes(&self, x: &[ArrayView2<'_, T>]) -> Result<Shapes> {
        Ok(validate_inputs(self, x)?.1)
    }

    /// Forward pass into caller-owned output buffers, one per output, residuals included
    /// (previous contents not read), with an optional caller-owned workspace of at
    /// least [`Rule::workspace`] elements.
    fn forward_into(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        ws: Option<&mut [T]>,
    ) -> Result<()> {
        let (xs, ys) = validate_inputs(self, x)?;
        expect_count(self.name(), "output buffers", ys.len(), y.len())?;
        for (k, (b, &s)) in y.iter().zip(&ys).enumerate() {
            expect(
                self.name(),
                "output buffer",
                self.output_name(k),
                s,
                shape_of(b),
            )?;
        }
        with_workspace(self, &xs, ws, self.pass_workspace(&xs, Pass::Eval), |ws| {
            self.eval(x, y, ws)
        })
    }

    /// Forward pass into new arrays, one per output, residuals included (last).
    fn forward(&self, x: &[ArrayView2<'_, T>]) -> Result<Vec<Array2<T>>> {
        let (xs, ys) = validate_inputs(self, x)?;
        let mut out = alloc_all(self.name(), &ys)?;
        let mut views: SmallVec<[ArrayViewMut2<'_, T>; 4]> =
            out.iter_mut().map(|o| o.view_mut()).collect();
        with_workspace(
            self,
            &xs,
            None,
            self.pass_workspace(&xs, Pass::Eval),
            |ws| self.eval(x, &mut views, ws),
        )?;
        drop(views);
        Ok(out)
    }

    /// Reverse mode into caller-owned buffers: per input, skip, first write (the
    /// buffer is not read) or add, as each [`Grad`] says. `y` are the outputs of the
    /// forward pass, residuals included (placeholders of the right shape where
    /// [`Rule::saves`] allows), `ybar` one cotangent per differentiable output, `None`
    /// meaning zero.
    fn backward_into(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &[Option<ArrayView2<'_, T>>],
        grads: &mut [Grad<'_, T>],
        ws: Option<&mut [T]>,
    ) -> Result<()> {
        let name = self.name();
        let (xs, ys) = validate_inputs(self, x)?;
        let m = self.outputs();
        expect_count(name, "outputs", ys.len(), y.len())?;
        expect_count(name, "cotangents", m, ybar.len())?;
        expect_count(name, "gradient buffers", xs.len(), grads.len())?;
        for (k, (v, &s)) in y.iter().zip(&ys).enumerate() {
            expect(name, "output", self.output_name(k), s, shape_of(v))?;
        }
        for (k, (v, &s)) in ybar.iter().zip(&ys).enumerate() {
            if let Some(v) = v {
                expect(name, "cotangent", self.output_name(k), s, shape_of(v))?;
            }
        }
        for (i, (g, &s)) in grads.iter().zip(&xs).enumerate() {
            if let Some(gs) = g.shape() {
                expect(name, "gradient buffer", self.input_name(i), s, gs)?;
            }
        }
        run_pullback(self, &xs, &ys[..m], x, y, ybar, grads, ws)
    }

    /// Reverse mode into new arrays, one gradient per input (first write, no zero fill
    /// read). `y` holds every output, residuals included; `ybar` one cotangent per
    /// differentiable output, `None` meaning zero.
    fn backward(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &[Option<ArrayView2<'_, T>>],
    ) -> Result<Vec<Array2<T>>> {
        let xs = validate_inputs(self, x)?.0;
        let mut out = alloc_all(self.name(), &xs)?;
        let mut grads: SmallVec<[Grad<'_, T>; 4]> =
            out.iter_mut().map(|o| Grad::Write(o.view_mut())).collect();
        self.backward_into(x, y, ybar, &mut grads, None)?;
        drop(grads);
        Ok(out)
    }

    /// Accumulating reverse mode: `X̄ᵢ += …` into each `Some` buffer, `None` skips that
    /// input.
    fn backward_add(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        ybar: &[Option<ArrayView2<'_, T>>],
        grads: &mut [Option<ArrayViewMut2<'_, T>>],
    ) -> Result<()> {
        let mut g: SmallVec<[Grad<'_, T>; 4]> = grads
            .iter_mut()
            .map(|b| Grad::add(b.as_mut().map(|b| b.view_mut())))
            .collect();
        self.backward_into(x, y, ybar, &mut g, None)
    }

    /// Forward mode into caller-owned buffers (previous contents not read): `Ẏₖ` for
    /// each differentiable output, for the input tangents `xdot`, `None` meaning zero.
    /// `y` holds every output, residuals included.
    fn jvp_into(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &[Option<ArrayView2<'_, T>>],
        ydot: &mut [ArrayViewMut2<'_, T>],
        ws: Option<&mut [T]>,
    ) -> Result<()> {
        let name = self.name();
        let (xs, ys) = validate_inputs(self, x)?;
        expect_count(name, "outputs", ys.len(), y.len())?;
        expect_count(name, "tangents", xs.len(), xdot.len())?;
        expect_count(name, "tangent buffers", self.outputs(), ydot.len())?;
        for (k, (v, &s)) in y.iter().zip(&ys).enumerate() {
            expect(name, "output", self.output_name(k), s, shape_of(v))?;
        }
        for (i, (v, &s)) in xdot.iter().zip(&xs).enumerate() {
            if let Some(v) = v {
                expect(name, "tangent", self.input_name(i), s, shape_of(v))?;
            }
        }
        for (k, (v, &s)) in ydot.iter().zip(&ys).enumerate() {
            expect(name, "tangent buffer", self.output_name(k), s, shape_of(v))?;
        }
        check_workspace(self, &xs, ws.as_deref())?;
        // A tangent that is entirely zero is a missing one: its contribution is zero
        // whatever the rule's intermediate values (∞·0 would be NaN).
        let xdot: Slots<'_, T> = xdot.iter().map(nonzero).collect();
        if xdot.iter().all(Option::is_none) {
            for d in ydot.iter_mut() {
                d.fill(T::zero());
            }
            return Ok(());
        }
        let partials = Partials::new(&xdot, &xs);
        with_workspace(
            self,
            &xs,
            ws,
            self.pass_workspace(&xs, Pass::Pushforward),
            |ws| self.pushforward(x, y, &partials, ydot, ws),
        )
    }

    /// Forward mode into new arrays, one tangent per differentiable output.
    fn jvp(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &[ArrayView2<'_, T>],
        xdot: &[Option<ArrayView2<'_, T>>],
    ) -> Result<Vec<Array2<T>>> {
        let ys = validate_inputs(self, x)?.1;
        let mut out = alloc_all(self.name(), &ys[..self.outputs()])?;
        let mut views: SmallVec<[ArrayViewMut2<'_, T>; 4]> =
            out.iter_mut().map(|o| o.view_mut()).collect();
        self.jvp_into(x, y, xdot, &mut views, None)?;
        drop(views);
        Ok(out)
    }
}

impl<T: Real, R: Rule<T> + ?Sized> Primitive<T> for R {}

/// Cotangent or tangent slots, inline up to four.
type Slots<'a, T> = SmallVec<[Option<ArrayView2<'a, T>>; 4]>;

/// The slot, or `None` when it is missing or entirely zero. The scan stops at the first
/// nonzero entry, so a cotangent that is not zero costs one comparison.
fn nonzero<'a, T: Real>(v: &Option<ArrayView2<'a, T>>) -> Option<ArrayView2<'a, T>> {
    v.as_ref()
        .filter(|v| v.iter().any(|&e| e != T::zero()))
        .cloned()
}

/// The reverse rule on validated arguments (`ys` the shapes of the differentiable
/// outputs). Nothing is done when no gradient is wanted; a cotangent that is entirely
/// zero counts as missing, so its contribution is exactly zero whatever the rule's
/// intermediate values (`∞·0` would be NaN); when every cotangent is zero or missing
/// the gradients are zero without calling the rule.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_pullback<T: Real, R: Rule<T> + ?Sized>(
    r: &R,
    xs: &[Shape],
    ys: &[Shape],
    x: &[ArrayView2<'_, T>],
    y: &[ArrayView2<'_, T>],
    ybar: &[Option<ArrayView2<'_, T>>],
    grads: &mut [Grad<'_, T>],
    ws: Option<&mut [T]>,
) -> Result<()> {
    check_workspace(r, xs, ws.as_deref())?;
    if grads.iter().all(|g| !g.wanted()) {
        return Ok(());
    }
    let ybar: Slots<'_, T> = ybar.iter().map(nonzero).collect();
    if ybar.iter().all(Option::is_none) {
        for g in grads.iter_mut() {
            if let Grad::Write(b) = g {
                b.fill(T::zero());
            }
        }
        return Ok(());
    }
    let partials = Partials::new(&ybar, ys);
    let own = r.pass_workspace(xs, Pass::Pullback(grads));
    with_workspace(r, xs, ws, own, |ws| r.pullback(x, y, &partials, grads, ws))
}

/// The largest dimension matgrad accepts: BLAS and LAPACK take dimensions and leading
/// dimensions as 32-bit integers.
pub const MAX_DIM: usize = i32::MAX as usize;

/// Elements of a `T` buffer of `n` elements, after checking that its size in bytes
/// fits the address space (`isize::MAX`): [`Error::CannotAllocate`] otherwise.
pub(crate) fn fits_memory<T>(op: &'static str, name: &'static str, n: u128) -> Result<usize> {
    let bytes = std::mem::size_of::<T>().max(1);
    match usize::try_from(n) {
        Ok(k) if n.saturating_mul(bytes as u128) <= isize::MAX as u128 => Ok(k),
        _ => Err(Error::CannotAllocate {
            op,
            name,
            elements: n,
            bytes,
        }),
    }
}

/// Errors unless both dimensions of `s` are at most [`MAX_DIM`] ([`Error::TooLarge`])
/// and a matrix of that shape fits the address space ([`Error::CannotAllocate`]); the
/// number of elements otherwise.
pub(crate) fn check_size<T>(op: &'static str, name: &'static str, s: Shape) -> Result<usize> {
    for dim in [s.0, s.1] {
        if dim > MAX_DIM {
            return Err(Error::TooLarge { op, dim });
        }
    }
    fits_memory::<T>(op, name, s.0 as u128 * s.1 as u128)
}

/// Checks the number of inputs, their sizes, and the shape rule's output shapes (their
/// number and sizes): every shape a caller or a rule allocates from is then addressable
/// by BLAS and fits in memory, and no product of two dimensions overflows.
pub(crate) fn validate_inputs<T: Real, R: Rule<T> + ?Sized>(
    r: &R,
    x: &[ArrayView2<'_, T>],
) -> Result<(InShapes, Shapes)> {
    let op = r.name();
    expect_count(op, "inputs", r.arity(), x.len())?;
    if r.outputs() == 0 {
        return Err(Error::InvalidArgument {
            op,
            msg: "a primitive must have at least one output".into(),
        });
    }
    let xs: InShapes = x.iter().map(shape_of).collect();
    for (i, &s) in xs.iter().enumerate() {
        check_size::<T>(op, r.input_name(i), s)?;
    }
    let ys = r.shapes(&xs)?;
    expect_count(
        op,
        "output shapes from the shape rule",
        r.outputs().saturating_add(r.residuals()),
        ys.len(),
    )?;
    for (k, &s) in ys.iter().enumerate() {
        check_size::<T>(op, r.output_name(k), s)?;
    }
    Ok((xs, ys))
}

pub(crate) fn expect_count(
    op: &'static str,
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::Arity {
            op,
            what,
            expected,
            got,
        })
    }
}

pub(crate) fn expect(
    op: &'static str,
    name: &'static str,
    of: &'static str,
    expected: Shape,
    got: Shape,
) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::WrongShape {
            op,
            name,
            of,
            expected,
            got,
        })
    }
}

/// Zero-filled arrays of these shapes, each checked by [`check_size`] first.
fn alloc_all<T: Real>(op: &'static str, shapes: &[Shape]) -> Result<Vec<Array2<T>>> {
    let mut out = Vec::with_capacity(shapes.len());
    for &s in shapes {
        out.push(zeros(op, s)?);
    }
    Ok(out)
}

/// A zero-filled array of this shape, checked by [`check_size`] first.
pub(crate) fn zeros<T: Real>(op: &'static str, s: Shape) -> Result<Array2<T>> {
    check_size::<T>(op, "an output", s)?;
    Ok(Array2::zeros((s.0, s.1)))
}

/// A caller's workspace shorter than the rule declares is an error, checked before any
/// shortcut (no gradient wanted, zero cotangents or tangents, empty matrices) so that
/// the same call fails alike whatever the values.
pub(crate) fn check_workspace<T: Real, R: Rule<T> + ?Sized>(
    r: &R,
    xs: &[Shape],
    ws: Option<&[T]>,
) -> Result<()> {
    match ws {
        Some(ws) if ws.len() < r.workspace(xs) => Err(Error::Workspace {
            op: r.name(),
            needed: r.workspace(xs),
            got: ws.len(),
        }),
        _ => Ok(()),
    }
}

/// Runs `f` with the caller's workspace (at least [`Rule::workspace`]), or with a new
/// one of `own` elements, what this pass uses ([`Rule::pass_workspace`]), when none was given (its size checked by
/// [`fits_memory`] first).
pub(crate) fn with_workspace<T: Real, R: Rule<T> + ?Sized>(
    r: &R,
    xs: &[Shape],
    ws: Option<&mut [T]>,
    own: usize,
    f: impl FnOnce(&mut [T]) -> Result<()>,
) -> Result<()> {
    let need = r.workspace(xs);
    match ws {
        Some(ws) if ws.len() >= need => f(&mut ws[..need]),
        Some(ws) => Err(Error::Workspace {
            op: r.name(),
            needed: need,
            got: ws.len(),
        }),
        None if own == 0 => f(&mut []),
        None => {
            fits_memory::<T>(r.name(), "the workspace", own as u128)?;
            f(&mut vec![T::zero(); own])
        }
    }
}
