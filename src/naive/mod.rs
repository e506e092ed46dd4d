//! Scalar-loop reference implementations of the rules: test oracles, and the
//! baseline of the BLAS-against-naive benchmarks.
