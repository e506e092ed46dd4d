//! The one error type of the crate.

use std::fmt;

/// A matrix shape, printed as `rows×cols`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Shape(pub usize, pub usize);

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{}", self.0, self.1)
    }
}

impl From<(usize, usize)> for Shape {
    fn from((r, c): (usize, usize)) -> Self {
        Shape(r, c)
    }
}

/// Everything that can go wrong in matgrad, with the primitive and the shapes involved.
///
/// Fields are named for what they hold; the `Display` text is the documentation a user sees.
#[allow(missing_docs)]
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum Error {
    /// Two operands whose shapes must agree do not.
    #[error("{op}: {what}, {lhs_name} is {lhs}, {rhs_name} is {rhs}")]
    ShapeMismatch {
        op: &'static str,
        what: &'static str,
        lhs_name: &'static str,
        lhs: Shape,
        rhs_name: &'static str,
        rhs: Shape,
    },
    /// A cotangent, tangent or gradient buffer whose shape is not the one the rule needs.
    #[error("{op}: {name} must be {expected} (the shape of {of}), got {got}")]
    WrongShape {
        op: &'static str,
        name: &'static str,
        of: &'static str,
        expected: Shape,
        got: Shape,
    },
    /// An input that must be square is not.
    #[error("{op}: {name} must be square, got {got}")]
    NotSquare {
        op: &'static str,
        name: &'static str,
        got: Shape,
    },
    /// A reshape whose target holds a different number of elements.
    #[error("{op}: cannot reshape {from} ({} elements) into {to} ({} elements)", from.0 as u128 * from.1 as u128, to.0 as u128 * to.1 as u128)]
    BadReshape {
        op: &'static str,
        from: Shape,
        to: Shape,
    },
    /// The wrong number of inputs or tangents for a primitive's arity.
    #[error("{op}: expected {expected} {what}, got {got}")]
    Arity {
        op: &'static str,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// Cholesky met a pivot that is not positive (index counts from 0).
    #[error("{op}: matrix is not positive definite, the leading minor of order {} is not positive (pivot {index})", index + 1)]
    NotPositiveDefinite { op: &'static str, index: usize },
    /// A singular matrix: diagonal entry `index` (from 0) of its triangular factor is
    /// zero. The factor is the matrix itself for a triangular solve, `L` for a Cholesky
    /// factor, and `U` of the LU factorisation for a general matrix.
    #[error(
        "{op}: the matrix is singular, diagonal entry {index} of its triangular factor is zero"
    )]
    Singular { op: &'static str, index: usize },
    /// NaN or infinity in an input that LAPACK would turn into garbage.
    #[error("{op}: {name} contains a non-finite value at ({row}, {col})")]
    NonFinite {
        op: &'static str,
        name: &'static str,
        row: usize,
        col: usize,
    },
    /// Two eigenvalues (or two singular values, indices from 0) coincide within the
    /// tolerance of `docs/math.md` and the cotangent or tangent acts inside their
    /// subspace, where the eigenvectors (singular vectors) are not determined by the
    /// matrix and the derivative is not defined.
    #[error("{op}: values {i} and {j} coincide (within the degeneracy tolerance) and the cotangent or tangent acts inside their subspace, where the derivative is not defined")]
    DegenerateEigenvalues {
        op: &'static str,
        i: usize,
        j: usize,
    },
    /// A singular value is zero within the tolerance of `docs/math.md` (index from 0)
    /// and the cotangent or tangent has a component that the rule would divide by it.
    #[error("{op}: singular value {index} is zero (within the degeneracy tolerance) and the cotangent or tangent needs its inverse, where the derivative is not defined")]
    ZeroSingularValue { op: &'static str, index: usize },
    /// An invalid argument that is not a shape (a zero step, a negative block size, ...).
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },
    /// A dimension too large for the 32-bit BLAS interface.
    #[error("{op}: dimension {dim} exceeds the BLAS integer range")]
    TooLarge { op: &'static str, dim: usize },
    /// A matrix or workspace whose size in bytes overflows the address space, or that
    /// the allocator cannot provide; reported before anything is computed.
    #[error(
        "{op}: {name} needs {elements} elements of {bytes} bytes each, more than can be allocated"
    )]
    CannotAllocate {
        op: &'static str,
        name: &'static str,
        elements: u128,
        bytes: usize,
    },
    /// A diagonal entry of a triangular matrix or factor (a pivot, index from 0) that is
    /// not zero but so small that its reciprocal overflows: a solve through it would
    /// return infinities or NaN (see `docs/math.md`, "Tiny pivots").
    #[error("{op}: the matrix is numerically singular: diagonal entry {index} of its triangular factor is {value:e}, not zero but so small that the solve overflows")]
    IllConditioned {
        op: &'static str,
        index: usize,
        value: f64,
    },
    /// A result that overflows the precision `dtype` although the inputs are finite and
    /// the computation was scaled to avoid spurious overflow: its exact value lies
    /// beyond the largest finite number (a solve whose right side is near the overflow
    /// threshold; see `docs/math.md`, "Tiny and huge entries").
    #[error("{op}: {name} overflows {dtype}: its entries exceed the largest finite {dtype}")]
    Overflow {
        op: &'static str,
        name: &'static str,
        dtype: &'static str,
    },
    /// An error the checker met at a perturbed point `Xᵢ + tU` (not at the point it was
    /// given): the primitive's own error, or an output shape that differs there.
    #[error("{op}: at a perturbed point (input {input} moved by {step:e} along a random direction): {source}")]
    Perturbed {
        op: &'static str,
        input: &'static str,
        step: f64,
        source: Box<Error>,
    },
    /// A caller-owned workspace shorter than the rule needs.
    #[error("{op}: the workspace holds {got} elements, the rule needs {needed}")]
    Workspace {
        op: &'static str,
        needed: usize,
        got: usize,
    },
    /// An iterative factorisation (eigenvalues, singular values) did not converge.
    #[error("{op}: the factorisation did not converge")]
    NoConvergence { op: &'static str },
    /// A LAPACK routine reported a failure matgrad does not map to a more specific error.
    #[error("{op}: LAPACK returned info = {info}")]
    Lapack { op: &'static str, info: i32 },
    /// A class label outside `0..classes` (the example index counts from 0).
    #[error("{op}: label {label} of example {index} is out of range, there are {classes} classes")]
    LabelOutOfRange {
        op: &'static str,
        index: usize,
        label: usize,
        classes: usize,
    },
    /// An input with no entries where the operation needs some (a mean over nothing).
    #[error("{op}: {name} is {got}, but {what}")]
    Empty {
        op: &'static str,
        name: &'static str,
        got: Shape,
        what: &'static str,
    },
    /// A [`crate::tape::Var`] used with a tape that did not record it.
    #[error("{op}: the Var belongs to another tape")]
    ForeignVar { op: &'static str },
    /// A reverse sweep without a cotangent from an output that is not 1×1.
    #[error("{op}: without a cotangent the output must be 1×1, got {got}; give its cotangent")]
    NotScalar { op: &'static str, got: Shape },
    /// A value the tape released ([`crate::tape::Tape::release_unsaved`]) was needed.
    #[error("{op}: {name} was released from the tape (no reverse rule declares it in saves)")]
    Released {
        op: &'static str,
        name: &'static str,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Shape of a 2-D array as a [`Shape`].
pub fn shape_of<S: ndarray::Data>(a: &ndarray::ArrayBase<S, ndarray::Ix2>) -> Shape {
    Shape(a.nrows(), a.ncols())
}
