//! Reverse mode over a graph of primitives: record the computation, then sweep it
//! backwards (the seed note, sections 2–4).
//!
//! A [`Tape`] records every primitive applied to its values ([`Tape::apply`]) and
//! computes the value at once. [`Tape::backward`] then visits the records in reverse:
//! each record receives the cotangents of its outputs (`C̄`) and hands its inputs their
//! contributions through its reverse rule ([`crate::Rule::pullback`]). A value used by
//! several children receives the sum of their contributions (footnote 6 of the seed
//! note): the first contribution is written into its gradient buffer
//! ([`Grad::Write`], the buffer is not read and needs no zero fill), every later one is
//! added ([`Grad::Add`], GEMM with beta = 1).
//!
//! ```
//! use matgrad::prelude::*;
//! use matgrad::check::random;
//!
//! let mut rng = random::rng(7);
//! let mut tape = Tape::new();
//! let w = tape.leaf(random::randn::<f64>(3, 4, &mut rng)); // a parameter
//! let b = tape.leaf(random::randn::<f64>(3, 1, &mut rng));
//! let x = tape.constant(random::randn::<f64>(4, 5, &mut rng)); // data
//! let z = tape.apply1(MatMul::nn(), &[w, x])?;
//! let a = tape.apply1(AddBias, &[z, b])?;
//! let h = tape.apply1(Map(Tanh), &[a])?;
//!
//! let hbar = ndarray::Array2::<f64>::ones((3, 5));
//! let grads = tape.backward_with(h, hbar.view())?;
//! assert_eq!(grads.get(w).map(|g| g.dim()), Some((3, 4)));
//! assert!(grads.get(x).is_none()); // data has no gradient
//!
//! // The recorded layer is a primitive of (W, b): the shared checker proves it.
//! let layer = tape.function("MLP layer", &[w, b], &[h])?;
//! let (w0, b0) = (tape.shared(w)?, tape.shared(b)?);
//! Checker::new().check(&layer, &[w0.view(), b0.view()])?.assert_passed();
//! # Ok::<(), matgrad::Error>(())
//! ```
//!
//! # What the sweep computes
//!
//! Only what leads from the requested values to the output: a record whose inputs do
//! not depend on a requested value gets [`Grad::Skip`] for every input and is not
//! called; within a record, inputs that do not depend on one are skipped; a record
//! none of whose outputs received a cotangent is skipped.
//!
//! # Memory
//!
//! - **Cotangents.** The cotangent of an intermediate value lives from its first
//!   contribution until the record that produced it has run its reverse rule; then it
//!   is dropped (the gradients returned are kept to the end). The cotangent given for
//!   the output is borrowed, not copied, unless another contribution adds to it.
//! - **Values.** Recording is eager and a later record may take any value as an input,
//!   so the tape keeps every value while recording. [`Tape::release_unsaved`] then drops
//!   every value no reverse rule reads: for each record it asks the primitive's
//!   [`crate::Rule::saves`] with the inputs that require a gradient (those that depend
//!   on a [`Tape::leaf`]), and keeps only the declared values, the leaves and the values
//!   the caller names. The reverse sweep hands a rule a placeholder of the right shape
//!   (a broadcast zero, no memory) for each value it does not declare, exactly as the
//!   checker's saves pass does, so a rule that reads an undeclared value is caught by
//!   the checker, not by the tape. Without the call, every value stays.
//! - **Gradient buffers** are fresh arrays (zeroed by the allocator in release builds,
//!   filled with NaN in debug builds so that a test proves the first write is never
//!   read); [`Tape::backward_into`] writes into caller-owned buffers instead.
//! - **Checkpoints.** [`Tape::checkpoint`] records a segment as one node that keeps
//!   only its inputs and recomputes the rest during the reverse sweep: segments of
//!   about `√L` layers of an `L`-layer chain keep about `2√L` layers' values alive.
//! - **Repeated steps.** [`Recorded::step`] replays a recorded model forward and
//!   backward through buffers it owns: after its first call a training step allocates
//!   no matrix storage. A model recorded anew every step (eager style) gets the same
//!   from [`Tape::reset`], which keeps the tape's value and cotangent buffers, by
//!   shape, for the next recording.
//!
//! # Repeated inputs
//!
//! A value given twice to one primitive (`Hadamard(x, x)`, `MatMul::nt()(X, X)`) needs
//! both contributions in one buffer, and a rule cannot receive two `&mut` views of one
//! buffer. The sweep therefore calls the reverse rule once per occurrence: the first
//! call with the first occurrence's buffer (write or add, as the buffer's state says)
//! and the other occurrences skipped, the next call with the second occurrence adding,
//! and so on. Per-input work is not repeated (each call computes only the unskipped
//! input's gradient), but work a rule shares between its inputs is, and so is the
//! validation of shapes: `k` extra calls for a value repeated `k + 1` times.
//!
//! # A recorded graph is a primitive
//!
//! [`Tape::function`] turns the part of the tape between some values and some outputs
//! into a [`Recorded`] primitive, which implements [`crate::Rule`]: the checker proves
//! a whole model with it, and another tape applies it as one node. See [`Recorded`].

use crate::blas::Accum;
use crate::error::{shape_of, Error, Result, Shape};
use crate::primitive::{
    broadcast, expect_count, zeros, Grad, Partials, Primitive, Rule, Saves, Shapes, Structure,
};
use crate::Real;
use ndarray::{ArcArray2, Array2, ArrayView2, ArrayViewMut2, CowArray, Ix2};
use smallvec::{smallvec, SmallVec};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A value recorded on a [`Tape`]: a small `Copy` handle (the tape's identity and the
/// value's index). Using it with another tape is an [`Error::ForeignVar`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Var {
    tape: u64,
    index: usize,
}

static NEXT_TAPE: AtomicU64 = AtomicU64::new(1);

/// Where a value comes from.
#[derive(Clone, Copy, Debug)]
enum Origin {
    /// Given by the caller (a parameter, data, or the input of a recorded function).
    Leaf,
    /// An output of a record (residuals included).
    Output,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    shape: Shape,
    origin: Origin,
}

/// One primitive application: which values it read and which it produced.
struct Rec<T> {
    op: Rc<dyn Rule<T>>,
    inputs: SmallVec<[usize; 4]>,
    /// Every output: the differentiable ones, then the residuals.
    outputs: SmallVec<[usize; 2]>,
    /// Number of differentiable outputs.
    diff: usize,
}

impl<T> Clone for Rec<T> {
    fn clone(&self) -> Self {
        Rec {
            op: Rc::clone(&self.op),
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
            diff: self.diff,
        }
    }
}

/// The records and the shapes of the values, in recording (topological) order.
struct Graph<T> {
    nodes: Vec<Node>,
    records: Vec<Rec<T>>,
}

impl<T> Clone for Graph<T> {
    fn clone(&self) -> Self {
        Graph {
            nodes: self.nodes.clone(),
            records: self.records.clone(),
        }
    }
}

/// The cotangent of one value during the reverse sweep.
#[derive(Default)]
enum Cot<'a, T> {
    /// No contribution yet (zero).
    #[default]
    None,
    /// The cotangent a caller gave, borrowed.
    Seed(ArrayView2<'a, T>),
    /// A buffer of the sweep's own.
    Own(Array2<T>),
    /// A caller-owned gradient buffer: while `fresh`, the next contribution writes
    /// (the caller asked for [`Grad::Write`] and nothing has been written yet).
    Ext {
        buf: ArrayViewMut2<'a, T>,
        fresh: bool,
    },
}

/// A new gradient or tangent buffer whose contents are never read before the first
/// write: zeroed by the allocator (`calloc`) in release builds, NaN in debug builds so
/// that tests prove no rule reads it.
fn new_buffer<T: Real>(shape: Shape) -> Result<Array2<T>> {
    let mut a = zeros::<T>("Tape", shape)?;
    if cfg!(debug_assertions) {
        a.fill(T::nan());
    }
    Ok(a)
}

/// Buffers of earlier steps, by shape, that a tape hands out again after
/// [`Tape::reset`] instead of asking the allocator: values of records and cotangents of
/// the reverse sweep. What a buffer held is never read (every rule writes its outputs
/// and first contributions without reading the destination).
struct Pool<T> {
    free: HashMap<(usize, usize), Vec<Array2<T>>>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            free: HashMap::new(),
        }
    }
}

impl<T: Real> Pool<T> {
    /// A buffer of this shape, from the pool when one is there (NaN-filled in debug
    /// builds, like a new one, so that tests prove it is not read).
    fn take(&mut self, shape: Shape) -> Result<Array2<T>> {
        match self.free.get_mut(&(shape.0, shape.1)).and_then(Vec::pop) {
            Some(mut a) => {
                if cfg!(debug_assertions) {
                    a.fill(T::nan());
                }
                Ok(a)
            }
            None => new_buffer(shape),
        }
    }

    /// Keeps `a` for a later [`Pool::take`] of its shape.
    fn give(&mut self, a: Array2<T>) {
        if a.is_standard_layout() && !a.is_empty() {
            self.free.entry(a.dim()).or_default().push(a);
        }
    }

    fn elements(&self) -> usize {
        self.free.values().flatten().map(Array2::len).sum()
    }
}

impl<'a, T: Real> Cot<'a, T> {
    /// Hands a buffer of the sweep's own back to the pool.
    fn recycle(self, pool: &mut Pool<T>) {
        if let Cot::Own(a) = self {
            pool.give(a);
        }
    }

    fn view(&self) -> Option<ArrayView2<'_, T>> {
        match self {
            Cot::None => None,
            Cot::Seed(v) => Some(v.view()),
            Cot::Own(a) => Some(a.view()),
            Cot::Ext { buf, .. } => Some(buf.view()),
        }
    }

    /// Where the next contribution goes: the first one writes, later ones add.
    fn grad(&mut self, shape: Shape, pool: &mut Pool<T>) -> Result<Grad<'_, T>> {
        let acc = match self {
            Cot::Ext { fresh, .. } => {
                if std::mem::replace(fresh, false) {
                    Accum::Replace
                } else {
                    Accum::Add
                }
            }
            Cot::None => {
                *self = Cot::Own(pool.take(shape)?);
                Accum::Replace
            }
            Cot::Seed(v) => {
                let own = v.to_owned();
                *self = Cot::Own(own);
                Accum::Add
            }
            Cot::Own(_) => Accum::Add,
        };
        Ok(match self {
            Cot::Own(a) => Grad::new(a.view_mut(), acc),
            Cot::Ext { buf, .. } => Grad::new(buf.view_mut(), acc),
            // Not reached: both became `Own` above.
            Cot::None | Cot::Seed(_) => Grad::Skip,
        })
    }

    /// Adds a caller's cotangent (borrowed when it is the only one).
    fn seed(&mut self, v: ArrayView2<'a, T>) {
        match self {
            Cot::None => *self = Cot::Seed(v),
            Cot::Seed(s) => {
                let sum = &*s + &v;
                *self = Cot::Own(sum);
            }
            Cot::Own(a) => *a += &v,
            Cot::Ext { buf, fresh } => {
                let acc = if std::mem::replace(fresh, false) {
                    Accum::Replace
                } else {
                    Accum::Add
                };
                acc.assign(buf.view_mut(), v);
            }
        }
    }

    /// The gradient as an owned array, zero when nothing reached it.
    fn into_array(self, shape: Shape) -> Result<Array2<T>> {
        match self {
            Cot::Own(a) => Ok(a),
            Cot::Seed(v) => Ok(v.to_owned()),
            Cot::Ext { buf, .. } => Ok(buf.to_owned()),
            Cot::None => zeros("Tape", shape),
        }
    }

    /// A caller's `Write` buffer that received nothing: its gradient is zero.
    fn finish(&mut self) {
        if let Cot::Ext { buf, fresh: true } = self {
            buf.fill(T::zero());
        }
    }
}

/// The distinct wanted input values of a record, each with the positions it occupies.
type Groups = SmallVec<[(usize, SmallVec<[usize; 2]>); 4]>;

fn groups<T>(rec: &Rec<T>, req: &[bool]) -> Groups {
    let mut groups: Groups = SmallVec::new();
    for (p, &i) in rec.inputs.iter().enumerate() {
        if !req[i] {
            continue;
        }
        match groups.iter_mut().find(|(n, _)| *n == i) {
            Some((_, ps)) => ps.push(p),
            None => groups.push((i, smallvec![p])),
        }
    }
    groups
}

/// The gradient masks of the calls of a record's reverse rule: one call per occurrence
/// of a repeated input (see the module documentation).
fn pass_masks(arity: usize, groups: &Groups) -> SmallVec<[SmallVec<[bool; 4]>; 1]> {
    let passes = groups.iter().map(|(_, ps)| ps.len()).max().unwrap_or(0);
    (0..passes)
        .map(|p| {
            let mut mask: SmallVec<[bool; 4]> = smallvec![false; arity];
            for (_, ps) in groups {
                if let Some(&q) = ps.get(p) {
                    mask[q] = true;
                }
            }
            mask
        })
        .collect()
}

/// A value, or a broadcast placeholder of its shape when it was not kept.
fn value_or_placeholder<'v, T>(
    values: &'v [Option<ArrayView2<'_, T>>],
    i: usize,
    shape: Shape,
    zero: &'v T,
) -> ArrayView2<'v, T> {
    match &values[i] {
        Some(v) => v.view(),
        None => broadcast(zero, shape),
    }
}

fn grow<T: Real>(ws: &mut Vec<T>, need: usize) {
    if ws.len() < need {
        ws.resize(need, T::zero());
    }
}

impl<T: Real> Graph<T> {
    fn new() -> Self {
        Graph {
            nodes: Vec::new(),
            records: Vec::new(),
        }
    }

    /// Which values depend on the targets, so need a cotangent: the targets and the
    /// differentiable outputs of every record with such an input.
    fn requires(&self, targets: impl IntoIterator<Item = usize>) -> Vec<bool> {
        let mut req = vec![false; self.nodes.len()];
        for t in targets {
            req[t] = true;
        }
        for rec in &self.records {
            if rec.inputs.iter().any(|&i| req[i]) {
                for &o in &rec.outputs[..rec.diff] {
                    req[o] = true;
                }
            }
        }
        req
    }

    /// Which values some reverse rule reads, when the values marked in `req` need
    /// cotangents: the union of [`Rule::saves`] over every call the sweep makes.
    fn saved(&self, req: &[bool]) -> Vec<bool> {
        let mut keep = vec![false; self.nodes.len()];
        for rec in &self.records {
            for mask in pass_masks(rec.inputs.len(), &groups(rec, req)) {
                let s = rec.op.saves(&mask);
                mark(&mut keep, rec, s);
            }
        }
        keep
    }

    /// The reverse sweep. `values` holds every value kept (`None` where not kept),
    /// `cots` the cotangents given (seeds) and the caller's buffers, `req` which values
    /// need a cotangent, `keep` which cotangents outlive the record that consumes them.
    fn reverse<'a>(
        &self,
        values: &[Option<ArrayView2<'_, T>>],
        cots: &mut [Cot<'a, T>],
        req: &[bool],
        keep: &[bool],
        pool: &mut Pool<T>,
        ws: &mut Vec<T>,
    ) -> Result<()> {
        let zero = T::zero();
        for rec in self.records.iter().rev() {
            let op = &*rec.op;
            let outs = &rec.outputs[..rec.diff];
            let groups = groups(rec, req);
            if groups.is_empty() || outs.iter().all(|&o| matches!(cots[o], Cot::None)) {
                for &o in outs {
                    if !keep[o] {
                        std::mem::take(&mut cots[o]).recycle(pool);
                    }
                }
                continue;
            }
            // The output cotangents are consumed here: taken out, dropped at the end.
            let taken: SmallVec<[Cot<'a, T>; 2]> =
                outs.iter().map(|&o| std::mem::take(&mut cots[o])).collect();
            let ybar: SmallVec<[Option<ArrayView2<'_, T>>; 2]> =
                taken.iter().map(Cot::view).collect();
            let shape = |i: usize| self.nodes[i].shape;
            let x: SmallVec<[ArrayView2<'_, T>; 4]> = rec
                .inputs
                .iter()
                .map(|&i| value_or_placeholder(values, i, shape(i), &zero))
                .collect();
            let y: SmallVec<[ArrayView2<'_, T>; 2]> = rec
                .outputs
                .iter()
                .map(|&o| value_or_placeholder(values, o, shape(o), &zero))
                .collect();
            let xs: SmallVec<[Shape; 4]> = x.iter().map(shape_of).collect();
            grow(ws, op.workspace(&xs));
            let mut local: SmallVec<[Cot<'a, T>; 4]> = groups
                .iter()
                .map(|(n, _)| std::mem::take(&mut cots[*n]))
                .collect();
            for (pass, mask) in pass_masks(rec.inputs.len(), &groups).iter().enumerate() {
                expect_kept(rec, op.saves(mask), values)?;
                let mut grads: SmallVec<[Grad<'_, T>; 4]> =
                    (0..x.len()).map(|_| Grad::Skip).collect();
                for ((n, ps), cot) in groups.iter().zip(local.iter_mut()) {
                    if let Some(&p) = ps.get(pass) {
                        grads[p] = cot.grad(shape(*n), pool)?;
                    }
                }
                op.backward_into(&x, &y, &ybar, &mut grads, Some(&mut ws[..]))?;
            }
            for ((n, _), c) in groups.iter().zip(local) {
                cots[*n] = c;
            }
            drop(ybar);
            for (&o, c) in outs.iter().zip(taken) {
                if keep[o] {
                    cots[o] = c;
                } else {
                    c.recycle(pool);
                }
            }
        }
        Ok(())
    }
}

/// Marks the values `s` declares for record `rec`.
fn mark<T: Real>(keep: &mut [bool], rec: &Rec<T>, s: Saves) {
    for (p, &i) in rec.inputs.iter().enumerate() {
        if s.reads_input(p) {
            keep[i] = true;
        }
    }
    for (k, &o) in rec.outputs.iter().enumerate() {
        if s.reads_output(k) {
            keep[o] = true;
        }
    }
}

/// Errors when a value the rule declares in `saves` was released.
fn expect_kept<T: Real>(
    rec: &Rec<T>,
    s: Saves,
    values: &[Option<ArrayView2<'_, T>>],
) -> Result<()> {
    let op = &*rec.op;
    for (p, &i) in rec.inputs.iter().enumerate() {
        if s.reads_input(p) && values[i].is_none() {
            return Err(Error::Released {
                op: op.name(),
                name: op.input_name(p),
            });
        }
    }
    for (k, &o) in rec.outputs.iter().enumerate() {
        if s.reads_output(k) && values[o].is_none() {
            return Err(Error::Released {
                op: op.name(),
                name: op.output_name(k),
            });
        }
    }
    Ok(())
}

/// The tangents of a record's differentiable outputs (forward mode), into new buffers.
fn push<T: Real>(
    rec: &Rec<T>,
    x: &[ArrayView2<'_, T>],
    y: &[ArrayView2<'_, T>],
    xdot: &[Option<ArrayView2<'_, T>>],
    ws: &mut Vec<T>,
) -> Result<SmallVec<[Array2<T>; 2]>> {
    let mut out: SmallVec<[Array2<T>; 2]> = SmallVec::new();
    for v in &y[..rec.diff] {
        out.push(new_buffer(shape_of(v))?);
    }
    let mut views: SmallVec<[ArrayViewMut2<'_, T>; 2]> =
        out.iter_mut().map(|o| o.view_mut()).collect();
    let xs: SmallVec<[Shape; 4]> = x.iter().map(shape_of).collect();
    grow(ws, rec.op.workspace(&xs));
    rec.op.jvp_into(x, y, xdot, &mut views, Some(&mut ws[..]))?;
    drop(views);
    Ok(out)
}

/// Records primitives applied to matrices and differentiates the recorded graph in
/// reverse ([`Tape::backward`]) and forward ([`Tape::jvp`]) mode. See the
/// [module documentation](self).
pub struct Tape<T> {
    id: u64,
    graph: Graph<T>,
    /// The value of each node; `None` once released.
    values: Vec<Option<ArcArray2<T>>>,
    /// Whether each node depends on a parameter leaf.
    requires: Vec<bool>,
    released: usize,
    /// Buffers of earlier steps, handed out again after [`Tape::reset`].
    pool: RefCell<Pool<T>>,
    /// Scratch space of the rules, grown to the largest need.
    ws: RefCell<Vec<T>>,
}

impl<T: Real> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The gradients a reverse sweep computed, one per requested value.
#[derive(Clone, Debug)]
pub struct Gradients<T> {
    tape: u64,
    entries: Vec<(usize, Array2<T>)>,
}

impl<T> Gradients<T> {
    /// The gradient of `v`, or `None` when it was not requested (data, a value of
    /// another tape). A requested value the output does not depend on has a zero
    /// gradient.
    pub fn get(&self, v: Var) -> Option<&Array2<T>> {
        self.position(v).map(|k| &self.entries[k].1)
    }
    /// Takes the gradient of `v` out.
    pub fn remove(&mut self, v: Var) -> Option<Array2<T>> {
        self.position(v).map(|k| self.entries.swap_remove(k).1)
    }
    /// Number of gradients.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    fn position(&self, v: Var) -> Option<usize> {
        if v.tape != self.tape {
            return None;
        }
        self.entries.iter().position(|(n, _)| *n == v.index)
    }
}

const VALUE: &str = "Tape::value";
const BACKWARD: &str = "Tape::backward";
const BACKWARD_INTO: &str = "Tape::backward_into";
const JVP: &str = "Tape::jvp";
const FUNCTION: &str = "Tape::function";
const RELEASE: &str = "Tape::release_unsaved";

impl<T: Real> Tape<T> {
    /// An empty tape.
    pub fn new() -> Self {
        Tape {
            id: NEXT_TAPE.fetch_add(1, Ordering::Relaxed),
            graph: Graph::new(),
            values: Vec::new(),
            requires: Vec::new(),
            released: 0,
            pool: RefCell::new(Pool::default()),
            ws: RefCell::new(Vec::new()),
        }
    }

    /// Empties the tape for the next step and keeps its buffers.
    ///
    /// Every record and value is dropped, and the [`Var`]s of the tape become foreign
    /// to it ([`Error::ForeignVar`]); the value buffers nobody else holds (no
    /// [`Tape::shared`] clone alive) and the cotangent buffers of earlier sweeps stay
    /// with the tape, by shape, together with the rules' scratch space. Recording the
    /// same computation again then takes every value and every cotangent of its reverse
    /// sweep from them: a training loop that records a new step on a reset tape
    /// allocates no matrix storage after its first step (a fresh [`Tape::new`] per step
    /// asks the allocator for all of it, and the operating system for new pages, every
    /// time). The buffers are freed when the tape is dropped.
    ///
    /// ```
    /// use matgrad::prelude::*;
    /// use matgrad::check::random;
    ///
    /// let mut rng = random::rng(3);
    /// let mut w = random::randn::<f64>(4, 6, &mut rng);
    /// let x = random::randn::<f64>(6, 8, &mut rng).into_shared();
    /// let mut tape = Tape::new();
    /// for _ in 0..3 {
    ///     tape.reset();
    ///     let wv = tape.leaf(w.clone());
    ///     let xv = tape.constant(x.clone());
    ///     let z = tape.apply1(MatMul::nn(), &[wv, xv])?;
    ///     let loss = tape.apply1(Sum, &[z])?;
    ///     let g = tape.backward(loss)?;
    ///     w.scaled_add(-0.1, g.get(wv).unwrap());
    /// }
    /// assert!(tape.pooled_elements() > 0);
    /// # Ok::<(), matgrad::Error>(())
    /// ```
    pub fn reset(&mut self) {
        let pool = self.pool.get_mut();
        for v in self.values.drain(..).flatten() {
            if let Ok(a) = v.try_into_owned_nocopy() {
                pool.give(a);
            }
        }
        self.graph.nodes.clear();
        self.graph.records.clear();
        self.requires.clear();
        self.released = 0;
        self.id = NEXT_TAPE.fetch_add(1, Ordering::Relaxed);
    }

    /// Elements held in the tape's pool of buffers for the next step ([`Tape::reset`]).
    pub fn pooled_elements(&self) -> usize {
        self.pool.borrow().elements()
    }

    fn push_leaf(&mut self, value: ArcArray2<T>, requires: bool) -> Var {
        let index = self.graph.nodes.len();
        self.graph.nodes.push(Node {
            shape: shape_of(&value),
            origin: Origin::Leaf,
        });
        self.values.push(Some(value));
        self.requires.push(requires);
        Var {
            tape: self.id,
            index,
        }
    }

    /// A parameter: a value whose gradient [`Tape::backward`] computes. An `Array2` is
    /// moved in, an `ArcArray2` shared; neither is copied.
    pub fn leaf(&mut self, value: impl Into<ArcArray2<T>>) -> Var {
        self.push_leaf(value.into(), true)
    }

    /// Data: a value with no gradient of its own (unless asked for by name with
    /// [`Tape::backward_wrt`]). Not copied, as for [`Tape::leaf`].
    pub fn constant(&mut self, value: impl Into<ArcArray2<T>>) -> Var {
        self.push_leaf(value.into(), false)
    }

    fn node(&self, v: Var, op: &'static str) -> Result<usize> {
        if v.tape == self.id && v.index < self.graph.nodes.len() {
            Ok(v.index)
        } else {
            Err(Error::ForeignVar { op })
        }
    }

    /// Records `op` applied to `inputs` and computes its outputs now. Returns one
    /// [`Var`] per differentiable output ([`crate::Rule::outputs`]); residual outputs
    /// are kept for the rules only. Shape errors come from the primitive's shape rule
    /// and name it; on an error nothing is recorded.
    pub fn apply(&mut self, op: impl Rule<T> + 'static, inputs: &[Var]) -> Result<Vec<Var>> {
        self.apply_rc(Rc::new(op), inputs)
    }

    /// [`Tape::apply`] for a primitive with one differentiable output, returning it.
    pub fn apply1(&mut self, op: impl Rule<T> + 'static, inputs: &[Var]) -> Result<Var> {
        let op: Rc<dyn Rule<T>> = Rc::new(op);
        crate::primitive::expect_count(op.name(), "differentiable outputs", 1, op.outputs())?;
        Ok(self.apply_rc(op, inputs)?[0])
    }

    /// [`Tape::apply`] with a primitive shared between records, without a copy.
    pub fn apply_shared(&mut self, op: Rc<dyn Rule<T>>, inputs: &[Var]) -> Result<Vec<Var>> {
        self.apply_rc(op, inputs)
    }

    fn apply_rc(&mut self, op: Rc<dyn Rule<T>>, inputs: &[Var]) -> Result<Vec<Var>> {
        let name = op.name();
        let idx = self.inputs_of(name, inputs, |p| op.input_name(p))?;
        let x: SmallVec<[ArrayView2<'_, T>; 4]> = idx
            .iter()
            .map(|&i| self.values[i].as_ref().map(|v| v.view()))
            .collect::<Option<_>>()
            .ok_or(Error::Released {
                op: name,
                name: "an input",
            })?;
        let shapes = op.output_shapes(&x)?;
        let mut y: SmallVec<[Array2<T>; 2]> = {
            let pool = self.pool.get_mut();
            shapes
                .iter()
                .map(|&s| pool.take(s))
                .collect::<Result<_>>()?
        };
        let mut views: SmallVec<[ArrayViewMut2<'_, T>; 2]> =
            y.iter_mut().map(|a| a.view_mut()).collect();
        let ws = self.ws.get_mut();
        let xs: SmallVec<[Shape; 4]> = x.iter().map(shape_of).collect();
        grow(ws, op.workspace(&xs));
        op.forward_into(&x, &mut views, Some(&mut ws[..]))?;
        drop(views);
        drop(x);
        Ok(self.record(op, idx, y.into_iter().map(Array2::into_shared)))
    }

    /// The nodes of `inputs`, each of this tape and with its value still held.
    fn inputs_of(
        &self,
        op: &'static str,
        inputs: &[Var],
        input_name: impl Fn(usize) -> &'static str,
    ) -> Result<SmallVec<[usize; 4]>> {
        let mut idx: SmallVec<[usize; 4]> = SmallVec::new();
        for (p, &v) in inputs.iter().enumerate() {
            let i = self.node(v, op)?;
            if self.values[i].is_none() {
                return Err(Error::Released {
                    op,
                    name: input_name(p),
                });
            }
            idx.push(i);
        }
        Ok(idx)
    }

    /// Appends a record of `op` on the nodes `idx` whose outputs `y` are computed.
    fn record(
        &mut self,
        op: Rc<dyn Rule<T>>,
        idx: SmallVec<[usize; 4]>,
        y: impl IntoIterator<Item = ArcArray2<T>>,
    ) -> Vec<Var> {
        let requires = idx.iter().any(|&i| self.requires[i]);
        let diff = op.outputs();
        let mut outputs: SmallVec<[usize; 2]> = SmallVec::new();
        for v in y {
            let index = self.graph.nodes.len();
            self.graph.nodes.push(Node {
                shape: shape_of(&v),
                origin: Origin::Output,
            });
            self.values.push(Some(v));
            self.requires.push(requires && outputs.len() < diff);
            outputs.push(index);
        }
        let vars = outputs[..diff]
            .iter()
            .map(|&index| Var {
                tape: self.id,
                index,
            })
            .collect();
        self.graph.records.push(Rec {
            op,
            inputs: idx,
            outputs,
            diff,
        });
        vars
    }

    /// Records a segment of the graph as one node that keeps only its inputs: a
    /// checkpoint (footnote 3 of the seed note; Griewank and Walther 2008, ch. 12).
    ///
    /// `f` records the segment on a tape of its own, whose leaves are the `inputs`
    /// (shared, not copied), and returns its outputs. The segment becomes a
    /// [`Recorded`] primitive named `name` and is recorded here as one node whose
    /// outputs are the ones `f` computed (nothing is evaluated twice on the way
    /// forward). Its intermediate values are dropped when `checkpoint` returns: the
    /// node's reverse rule replays the segment's forward pass from its inputs, keeping
    /// only what the inner rules' [`crate::Rule::saves`] declare, then sweeps it
    /// backward ([`Recorded`]'s `pullback`). The price is one more forward pass of the
    /// segment during the reverse sweep.
    ///
    /// Splitting an `L`-layer chain into segments of about `√L` layers keeps about
    /// `2√L` layers' values alive at once instead of `L`. Parameters the segment
    /// differentiates must be among `inputs`; a leaf `f` makes on its own tape is a
    /// constant of the segment (data), with no gradient.
    ///
    /// ```
    /// use matgrad::prelude::*;
    /// use matgrad::check::random;
    ///
    /// let mut rng = random::rng(5);
    /// let mut tape = Tape::new();
    /// let mut h = tape.constant(random::randn::<f64>(8, 16, &mut rng));
    /// let ws: Vec<Var> = (0..4).map(|_| tape.leaf(random::randn::<f64>(8, 8, &mut rng))).collect();
    /// for pair in ws.chunks(2) {
    ///     let mut inputs = vec![h];
    ///     inputs.extend_from_slice(pair);
    ///     h = tape.checkpoint("two layers", &inputs, |t, v| {
    ///         let mut h = v[0];
    ///         for &w in &v[1..] {
    ///             let z = t.apply1(MatMul::nn(), &[w, h])?;
    ///             h = t.apply1(Map(Tanh), &[z])?;
    ///         }
    ///         Ok(vec![h])
    ///     })?[0];
    /// }
    /// let c = tape.apply1(Sum, &[h])?;
    /// assert_eq!(tape.len(), 3); // two segments and the sum
    /// let grads = tape.backward(c)?;
    /// assert_eq!(grads.len(), 4);
    /// # Ok::<(), matgrad::Error>(())
    /// ```
    ///
    /// Errors: those of `f`, and those of [`Tape::function`] on the segment.
    pub fn checkpoint<F>(&mut self, name: &'static str, inputs: &[Var], f: F) -> Result<Vec<Var>>
    where
        F: FnOnce(&mut Tape<T>, &[Var]) -> Result<Vec<Var>>,
    {
        let idx = self.inputs_of(name, inputs, |p| INPUT_NAMES.get(p).copied().unwrap_or("X"))?;
        let mut inner = Tape::new();
        let vars: Vec<Var> = idx
            .iter()
            .map(|&i| {
                let v = self.values[i].clone().ok_or(Error::Released {
                    op: name,
                    name: "an input",
                });
                v.map(|v| inner.leaf(v))
            })
            .collect::<Result<_>>()?;
        let outs = f(&mut inner, &vars)?;
        let segment = inner.function(name, &vars, &outs)?;
        let y = outs
            .iter()
            .map(|&o| inner.shared(o))
            .collect::<Result<Vec<_>>>()?;
        drop(inner);
        Ok(self.record(Rc::new(segment), idx, y))
    }

    /// The value of `v`.
    pub fn value(&self, v: Var) -> Result<ArrayView2<'_, T>> {
        let i = self.node(v, VALUE)?;
        self.values[i]
            .as_ref()
            .map(|a| a.view())
            .ok_or(Error::Released {
                op: VALUE,
                name: "the value",
            })
    }

    /// The value of `v`, shared (a reference count, no copy).
    pub fn shared(&self, v: Var) -> Result<ArcArray2<T>> {
        let i = self.node(v, VALUE)?;
        self.values[i].clone().ok_or(Error::Released {
            op: VALUE,
            name: "the value",
        })
    }

    /// The shape of `v` (known even after its value is released).
    pub fn shape(&self, v: Var) -> Result<Shape> {
        Ok(self.graph.nodes[self.node(v, VALUE)?].shape)
    }

    /// Number of records (primitive applications).
    pub fn len(&self) -> usize {
        self.graph.records.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.graph.records.is_empty()
    }

    /// Elements of the values the tape still holds (leaves included).
    pub fn retained_elements(&self) -> usize {
        self.values.iter().flatten().map(|a| a.len()).sum()
    }

    /// Elements released so far by [`Tape::release_unsaved`].
    pub fn released_elements(&self) -> usize {
        self.released
    }

    /// Drops every value no reverse rule reads, and returns how many elements that
    /// released (memory is freed unless the caller still shares the array).
    ///
    /// Kept: the leaves, the values in `keep` (say, the output whose value is still
    /// wanted), and every value some record's [`crate::Rule::saves`] declares for the
    /// gradients the tape computes by default (those of the inputs that depend on a
    /// [`Tape::leaf`]; residuals included). The reverse sweep passes placeholders for
    /// the others. After the call, recording on a released value, reading it, the
    /// forward mode through it, and gradients with respect to values that do not depend
    /// on a leaf may need a released value: they return [`Error::Released`].
    pub fn release_unsaved(&mut self, keep: &[Var]) -> Result<usize> {
        let mut saved = self.graph.saved(&self.requires);
        for (s, n) in saved.iter_mut().zip(&self.graph.nodes) {
            if matches!(n.origin, Origin::Leaf) {
                *s = true;
            }
        }
        for &v in keep {
            saved[self.node(v, RELEASE)?] = true;
        }
        let mut freed = 0;
        for (v, &s) in self.values.iter_mut().zip(&saved) {
            if !s {
                if let Some(a) = v.take() {
                    freed += a.len();
                }
            }
        }
        self.released += freed;
        Ok(freed)
    }

    fn views(&self) -> Vec<Option<ArrayView2<'_, T>>> {
        self.values
            .iter()
            .map(|v| v.as_ref().map(|a| a.view()))
            .collect()
    }

    /// Checks the cotangents given for outputs and returns their nodes.
    fn seeds<'c>(
        &self,
        op: &'static str,
        seeds: &[(Var, ArrayView2<'c, T>)],
    ) -> Result<Vec<(usize, ArrayView2<'c, T>)>> {
        let mut out = Vec::with_capacity(seeds.len());
        for (v, c) in seeds {
            let i = self.node(*v, op)?;
            let expected = self.graph.nodes[i].shape;
            if shape_of(c) != expected {
                return Err(Error::WrongShape {
                    op,
                    name: "cotangent",
                    of: "output",
                    expected,
                    got: shape_of(c),
                });
            }
            out.push((i, *c));
        }
        Ok(out)
    }

    /// The gradients of the 1×1 `output` (cotangent 1) with respect to every
    /// [`Tape::leaf`].
    pub fn backward(&self, output: Var) -> Result<Gradients<T>> {
        let i = self.node(output, BACKWARD)?;
        let got = self.graph.nodes[i].shape;
        if got != Shape(1, 1) {
            return Err(Error::NotScalar { op: BACKWARD, got });
        }
        let one = Array2::from_elem((1, 1), T::one());
        self.backward_with(output, one.view())
    }

    /// The gradients with respect to every [`Tape::leaf`] for the cotangent `C̄` of
    /// `output`, of any shape.
    pub fn backward_with(&self, output: Var, cotangent: ArrayView2<'_, T>) -> Result<Gradients<T>> {
        let params: Vec<Var> = (0..self.graph.nodes.len())
            .filter(|&i| self.requires[i] && matches!(self.graph.nodes[i].origin, Origin::Leaf))
            .map(|index| Var {
                tape: self.id,
                index,
            })
            .collect();
        self.backward_wrt(&[(output, cotangent)], &params)
    }

    /// The general reverse sweep: cotangents for any outputs (summed where one value
    /// gets several), gradients with respect to any values `wrt` (leaves, data or
    /// intermediate values), each computed only along the records that lead to it.
    pub fn backward_wrt(
        &self,
        seeds: &[(Var, ArrayView2<'_, T>)],
        wrt: &[Var],
    ) -> Result<Gradients<T>> {
        let seeds = self.seeds(BACKWARD, seeds)?;
        let mut targets: Vec<usize> = Vec::with_capacity(wrt.len());
        for &v in wrt {
            let i = self.node(v, BACKWARD)?;
            if !targets.contains(&i) {
                targets.push(i);
            }
        }
        let req = self.graph.requires(targets.iter().copied());
        let mut keep = vec![false; self.graph.nodes.len()];
        for &t in &targets {
            keep[t] = true;
        }
        let mut cots: Vec<Cot<'_, T>> = (0..self.graph.nodes.len()).map(|_| Cot::None).collect();
        for (i, c) in seeds {
            cots[i].seed(c);
        }
        let values = self.views();
        self.graph.reverse(
            &values,
            &mut cots,
            &req,
            &keep,
            &mut self.pool.borrow_mut(),
            &mut self.ws.borrow_mut(),
        )?;
        let mut entries = Vec::with_capacity(targets.len());
        for t in targets {
            let g = std::mem::take(&mut cots[t]).into_array(self.graph.nodes[t].shape)?;
            entries.push((t, g));
        }
        let mut pool = self.pool.borrow_mut();
        for c in cots {
            c.recycle(&mut pool);
        }
        Ok(Gradients {
            tape: self.id,
            entries,
        })
    }

    /// The reverse sweep into caller-owned buffers of leaves: per leaf skip, first
    /// write (the buffer is not read; it is zero-filled if no contribution reaches it)
    /// or add, as each [`Grad`] says. `seeds` are the cotangents of outputs.
    pub fn backward_into(
        &self,
        seeds: &[(Var, ArrayView2<'_, T>)],
        grads: &mut [(Var, Grad<'_, T>)],
    ) -> Result<()> {
        let seeds = self.seeds(BACKWARD_INTO, seeds)?;
        let n = self.graph.nodes.len();
        let mut cots: Vec<Cot<'_, T>> = (0..n).map(|_| Cot::None).collect();
        let mut targets: Vec<usize> = Vec::new();
        for (v, g) in grads.iter_mut() {
            let i = self.node(*v, BACKWARD_INTO)?;
            let Some((buf, acc)) = g.target() else {
                continue;
            };
            let node = self.graph.nodes[i];
            if !matches!(node.origin, Origin::Leaf) {
                return Err(Error::InvalidArgument {
                    op: BACKWARD_INTO,
                    msg: "gradient buffers are for leaves; use backward_wrt for other values"
                        .into(),
                });
            }
            if targets.contains(&i) {
                return Err(Error::InvalidArgument {
                    op: BACKWARD_INTO,
                    msg: "two gradient buffers for the same leaf".into(),
                });
            }
            if shape_of(&buf) != node.shape {
                return Err(Error::WrongShape {
                    op: BACKWARD_INTO,
                    name: "gradient buffer",
                    of: "leaf",
                    expected: node.shape,
                    got: shape_of(&buf),
                });
            }
            cots[i] = Cot::Ext {
                buf,
                fresh: acc == Accum::Replace,
            };
            targets.push(i);
        }
        for (i, c) in seeds {
            cots[i].seed(c);
        }
        let req = self.graph.requires(targets.iter().copied());
        let values = self.views();
        let mut pool = self.pool.borrow_mut();
        self.graph.reverse(
            &values,
            &mut cots,
            &req,
            &vec![false; n],
            &mut pool,
            &mut self.ws.borrow_mut(),
        )?;
        for t in targets {
            cots[t].finish();
        }
        for c in cots {
            c.recycle(&mut pool);
        }
        Ok(())
    }

    /// Forward mode: the tangents of `outputs` for the tangents of some leaves (the
    /// others' are zero), through the same records' [`crate::Rule::pushforward`]. Only
    /// the records between them run; each tangent is dropped after its last use.
    pub fn jvp(
        &self,
        tangents: &[(Var, ArrayView2<'_, T>)],
        outputs: &[Var],
    ) -> Result<Vec<Array2<T>>> {
        let n = self.graph.nodes.len();
        let mut dots: Vec<Option<CowArray<'_, T, Ix2>>> = (0..n).map(|_| None).collect();
        for (v, t) in tangents {
            let i = self.node(*v, JVP)?;
            let node = self.graph.nodes[i];
            if !matches!(node.origin, Origin::Leaf) {
                return Err(Error::InvalidArgument {
                    op: JVP,
                    msg: "tangents are for leaves".into(),
                });
            }
            if shape_of(t) != node.shape {
                return Err(Error::WrongShape {
                    op: JVP,
                    name: "tangent",
                    of: "leaf",
                    expected: node.shape,
                    got: shape_of(t),
                });
            }
            if dots[i].is_some() {
                return Err(Error::InvalidArgument {
                    op: JVP,
                    msg: "two tangents for the same leaf".into(),
                });
            }
            dots[i] = Some(t.view().into());
        }
        let mut is_out = vec![false; n];
        for &v in outputs {
            is_out[self.node(v, JVP)?] = true;
        }
        // Records that lead to an output, and the last of them to read each value.
        let records = &self.graph.records;
        let mut need = is_out.clone();
        let mut run = vec![false; records.len()];
        for (r, rec) in records.iter().enumerate().rev() {
            if rec.outputs.iter().any(|&o| need[o]) {
                run[r] = true;
                for &i in &rec.inputs {
                    need[i] = true;
                }
            }
        }
        let mut last = vec![usize::MAX; n];
        for (r, rec) in records.iter().enumerate().filter(|(r, _)| run[*r]) {
            for &i in &rec.inputs {
                last[i] = r;
            }
        }
        let values = self.views();
        let zero = T::zero();
        let mut ws = Vec::new();
        for (r, rec) in records.iter().enumerate().filter(|(r, _)| run[*r]) {
            let xdot: SmallVec<[Option<ArrayView2<'_, T>>; 4]> = rec
                .inputs
                .iter()
                .map(|&i| dots[i].as_ref().map(|d| d.view()))
                .collect();
            if xdot.iter().all(Option::is_none) {
                continue;
            }
            // Forward-mode rules declare no saves: every value must be there.
            expect_kept(rec, Saves::ALL, &values)?;
            let x: SmallVec<[ArrayView2<'_, T>; 4]> = rec
                .inputs
                .iter()
                .map(|&i| value_or_placeholder(&values, i, self.graph.nodes[i].shape, &zero))
                .collect();
            let y: SmallVec<[ArrayView2<'_, T>; 2]> = rec
                .outputs
                .iter()
                .map(|&o| value_or_placeholder(&values, o, self.graph.nodes[o].shape, &zero))
                .collect();
            let out = push(rec, &x, &y, &xdot, &mut ws)?;
            drop(xdot);
            for &i in &rec.inputs {
                if last[i] == r && !is_out[i] {
                    dots[i] = None;
                }
            }
            for (&o, d) in rec.outputs.iter().zip(out) {
                dots[o] = Some(d.into());
            }
        }
        let mut result = Vec::with_capacity(outputs.len());
        for &v in outputs {
            let i = v.index;
            result.push(match &dots[i] {
                Some(d) => d.to_owned(),
                None => zeros("Tape", self.graph.nodes[i].shape)?,
            });
        }
        Ok(result)
    }

    /// The recorded graph from `inputs` to `outputs` as a primitive named `name`
    /// ([`Recorded`]). Values the outputs depend on that do not depend on the inputs
    /// (data, other parameters) become constants of the function, shared with the tape.
    ///
    /// Errors: a [`Var`] of another tape, no output, an input given twice, an input the
    /// tape computed from another input, or a constant the tape has released.
    pub fn function(
        &self,
        name: &'static str,
        inputs: &[Var],
        outputs: &[Var],
    ) -> Result<Recorded<T>> {
        let invalid = |msg: String| Error::InvalidArgument { op: name, msg };
        let ins = inputs
            .iter()
            .map(|&v| self.node(v, FUNCTION))
            .collect::<Result<Vec<usize>>>()?;
        let outs = outputs
            .iter()
            .map(|&v| self.node(v, FUNCTION))
            .collect::<Result<Vec<usize>>>()?;
        if outs.is_empty() {
            return Err(invalid(
                "a recorded function needs at least one output".into(),
            ));
        }
        for (j, &i) in ins.iter().enumerate() {
            if let Some(k) = ins[..j].iter().position(|&o| o == i) {
                return Err(invalid(format!("input {j} is the same value as input {k}")));
            }
        }
        let (nodes, records) = (&self.graph.nodes, &self.graph.records);
        // Values that depend on the inputs, and the records that compute them.
        let mut dep = vec![false; nodes.len()];
        for &i in &ins {
            dep[i] = true;
        }
        let mut rec_dep = vec![false; records.len()];
        for (r, rec) in records.iter().enumerate() {
            if rec.inputs.iter().any(|&i| dep[i]) {
                rec_dep[r] = true;
                for &o in &rec.outputs {
                    if let Some(j) = ins.iter().position(|&i| i == o) {
                        return Err(invalid(format!(
                            "input {j} is computed on the tape from another input"
                        )));
                    }
                    dep[o] = true;
                }
            }
        }
        // Records that lead from the inputs to the outputs.
        let mut need = vec![false; nodes.len()];
        for &o in &outs {
            need[o] = true;
        }
        let mut rec_in = vec![false; records.len()];
        for r in (0..records.len()).rev() {
            if rec_dep[r] && records[r].outputs.iter().any(|&o| need[o]) {
                rec_in[r] = true;
                for &i in &records[r].inputs {
                    need[i] = true;
                }
            }
        }
        // Renumber: the inputs, the constants, then the records' outputs.
        let mut local = vec![usize::MAX; nodes.len()];
        let mut graph = Graph::new();
        for &i in &ins {
            local[i] = graph.nodes.len();
            graph.nodes.push(Node {
                shape: nodes[i].shape,
                origin: Origin::Leaf,
            });
        }
        let mut constants = Vec::new();
        for i in 0..nodes.len() {
            if need[i] && !dep[i] {
                let value = self.values[i].clone().ok_or(Error::Released {
                    op: name,
                    name: "a constant of the function",
                })?;
                local[i] = graph.nodes.len();
                constants.push((graph.nodes.len(), value));
                graph.nodes.push(Node {
                    shape: nodes[i].shape,
                    origin: Origin::Leaf,
                });
            }
        }
        for (rec, _) in records.iter().zip(&rec_in).filter(|(_, &inside)| inside) {
            let mut outputs = SmallVec::new();
            for &o in &rec.outputs {
                local[o] = graph.nodes.len();
                outputs.push(graph.nodes.len());
                graph.nodes.push(Node {
                    shape: nodes[o].shape,
                    origin: Origin::Output,
                });
            }
            graph.records.push(Rec {
                op: Rc::clone(&rec.op),
                inputs: rec.inputs.iter().map(|&i| local[i]).collect(),
                outputs,
                diff: rec.diff,
            });
        }
        let outputs: Vec<usize> = outs.iter().map(|&o| local[o]).collect();
        let mut last_use = vec![None; graph.nodes.len()];
        for (r, rec) in graph.records.iter().enumerate() {
            for &i in &rec.inputs {
                last_use[i] = Some(r);
            }
        }
        // An input takes the structure every primitive reading it declares, if they agree.
        let structures = (0..ins.len())
            .map(|i| {
                let mut seen = graph.records.iter().flat_map(|rec| {
                    rec.inputs
                        .iter()
                        .enumerate()
                        .filter(move |(_, &n)| n == i)
                        .map(move |(p, _)| rec.op.structure(p))
                });
                match seen.next() {
                    Some(s) if seen.all(|t| t == s) => s,
                    _ => Structure::General,
                }
            })
            .collect();
        Ok(Recorded {
            name,
            arity: ins.len(),
            graph,
            outputs,
            constants,
            last_use,
            input_names: Vec::new(),
            output_names: Vec::new(),
            structures,
            buffers: None,
        })
    }
}

/// A recorded graph as a primitive ([`Tape::function`]): `(Y₀, …) = f(X₀, …)` where `f`
/// is the chain of records between the inputs and the outputs.
///
/// - **Shapes** are fixed to the recorded ones; other shapes are an
///   [`Error::WrongShape`] naming the function.
/// - **Forward** (`eval`) replays the records on the new input values; constants keep
///   their recorded values. Each intermediate value is dropped after its last reader.
/// - **Reverse** (`pullback`) replays the forward pass from the inputs, keeping only the
///   values the inner rules' [`crate::Rule::saves`] declare, then runs the tape's
///   reverse sweep with the given cotangents straight into the caller's buffers: the
///   first contribution to an input's buffer follows its [`Grad`] (write or add), later
///   ones add; a `Write` buffer nothing reaches is zero-filled.
/// - **Forward mode** (`pushforward`) replays values and tangents together, dropping
///   both after their last reader.
/// - **Saves**: the inputs only. The reverse rule recomputes everything else (the
///   function is a checkpoint: an outer tape keeps its inputs, not its
///   intermediates), so the outputs are not read; the checker's saves pass proves it.
/// - **Name**: the one given; input names default to `A`, `B`, `D`, … and each input's
///   [`Structure`] to the one every primitive reading it declares when they agree
///   (else general); both can be set ([`Recorded::with_input_names`],
///   [`Recorded::with_structure`]).
///
/// The checker proves a whole model with it, `Checker::new().check(&model, &[x])`, and
/// another tape applies it as one node, `tape.apply(model.clone(), &[x])`; cloning
/// shares the primitives and constants.
pub struct Recorded<T> {
    name: &'static str,
    arity: usize,
    /// Local numbering: the inputs are nodes `0..arity`.
    graph: Graph<T>,
    outputs: Vec<usize>,
    constants: Vec<(usize, ArcArray2<T>)>,
    /// The last record that reads each value.
    last_use: Vec<Option<usize>>,
    input_names: Vec<&'static str>,
    output_names: Vec<&'static str>,
    structures: Vec<Structure>,
    /// The buffers of [`Recorded::step`], made by its first call.
    buffers: Option<Box<Buffers<T>>>,
}

impl<T> Clone for Recorded<T> {
    fn clone(&self) -> Self {
        Recorded {
            name: self.name,
            arity: self.arity,
            graph: self.graph.clone(),
            outputs: self.outputs.clone(),
            constants: self.constants.clone(),
            last_use: self.last_use.clone(),
            input_names: self.input_names.clone(),
            output_names: self.output_names.clone(),
            structures: self.structures.clone(),
            // A clone makes its own buffers on its first step.
            buffers: None,
        }
    }
}

const INPUT_NAMES: [&str; 6] = ["A", "B", "D", "E", "F", "G"];
const OUTPUT_NAMES: [&str; 6] = ["C", "C1", "C2", "C3", "C4", "C5"];

/// Values and tangents of a replay, per local node.
type Replayed<'a, T> = Vec<Option<CowArray<'a, T, Ix2>>>;

impl<T: Real> Recorded<T> {
    /// Names the inputs in reports and errors (`θ`, `W`, …).
    pub fn with_input_names(mut self, names: &[&'static str]) -> Self {
        self.input_names = names.to_vec();
        self
    }
    /// Names the outputs in reports and errors.
    pub fn with_output_names(mut self, names: &[&'static str]) -> Self {
        self.output_names = names.to_vec();
        self
    }
    /// Sets the [`Structure`] of input `i` (what perturbations the checker makes).
    pub fn with_structure(mut self, i: usize, s: Structure) -> Self {
        if let Some(t) = self.structures.get_mut(i) {
            *t = s;
        }
        self
    }
    /// Number of records the function replays.
    pub fn len(&self) -> usize {
        self.graph.records.len()
    }
    /// Whether the function replays no record (its outputs are inputs or constants).
    pub fn is_empty(&self) -> bool {
        self.graph.records.is_empty()
    }

    /// Replays the records on `x` (and tangents `xdot`), keeping the values (and
    /// tangents) marked in `keep` to the end and dropping the others after their last
    /// reader.
    fn replay<'a>(
        &'a self,
        x: &[ArrayView2<'a, T>],
        xdot: Option<&[Option<ArrayView2<'a, T>>]>,
        keep: &[bool],
    ) -> Result<(Replayed<'a, T>, Replayed<'a, T>)> {
        let n = self.graph.nodes.len();
        let mut vals: Replayed<'a, T> = (0..n).map(|_| None).collect();
        let mut dots: Replayed<'a, T> = (0..n).map(|_| None).collect();
        for (i, v) in x.iter().enumerate() {
            vals[i] = Some((*v).into());
            if let Some(xd) = xdot {
                dots[i] = xd[i].map(Into::into);
            }
        }
        for (i, c) in &self.constants {
            vals[*i] = Some(c.view().into());
        }
        let zero = T::zero();
        let mut ws = Vec::new();
        for (r, rec) in self.graph.records.iter().enumerate() {
            let xv: SmallVec<[ArrayView2<'_, T>; 4]> = rec
                .inputs
                .iter()
                .map(|&i| match &vals[i] {
                    Some(v) => v.view(),
                    None => broadcast(&zero, self.graph.nodes[i].shape),
                })
                .collect();
            let y = rec.op.forward(&xv)?;
            let mut ydot = None;
            if xdot.is_some() {
                let xd: SmallVec<[Option<ArrayView2<'_, T>>; 4]> = rec
                    .inputs
                    .iter()
                    .map(|&i| dots[i].as_ref().map(|d| d.view()))
                    .collect();
                if xd.iter().any(Option::is_some) {
                    let yv: SmallVec<[ArrayView2<'_, T>; 2]> = y.iter().map(|v| v.view()).collect();
                    ydot = Some(push(rec, &xv, &yv, &xd, &mut ws)?);
                }
            }
            drop(xv);
            for &i in &rec.inputs {
                if self.last_use[i] == Some(r) && !keep[i] {
                    vals[i] = None;
                    dots[i] = None;
                }
            }
            for (&o, v) in rec.outputs.iter().zip(y) {
                if keep[o] || self.last_use[o].is_some() {
                    vals[o] = Some(v.into());
                }
            }
            for (&o, d) in rec.outputs.iter().zip(ydot.into_iter().flatten()) {
                if keep[o] || self.last_use[o].is_some() {
                    dots[o] = Some(d.into());
                }
            }
        }
        Ok((vals, dots))
    }

    fn output_mask(&self) -> Vec<bool> {
        let mut keep = vec![false; self.graph.nodes.len()];
        for &o in &self.outputs {
            keep[o] = true;
        }
        keep
    }

    /// One forward and one reverse pass of the function through buffers it owns and
    /// reuses: after the first call (which makes them), a step allocates no matrix
    /// storage, so a training loop that replays a recorded model on new data is as
    /// lean as the primitives chained by hand.
    ///
    /// `x` are the input values (say the data and the parameters), `ybar` one
    /// cotangent per output (`None` is zero), and `grads` one [`Grad`] per input: skip,
    /// first write (the buffer is not read; it is zero-filled if no contribution
    /// reaches it) or add. The outputs' values are read afterwards with
    /// [`Recorded::output`]. Every intermediate value is kept in its buffer between
    /// the passes (this is a replay for speed; for memory use the function as a
    /// checkpoint, [`Tape::checkpoint`]), and every cotangent has a buffer of its own.
    /// Constants keep their recorded values (class labels inside a loss are part of
    /// the primitive: a new set of labels is a new recording).
    ///
    /// ```
    /// use matgrad::prelude::*;
    /// use matgrad::check::random;
    /// use ndarray::Array2;
    ///
    /// let mut rng = random::rng(3);
    /// let mut tape = Tape::new();
    /// let w = tape.leaf(random::randn::<f64>(3, 4, &mut rng));
    /// let x = tape.constant(random::randn::<f64>(4, 5, &mut rng));
    /// let z = tape.apply1(MatMul::nn(), &[w, x])?;
    /// let h = tape.apply1(Map(Tanh), &[z])?;
    /// let c = tape.apply1(Sum, &[h])?;
    /// let mut model = tape.function("model", &[x, w], &[c])?;
    ///
    /// let (mut w0, one) = (tape.value(w)?.to_owned(), Array2::ones((1, 1)));
    /// let mut wbar = Array2::zeros((3, 4));
    /// for _ in 0..3 {
    ///     let x0 = random::randn::<f64>(4, 5, &mut rng); // a new batch
    ///     model.step(
    ///         &[x0.view(), w0.view()],
    ///         &[Some(one.view())],
    ///         &mut [Grad::Skip, Grad::Write(wbar.view_mut())],
    ///     )?;
    ///     let _loss = model.output(0).map(|c| c[(0, 0)]);
    ///     w0.scaled_add(-0.1, &wbar);
    /// }
    /// # Ok::<(), matgrad::Error>(())
    /// ```
    pub fn step(
        &mut self,
        x: &[ArrayView2<'_, T>],
        ybar: &[Option<ArrayView2<'_, T>>],
        grads: &mut [Grad<'_, T>],
    ) -> Result<()> {
        let name = self.name;
        let (xs, ys) = crate::primitive::validate_inputs(&*self, x)?;
        expect_count(name, "cotangents", self.outputs.len(), ybar.len())?;
        expect_count(name, "gradient buffers", self.arity, grads.len())?;
        for (k, (c, &s)) in ybar.iter().zip(&ys).enumerate() {
            if let Some(c) = c {
                let of = Rule::<T>::output_name(self, k);
                crate::primitive::expect(name, "cotangent", of, s, shape_of(c))?;
            }
        }
        for (i, (g, &s)) in grads.iter_mut().zip(&xs).enumerate() {
            if let Some((b, _)) = g.target() {
                let of = Rule::<T>::input_name(self, i);
                crate::primitive::expect(name, "gradient buffer", of, s, shape_of(&b))?;
            }
        }
        if self.buffers.is_none() {
            let b = Buffers::new(&self.graph, self.arity, &self.constants)?;
            self.buffers = Some(Box::new(b));
        }
        let Some(b) = self.buffers.as_deref_mut() else {
            return Ok(());
        };
        let run = b.run(&self.graph, &self.constants, &self.outputs, x, ybar, grads);
        if run.is_err() {
            // A failed pass may have left buffers taken out: make them anew next time.
            self.buffers = None;
        }
        run
    }

    /// The value of output `k` computed by the last [`Recorded::step`]; `None` before
    /// the first step, or when the output is not computed by a record (an input).
    pub fn output(&self, k: usize) -> Option<ArrayView2<'_, T>> {
        let b = self.buffers.as_deref()?;
        let o = *self.outputs.get(k)?;
        if let Some(c) = b.constant[o] {
            return Some(self.constants[c].1.view());
        }
        (o >= self.arity).then(|| b.values[o].view())
    }
}

/// What [`Recorded::step`] keeps between calls: a buffer for every value a record
/// computes and for every cotangent, the workspace, and the bookkeeping of a sweep.
struct Buffers<T> {
    /// Per local node: the value of a record's output (empty for inputs, constants).
    values: Vec<Array2<T>>,
    /// Per local node: the cotangent of a record's differentiable output (else empty).
    cots: Vec<Array2<T>>,
    /// Per local node: no contribution has reached its cotangent yet in this sweep.
    fresh: Vec<bool>,
    /// Per local node: which constant it is, if one.
    constant: Vec<Option<usize>>,
    ws: Vec<T>,
    /// The gradients asked for on the last call, and which nodes then need a cotangent.
    wanted: Vec<bool>,
    req: Vec<bool>,
}

/// An empty matrix: a placeholder while a buffer is lent out (no allocation).
fn empty<T: Real>() -> Array2<T> {
    Array2::zeros((0, 0))
}

/// The value of local node `i` of a replay: an input, a constant or a record's output.
fn node_view<'v, T: Real>(
    i: usize,
    x: &'v [ArrayView2<'_, T>],
    constants: &'v [(usize, ArcArray2<T>)],
    constant: &[Option<usize>],
    values: &'v [Array2<T>],
) -> ArrayView2<'v, T> {
    if let Some(v) = x.get(i) {
        v.view()
    } else if let Some(c) = constant[i] {
        constants[c].1.view()
    } else {
        values[i].view()
    }
}

impl<T: Real> Buffers<T> {
    fn new(graph: &Graph<T>, arity: usize, constants: &[(usize, ArcArray2<T>)]) -> Result<Self> {
        let n = graph.nodes.len();
        let mut values: Vec<Array2<T>> = (0..n).map(|_| empty()).collect();
        let mut cots: Vec<Array2<T>> = (0..n).map(|_| empty()).collect();
        let mut constant = vec![None; n];
        for (k, (i, _)) in constants.iter().enumerate() {
            constant[*i] = Some(k);
        }
        let mut ws = 0;
        for rec in &graph.records {
            for (k, &o) in rec.outputs.iter().enumerate() {
                let shape = graph.nodes[o].shape;
                values[o] = zeros("Tape", shape)?;
                if k < rec.diff && o >= arity {
                    cots[o] = new_buffer(shape)?;
                }
            }
            let xs: SmallVec<[Shape; 4]> =
                rec.inputs.iter().map(|&i| graph.nodes[i].shape).collect();
            ws = ws.max(rec.op.workspace(&xs));
        }
        Ok(Buffers {
            values,
            cots,
            fresh: vec![true; n],
            constant,
            ws: vec![T::zero(); ws],
            wanted: Vec::new(),
            req: Vec::new(),
        })
    }

    /// The forward pass into the value buffers, then the reverse sweep into the
    /// cotangent buffers and the caller's gradient buffers.
    fn run(
        &mut self,
        graph: &Graph<T>,
        constants: &[(usize, ArcArray2<T>)],
        outputs: &[usize],
        x: &[ArrayView2<'_, T>],
        ybar: &[Option<ArrayView2<'_, T>>],
        grads: &mut [Grad<'_, T>],
    ) -> Result<()> {
        let arity = x.len();
        let Buffers {
            values,
            cots,
            fresh,
            constant,
            ws,
            wanted,
            req,
        } = self;
        for rec in &graph.records {
            let mut ys: SmallVec<[Array2<T>; 2]> = rec
                .outputs
                .iter()
                .map(|&o| std::mem::replace(&mut values[o], empty()))
                .collect();
            let xv: SmallVec<[ArrayView2<'_, T>; 4]> = rec
                .inputs
                .iter()
                .map(|&i| node_view(i, x, constants, constant, values))
                .collect();
            let mut yv: SmallVec<[ArrayViewMut2<'_, T>; 2]> =
                ys.iter_mut().map(|y| y.view_mut()).collect();
            rec.op.forward_into(&xv, &mut yv, Some(&mut ws[..]))?;
            drop((xv, yv));
            for (&o, y) in rec.outputs.iter().zip(ys) {
                values[o] = y;
            }
        }
        if wanted.len() != arity
            || wanted
                .iter()
                .zip(grads.iter())
                .any(|(w, g)| *w != g.wanted())
        {
            wanted.clear();
            wanted.extend(grads.iter().map(Grad::wanted));
            *req = graph.requires((0..arity).filter(|&i| wanted[i]));
        }
        fresh.fill(true);
        for (f, g) in fresh.iter_mut().zip(grads.iter()) {
            *f = matches!(g, Grad::Write(_));
        }
        let accum = |fresh: &mut [bool], n: usize| {
            if std::mem::replace(&mut fresh[n], false) {
                Accum::Replace
            } else {
                Accum::Add
            }
        };
        for (&o, c) in outputs.iter().zip(ybar) {
            let Some(c) = c else { continue };
            if !req[o] {
                continue;
            }
            if o < arity {
                if let Some((buf, _)) = grads[o].target() {
                    accum(fresh, o).assign(buf, c.view());
                }
            } else {
                accum(fresh, o).assign(cots[o].view_mut(), c.view());
            }
        }
        for rec in graph.records.iter().rev() {
            let outs = &rec.outputs[..rec.diff];
            let groups = groups(rec, req);
            if groups.is_empty() || outs.iter().all(|&o| fresh[o]) {
                continue;
            }
            let taken: SmallVec<[Array2<T>; 2]> = outs
                .iter()
                .map(|&o| std::mem::replace(&mut cots[o], empty()))
                .collect();
            let mut local: SmallVec<[Array2<T>; 4]> = groups
                .iter()
                .map(|(n, _)| {
                    if *n >= arity {
                        std::mem::replace(&mut cots[*n], empty())
                    } else {
                        empty()
                    }
                })
                .collect();
            let ybar_v: SmallVec<[Option<ArrayView2<'_, T>>; 2]> = outs
                .iter()
                .zip(&taken)
                .map(|(&o, t)| (!fresh[o]).then(|| t.view()))
                .collect();
            let xv: SmallVec<[ArrayView2<'_, T>; 4]> = rec
                .inputs
                .iter()
                .map(|&i| node_view(i, x, constants, constant, values))
                .collect();
            let yv: SmallVec<[ArrayView2<'_, T>; 2]> =
                rec.outputs.iter().map(|&o| values[o].view()).collect();
            let passes = groups.iter().map(|(_, ps)| ps.len()).max().unwrap_or(0);
            for pass in 0..passes {
                let mut g: SmallVec<[Grad<'_, T>; 4]> =
                    (0..rec.inputs.len()).map(|_| Grad::Skip).collect();
                for ((n, ps), buf) in groups.iter().zip(local.iter_mut()) {
                    if let (true, Some(&p)) = (*n >= arity, ps.get(pass)) {
                        g[p] = Grad::new(buf.view_mut(), accum(fresh, *n));
                    }
                }
                for (n, gr) in grads.iter_mut().enumerate() {
                    let Some((_, ps)) = groups.iter().find(|(m, _)| *m == n) else {
                        continue;
                    };
                    if let (Some(&p), Some((buf, _))) = (ps.get(pass), gr.target()) {
                        g[p] = Grad::new(buf, accum(fresh, n));
                    }
                }
                rec.op
                    .backward_into(&xv, &yv, &ybar_v, &mut g, Some(&mut ws[..]))?;
            }
            drop((ybar_v, xv, yv));
            for ((n, _), buf) in groups.iter().zip(local) {
                if *n >= arity {
                    cots[*n] = buf;
                }
            }
            for (&o, t) in outs.iter().zip(taken) {
                cots[o] = t;
            }
        }
        // A `Write` buffer that nothing reached holds the zero gradient.
        for (g, &f) in grads.iter_mut().zip(fresh.iter()) {
            if let (true, Grad::Write(b)) = (f, g) {
                b.fill(T::zero());
            }
        }
        Ok(())
    }
}

impl<T: Real> Rule<T> for Recorded<T> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn arity(&self) -> usize {
        self.arity
    }
    fn outputs(&self) -> usize {
        self.outputs.len()
    }
    fn input_name(&self, i: usize) -> &'static str {
        self.input_names
            .get(i)
            .or(INPUT_NAMES.get(i))
            .copied()
            .unwrap_or("X")
    }
    fn output_name(&self, k: usize) -> &'static str {
        self.output_names
            .get(k)
            .or(OUTPUT_NAMES.get(k))
            .copied()
            .unwrap_or("Y")
    }
    fn structure(&self, i: usize) -> Structure {
        self.structures.get(i).copied().unwrap_or_default()
    }
    fn shapes(&self, x: &[Shape]) -> Result<Shapes> {
        for (i, &s) in x.iter().enumerate() {
            let expected = self.graph.nodes[i].shape;
            if s != expected {
                return Err(Error::WrongShape {
                    op: self.name,
                    name: "input",
                    of: Rule::<T>::input_name(self, i),
                    expected,
                    got: s,
                });
            }
        }
        Ok(self
            .outputs
            .iter()
            .map(|&o| self.graph.nodes[o].shape)
            .collect())
    }
    fn saves(&self, _wanted: &[bool]) -> Saves {
        (0..self.arity).fold(Saves::NONE, Saves::input)
    }
    fn eval(
        &self,
        x: &[ArrayView2<'_, T>],
        y: &mut [ArrayViewMut2<'_, T>],
        _ws: &mut [T],
    ) -> Result<()> {
        let (vals, _) = self.replay(x, None, &self.output_mask())?;
        for (yk, &o) in y.iter_mut().zip(&self.outputs) {
            if let Some(v) = &vals[o] {
                yk.assign(v);
            }
        }
        Ok(())
    }
    fn pullback(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        ybar: &Partials<'_, '_, T>,
        grads: &mut [Grad<'_, T>],
        _ws: &mut [T],
    ) -> Result<()> {
        let n = self.graph.nodes.len();
        let targets: Vec<usize> = (0..self.arity).filter(|&i| grads[i].wanted()).collect();
        let req = self.graph.requires(targets.iter().copied());
        let keep = self.graph.saved(&req);
        let (vals, _) = self.replay(x, None, &keep)?;
        let values: Vec<Option<ArrayView2<'_, T>>> =
            vals.iter().map(|v| v.as_ref().map(|v| v.view())).collect();
        let mut cots: Vec<Cot<'_, T>> = (0..n).map(|_| Cot::None).collect();
        for (i, g) in grads.iter_mut().enumerate() {
            if let Some((buf, acc)) = g.target() {
                cots[i] = Cot::Ext {
                    buf,
                    fresh: acc == Accum::Replace,
                };
            }
        }
        for (k, &o) in self.outputs.iter().enumerate() {
            if let Some(c) = ybar.get(k) {
                cots[o].seed(c);
            }
        }
        self.graph.reverse(
            &values,
            &mut cots,
            &req,
            &vec![false; n],
            &mut Pool::default(),
            &mut Vec::new(),
        )?;
        for c in cots.iter_mut().take(self.arity) {
            c.finish();
        }
        Ok(())
    }
    fn pushforward(
        &self,
        x: &[ArrayView2<'_, T>],
        _y: &[ArrayView2<'_, T>],
        xdot: &Partials<'_, '_, T>,
        ydot: &mut [ArrayViewMut2<'_, T>],
        _ws: &mut [T],
    ) -> Result<()> {
        let xd: Vec<Option<ArrayView2<'_, T>>> = (0..self.arity).map(|i| xdot.get(i)).collect();
        let (_, dots) = self.replay(x, Some(&xd), &self.output_mask())?;
        for (d, &o) in ydot.iter_mut().zip(&self.outputs) {
            match &dots[o] {
                Some(t) => d.assign(t),
                None => d.fill(T::zero()),
            }
        }
        Ok(())
    }
}
