//! Copying one view into another of the same shape whatever their layouts: the
//! memory movement of transposes and rearrangements.
//!
//! When both views run along the same axis in memory the copy is a stream, and
//! ndarray's own loop is as fast as memory. When one has contiguous rows and the other
//! contiguous columns, an entry-by-entry walk reads one of them across its stride: each
//! read touches a new cache line, and at a power-of-two stride all of them fall into the
//! same few cache sets and evict each other. [`copy`] then goes by 8×8 blocks aligned
//! to the cache lines of both views, so that each line read or written is used whole,
//! in [`TILE`]`×`[`TILE`] tiles, in one of three orders:
//!
//! - along 8-row strips, so that the destination's rows are written as streams, or down
//!   8-column strips, so that the source's columns are read as streams, whichever side
//!   is not spaced by a multiple of 2 KiB (a power-of-two row length, whose rows share
//!   cache sets);
//! - when both are, and the matrix is past the core's cache but small enough for the
//!   shared one (1 to 4 MiB, such as 512×512 `f64`), through a tile-sized buffer: each
//!   tile is transposed into the buffer, and the buffer's rows are then copied out
//!   whole, so that the destination is written row segment by row segment while the
//!   source is read down its columns (at 512×512, 45% of a copy's bandwidth where
//!   either strip order reaches about 35%), the destination tile's lines requested
//!   ahead with prefetches;
//! - otherwise (neither or both spaced so, outside that range) rows for a matrix of at
//!   most 1 MiB, which stays in the core's cache, and columns for a larger one.
//!
//! On x86-64 with AVX2 an 8×8 block of `f64` is transposed in registers. Past 4 MiB,
//! where the matrix leaves the core's caches, a replacing copy whose destination rows
//! are a whole number of cache lines apart writes each block's rows with non-temporal
//! stores: whole lines go to memory without first being read into the cache, where an
//! ordinary store reads every line it is about to overwrite (as the plain copy the
//! report compares against does).
//!
//! The choice was measured on shapes from 64² to 2048², powers of two and not, square
//! and not, against a plain copy of the same bytes (`cargo run --release -p
//! bench-report`, the Transpose and Vectorize table of `docs/benchmarks.md`).

use super::Accum;
use crate::error::{Error, Result, Shape};
use crate::Real;
use ndarray::{ArrayView2, ArrayViewMut2, Axis};

/// Order of the square tiles the transposing copy goes by.
pub const TILE: usize = 64;

/// Bytes of a matrix up to which the transposing copy assumes it stays in the core's
/// cache.
const IN_CACHE: usize = 1 << 20;

/// Bytes of a matrix up to which the transposing copy of two views spaced by
/// multiples of 2 KiB goes through a tile-sized buffer (when past [`IN_CACHE`]).
const BUFFERED: usize = 4 << 20;

/// Bytes of a matrix past which the transposing copy of `f64` (replacing, with AVX2)
/// writes the destination with non-temporal stores, when its rows are a whole number of
/// cache lines apart so that every block's rows are whole lines.
const STREAM_ABOVE: usize = 4 << 20;

/// Entries per 8×8 block side; one 64-byte cache line of `f64`.
const B: usize = 8;

/// One tile, aligned to a cache line: the buffer of the buffered order.
#[repr(C, align(64))]
struct Buffer<T>([T; TILE * TILE]);

/// `dst ← src` (`Replace`, `dst` not read) or `dst ← dst + src` (`Add`), entrywise, for
/// two views of the same shape with any strides. A view with contiguous rows paired
/// with one with contiguous columns (a transpose, `vec` of a row-major matrix) is copied
/// by cache-aligned tiles; every other pairing streams through ndarray.
pub fn copy<T: Real>(
    mut dst: ArrayViewMut2<'_, T>,
    mut src: ArrayView2<'_, T>,
    accum: Accum,
) -> Result<()> {
    if dst.dim() != src.dim() {
        return Err(Error::WrongShape {
            op: "copy",
            name: "destination",
            of: "the source",
            expected: Shape(src.nrows(), src.ncols()),
            got: Shape(dst.nrows(), dst.ncols()),
        });
    }
    // Reversing an axis of both views pairs the same entries: afterwards `dst` has no
    // negative stride, so its rows or columns may run forward through memory.
    for ax in [Axis(0), Axis(1)] {
        if dst.stride_of(ax) < 0 {
            dst.invert_axis(ax);
            src.invert_axis(ax);
        }
    }
    let (m, n) = dst.dim();
    let rows = |s: &[isize]| s[1] == 1 || n == 1;
    let cols = |s: &[isize]| s[0] == 1 || m == 1;
    let small = m < B || n < B;
    if !small && rows(dst.strides()) && cols(src.strides()) && !rows(src.strides()) {
        transpose_tiles(dst, src, accum);
    } else if !small && cols(dst.strides()) && rows(src.strides()) && !cols(src.strides()) {
        transpose_tiles(dst.reversed_axes(), src.reversed_axes(), accum);
    } else {
        accum.assign(dst, src);
    }
    Ok(())
}

/// `dst[i][j] (+)= src[i][j]` where `dst` has unit column stride (contiguous rows,
/// non-negative row stride) and `src` unit row stride (contiguous columns).
fn transpose_tiles<T: Real>(mut dst: ArrayViewMut2<'_, T>, src: ArrayView2<'_, T>, accum: Accum) {
    let (m, n) = dst.dim();
    let v = Views {
        d: dst.as_mut_ptr(),
        dr: dst.stride_of(Axis(0)),
        s: src.as_ptr(),
        sc: src.stride_of(Axis(1)),
    };
    // SAFETY: `dst` and `src` are live views of shape m×n; `tiles` only forms the
    // offsets `i·dr + j` (dst) and `i + j·sc` (src) for i < m, j < n, the addresses
    // ndarray gives entry (i, j), and `dst` is a unique mutable view, so its writes
    // alias neither `src` nor each other; the buffered order's other writes go to its
    // own stack buffer, at offsets `r·TILE + c` for r, c < TILE. The AVX2 path runs
    // only for `T = f64` on a CPU that has AVX2.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f64>()
            && std::arch::is_x86_feature_detected!("avx2")
        {
            let v = Views {
                d: v.d.cast::<f64>(),
                dr: v.dr,
                s: v.s.cast::<f64>(),
                sc: v.sc,
            };
            let stream = m * n * std::mem::size_of::<f64>() > STREAM_ABOVE
                && (v.dr.unsigned_abs() * std::mem::size_of::<f64>()) % 64 == 0;
            return match accum {
                Accum::Replace if stream => avx2::tiles_f64_stream(v, m, n),
                Accum::Replace => avx2::tiles_f64::<false>(v, m, n),
                Accum::Add => avx2::tiles_f64::<true>(v, m, n),
            };
        }
        tiles(v, m, n, accum, Scalar(accum), Scalar(Accum::Replace));
    }
}

/// The two views of a transposing copy: `dst` (row stride `dr`, unit column stride)
/// and `src` (unit row stride, column stride `sc`), by their first entries.
#[derive(Clone, Copy)]
struct Views<T> {
    d: *mut T,
    dr: isize,
    s: *const T,
    sc: isize,
}

impl<T> Views<T> {
    /// The same views from entry `(i, j)` on.
    #[inline(always)]
    unsafe fn at(self, i: usize, j: usize) -> Views<T> {
        let (i, j) = (i as isize, j as isize);
        Views {
            d: self.d.offset(i * self.dr + j),
            s: self.s.offset(i + j * self.sc),
            ..self
        }
    }
}

/// Copies one 8×8 block of a transposing copy.
trait Block<T> {
    /// # Safety
    /// The 8×8 block at the origin of `v` lies inside both views.
    unsafe fn block(&self, v: Views<T>);
}

/// Entry by entry, for any element type and CPU.
struct Scalar(Accum);

impl<T: Real> Block<T> for Scalar {
    #[inline(always)]
    unsafe fn block(&self, v: Views<T>) {
        scalar_block(v, (0, B), (0, B), self.0);
    }
}

/// The m×n transposing copy by tiles, `block` copying each whole 8×8 block (and
/// `fill`, which must write, never add, each whole 8×8 block into the buffer of the
/// buffered order).
///
/// Blocks start where `dst`'s row 0 and `src`'s column 0 start a cache line (for `f64`;
/// 8 entries in general); the strips before those points and the edges of the tiles are
/// copied entry by entry. All rows of `dst` share the alignment of row 0 when the row
/// stride is a whole number of lines, the power-of-two case where misaligned blocks
/// would share cache sets.
///
/// # Safety
/// `v` describes two m×n views as in [`transpose_tiles`]; `block` copies exactly the
/// 8×8 block at the origin it is given, `fill` likewise with `Accum::Replace`.
#[inline(always)]
unsafe fn tiles<T: Real>(
    v: Views<T>,
    m: usize,
    n: usize,
    accum: Accum,
    block: impl Block<T>,
    fill: impl Block<T>,
) {
    // A block row spans `line` bytes: one cache line of f64.
    let size = std::mem::size_of::<T>();
    let line = B * size;
    let lead = |p: usize| ((line - p % line) % line / size).min(B - 1);
    let j0 = lead(v.d as usize).min(n);
    let i0 = lead(v.s as usize).min(m);
    // Rows or columns a multiple of 2 KiB apart share a few cache sets. When only one
    // side's are, stream that side: along 8-row strips of each column of tiles when it
    // is the destination (each of its rows is then written as a stream), down 8-column
    // strips of each tile when it is the source. When both are, a matrix in the shared
    // cache goes through a buffer. Otherwise rows for a matrix that stays in the core's
    // cache, and columns, read as streams, for a larger one.
    let aliased = |stride: isize| (stride.unsigned_abs() * size) % 2048 == 0;
    let (dst_aliased, src_aliased) = (aliased(v.dr), aliased(v.sc));
    let bytes = m * n * size;
    if dst_aliased && src_aliased && bytes > IN_CACHE && bytes <= BUFFERED {
        return buffered(v, (0, m), (0, n), accum, fill);
    }
    let by_rows = if dst_aliased != src_aliased {
        dst_aliased
    } else {
        bytes <= IN_CACHE
    };
    scalar_block(v, (0, m), (0, j0), accum);
    scalar_block(v, (0, i0), (j0, n), accum);
    if by_rows {
        let ie = i0 + (m - i0) / B * B;
        for tj in (j0..n).step_by(TILE) {
            let tj1 = (tj + TILE).min(n);
            let je = tj + (tj1 - tj) / B * B;
            for i in (i0..ie).step_by(B) {
                for j in (tj..je).step_by(B) {
                    block.block(v.at(i, j));
                }
                scalar_block(v, (i, i + B), (je, tj1), accum);
            }
            scalar_block(v, (ie, m), (tj, tj1), accum);
        }
        return;
    }
    for ti in (i0..m).step_by(TILE) {
        let ti1 = (ti + TILE).min(m);
        let ie = ti + (ti1 - ti) / B * B;
        for tj in (j0..n).step_by(TILE) {
            let tj1 = (tj + TILE).min(n);
            let je = tj + (tj1 - tj) / B * B;
            // Down each strip of 8 columns: the source reads continue down the same
            // columns, the destination writes move to new rows.
            for j in (tj..je).step_by(B) {
                for i in (ti..ie).step_by(B) {
                    block.block(v.at(i, j));
                }
                scalar_block(v, (ie, ti1), (j, j + B), accum);
            }
            scalar_block(v, (ti, ti1), (je, tj1), accum);
        }
    }
}

/// Rows `r` and columns `c` of the transposing copy through a tile-sized buffer: the
/// whole 8×8 blocks of each tile are transposed by `fill` into the buffer (rows
/// [`TILE`] entries apart), whose rows then go to `dst` whole; the tile's edges go
/// entry by entry. Blocks start at the views' first entries, aligned or not: the
/// buffer is aligned whatever the views are, and leading strips that align the source
/// measured no faster.
///
/// # Safety
/// As for [`tiles`]; every `(i, j)` in the ranges is an entry of both views.
#[inline(always)]
unsafe fn buffered<T: Real>(
    v: Views<T>,
    r: (usize, usize),
    c: (usize, usize),
    accum: Accum,
    fill: impl Block<T>,
) {
    let mut buf = Buffer([T::zero(); TILE * TILE]);
    let b = buf.0.as_mut_ptr();
    for ti in (r.0..r.1).step_by(TILE) {
        let ti1 = (ti + TILE).min(r.1);
        let ie = ti + (ti1 - ti) / B * B;
        for tj in (c.0..c.1).step_by(TILE) {
            let tj1 = (tj + TILE).min(c.1);
            let je = tj + (tj1 - tj) / B * B;
            for i in ti..ti1 {
                prefetch_row(v.at(i, tj).d, tj1 - tj);
            }
            for j in (tj..je).step_by(B) {
                for i in (ti..ie).step_by(B) {
                    let src = v.at(i, j).s;
                    let at = ((i - ti) * TILE + (j - tj)) as isize;
                    fill.block(Views {
                        d: b.offset(at),
                        dr: TILE as isize,
                        s: src,
                        sc: v.sc,
                    });
                }
            }
            for i in ti..ie {
                let row = v.at(i, tj).d;
                let from = b.add((i - ti) * TILE);
                match accum {
                    Accum::Replace => std::ptr::copy_nonoverlapping(from, row, je - tj),
                    Accum::Add => {
                        for k in 0..je - tj {
                            *row.add(k) += *from.add(k);
                        }
                    }
                }
            }
            scalar_block(v, (ie, ti1), (tj, tj1), accum);
            scalar_block(v, (ti, ie), (je, tj1), accum);
        }
    }
}

/// Asks for the cache lines of `len` entries from `row` on, ahead of writing them.
///
/// The buffered order writes each tile's destination as [`TILE`] row segments of one
/// tile's width, each a few cache lines in its own page: streams too short for the
/// hardware prefetchers, so every line's read for ownership would stall the copy-out.
/// Asked for before the tile is transposed into the buffer, the lines arrive while that
/// work runs. (At 512×512 `f64` in the report's rounds, where other cases' matrices
/// pass through the cache between calls, the slowest of the four cases went from 32% to
/// 38% of a copy's bandwidth to 39% to 48%, in alternated runs of the two builds.)
#[inline(always)]
fn prefetch_row<T>(row: *const T, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = len * std::mem::size_of::<T>();
        let p = row.cast::<i8>();
        for off in (0..bytes).step_by(64) {
            // SAFETY: prefetching is a hint that never faults; `wrapping_add` forms
            // the address without asserting it lies in an allocation.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (row, len);
}

/// Rows `r` and columns `c` of the transposing copy, entry by entry.
///
/// # Safety
/// Every `(i, j)` in the ranges is an entry of both views `v` describes.
#[inline(always)]
unsafe fn scalar_block<T: Real>(v: Views<T>, r: (usize, usize), c: (usize, usize), accum: Accum) {
    for j in c.0..c.1 {
        for i in r.0..r.1 {
            let x = *v.s.offset(i as isize + j as isize * v.sc);
            accum.store(&mut *v.d.offset(i as isize * v.dr + j as isize), x);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{tiles, Block, Views};
    use crate::blas::Accum;
    use std::arch::x86_64::*;

    /// The tiled transposing copy of `f64` with the 8×8 blocks in AVX2 registers.
    ///
    /// # Safety
    /// As for `tiles`, on a CPU that has AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tiles_f64<const ADD: bool>(v: Views<f64>, m: usize, n: usize) {
        let accum = if ADD { Accum::Add } else { Accum::Replace };
        tiles(v, m, n, accum, Avx2::<ADD>, Avx2::<false>);
    }

    /// The tiled transposing copy of `f64` writing the destination with non-temporal
    /// stores.
    ///
    /// # Safety
    /// As for `tiles`, on a CPU that has AVX2, with the destination's row stride a whole
    /// number of cache lines.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tiles_f64_stream(v: Views<f64>, m: usize, n: usize) {
        tiles(v, m, n, Accum::Replace, Stream, Avx2::<false>);
        _mm_sfence();
    }

    /// The 8×8 block in AVX2 registers, written with non-temporal stores.
    struct Stream;

    impl Block<f64> for Stream {
        /// `tiles` starts the blocks where `dst`'s rows start a cache line, and the rows
        /// share that alignment: every store is to a 32-byte boundary, as
        /// `_mm256_stream_pd` requires.
        #[inline(always)]
        unsafe fn block(&self, v: Views<f64>) {
            debug_assert_eq!(v.d as usize % 64, 0);
            block_with::<false, true>(v);
        }
    }

    /// The 8×8 block in AVX2 registers.
    struct Avx2<const ADD: bool>;

    impl<const ADD: bool> Block<f64> for Avx2<ADD> {
        #[inline(always)]
        unsafe fn block(&self, v: Views<f64>) {
            block::<ADD>(v);
        }
    }

    /// Transposes the 4×4 block whose columns are `v0..v3` into its rows.
    #[inline(always)]
    unsafe fn t4(v0: __m256d, v1: __m256d, v2: __m256d, v3: __m256d) -> [__m256d; 4] {
        let t0 = _mm256_unpacklo_pd(v0, v1);
        let t1 = _mm256_unpackhi_pd(v0, v1);
        let t2 = _mm256_unpacklo_pd(v2, v3);
        let t3 = _mm256_unpackhi_pd(v2, v3);
        [
            _mm256_permute2f128_pd(t0, t2, 0x20),
            _mm256_permute2f128_pd(t1, t3, 0x20),
            _mm256_permute2f128_pd(t0, t2, 0x31),
            _mm256_permute2f128_pd(t1, t3, 0x31),
        ]
    }

    #[inline(always)]
    unsafe fn put<const ADD: bool, const NT: bool>(p: *mut f64, x: __m256d) {
        if NT {
            return _mm256_stream_pd(p, x);
        }
        let x = if ADD {
            _mm256_add_pd(_mm256_loadu_pd(p), x)
        } else {
            x
        };
        _mm256_storeu_pd(p, x);
    }

    /// One 8×8 block: the eight source columns are read whole (one cache line each when
    /// aligned), transposed in registers, and the eight destination rows written whole.
    #[inline(always)]
    unsafe fn block<const ADD: bool>(v: Views<f64>) {
        block_with::<ADD, false>(v)
    }

    #[inline(always)]
    unsafe fn block_with<const ADD: bool, const NT: bool>(v: Views<f64>) {
        let mut lo = [_mm256_setzero_pd(); 8];
        let mut hi = [_mm256_setzero_pd(); 8];
        for c in 0..8 {
            let col = v.s.offset(c as isize * v.sc);
            lo[c] = _mm256_loadu_pd(col);
            hi[c] = _mm256_loadu_pd(col.add(4));
        }
        // Rows 0..4 of the block are the left (columns 0..4) and right (4..8) quarters
        // transposed from the top halves of the columns; rows 4..8 from the bottom ones.
        let [l0, l1, l2, l3] = t4(lo[0], lo[1], lo[2], lo[3]);
        let [r0, r1, r2, r3] = t4(lo[4], lo[5], lo[6], lo[7]);
        let [l4, l5, l6, l7] = t4(hi[0], hi[1], hi[2], hi[3]);
        let [r4, r5, r6, r7] = t4(hi[4], hi[5], hi[6], hi[7]);
        let row = |r: isize| v.d.offset(r * v.dr);
        put::<ADD, NT>(row(0), l0);
        put::<ADD, NT>(row(0).add(4), r0);
        put::<ADD, NT>(row(1), l1);
        put::<ADD, NT>(row(1).add(4), r1);
        put::<ADD, NT>(row(2), l2);
        put::<ADD, NT>(row(2).add(4), r2);
        put::<ADD, NT>(row(3), l3);
        put::<ADD, NT>(row(3).add(4), r3);
        put::<ADD, NT>(row(4), l4);
        put::<ADD, NT>(row(4).add(4), r4);
        put::<ADD, NT>(row(5), l5);
        put::<ADD, NT>(row(5).add(4), r5);
        put::<ADD, NT>(row(6), l6);
        put::<ADD, NT>(row(6).add(4), r6);
        put::<ADD, NT>(row(7), l7);
        put::<ADD, NT>(row(7).add(4), r7);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2, ShapeBuilder};

    fn mat<T: Real>(m: usize, n: usize, seed: usize) -> Array2<T> {
        Array2::from_shape_fn((m, n), |(i, j)| {
            T::from(((i * 131 + j * 71 + seed * 29 + 1) as f64 * 0.7548776662).sin()).unwrap()
        })
    }

    /// Sources of shape m×n in every layout `copy` tells apart, from owners made here.
    struct Sources<T> {
        a: Array2<T>,
        at: Array2<T>,
        wide: Array2<T>,
        big: Array2<T>,
    }

    impl<T: Real> Sources<T> {
        fn new(m: usize, n: usize) -> Self {
            Sources {
                a: mat(m, n, 1),
                at: mat(n, m, 2),
                wide: mat(n + 2, m + 3, 3),
                big: mat(2 * m, 2 * n, 4),
            }
        }
        fn views(&self) -> Vec<(&'static str, ArrayView2<'_, T>)> {
            let (m, n) = self.a.dim();
            vec![
                ("standard", self.a.view()),
                ("column-major", self.at.t()),
                (
                    "column-major, offset",
                    self.wide.slice(s![1..n + 1, 1..m + 1]).reversed_axes(),
                ),
                (
                    "column-major, columns reversed",
                    self.at.slice(s![..;-1, ..]).reversed_axes(),
                ),
                ("rows reversed", self.a.slice(s![..;-1, ..])),
                ("stepped", self.big.slice(s![..;2, 1..;2])),
            ]
        }
    }

    /// The destination layouts: an owner and the m×n view `copy` writes through.
    const DESTS: [&str; 6] = [
        "standard",
        "column-major",
        "offset",
        "rows reversed",
        "column-major, columns reversed",
        "stepped",
    ];

    fn owner<T: Real>(kind: &str, m: usize, n: usize, fill: T) -> Array2<T> {
        match kind {
            "column-major" | "column-major, columns reversed" => {
                Array2::from_elem((m, n).f(), fill)
            }
            "offset" => Array2::from_elem((m + 1, n + 5), fill),
            "stepped" => Array2::from_elem((2 * m, n), fill),
            _ => Array2::from_elem((m, n), fill),
        }
    }

    fn dest<'a, T: Real>(kind: &str, o: &'a mut Array2<T>) -> ArrayViewMut2<'a, T> {
        let (r, c) = o.dim();
        match kind {
            "offset" => o.slice_mut(s![1.., 3..c - 2]),
            "rows reversed" => o.slice_mut(s![..;-1, ..]),
            "column-major, columns reversed" => o.slice_mut(s![.., ..;-1]),
            "stepped" => o.slice_mut(s![..r;2, ..]),
            _ => o.view_mut(),
        }
    }

    /// `copy` against ndarray's entrywise loop for every pairing of layouts, in both
    /// modes; `Replace` writes into NaN, which it must not read. Exact equality: a copy
    /// and one addition per entry round the same way whatever the order.
    fn agrees<T: Real>(m: usize, n: usize) {
        let srcs = Sources::<T>::new(m, n);
        let start = mat::<T>(m, n, 5);
        for (sname, src) in srcs.views() {
            assert_eq!(src.dim(), (m, n), "{sname}");
            for dname in DESTS {
                for accum in [Accum::Replace, Accum::Add] {
                    let fill = T::nan();
                    let mut o = owner(dname, m, n, fill);
                    let mut want = start.clone();
                    if accum == Accum::Add {
                        dest(dname, &mut o).assign(&start);
                        want += &src;
                    } else {
                        want.assign(&src);
                    }
                    copy(dest(dname, &mut o), src, accum).unwrap();
                    let got = dest(dname, &mut o).to_owned();
                    assert!(got == want, "{m}×{n} {accum:?} from {sname} into {dname}");
                }
            }
        }
    }

    #[test]
    fn every_layout_and_size_copies_exactly() {
        // Smaller than a block, odd, not multiples of the block or the tile, powers of two.
        for (m, n) in [
            (1, 1),
            (3, 5),
            (7, 9),
            (8, 8),
            (9, 8),
            (13, 70),
            (64, 64),
            (65, 129),
        ] {
            agrees::<f64>(m, n);
            agrees::<f32>(m, n);
        }
        for (m, n) in [(128, 256), (200, 131)] {
            agrees::<f64>(m, n);
        }
        // Destination rows 4 KiB apart and source columns not, so by row strips, and the
        // other way round, so by column strips.
        agrees::<f64>(21, 512);
        agrees::<f32>(11, 1024);
        agrees::<f64>(256, 20);
        // Past the in-cache bound: down column strips, at an odd and a power-of-two order.
        agrees::<f64>(727, 730);
        agrees::<f64>(1024, 520);
    }

    /// Rows of `dst` and columns of `src` `stride` entries apart (1 to 4 MiB at a power
    /// of two: the buffered order; past 4 MiB with `stride` a multiple of 8, streaming
    /// stores), with leading strips (views that start inside a
    /// cache line) and tiles cut short at both edges, in both modes, against ndarray.
    fn strided_agrees<T: Real>(stride: usize, (m, n): (usize, usize)) {
        let (si, sj, di, dj) = (3, 5, 7, 1);
        let owner_src = mat::<T>(n + sj + 2, stride, 6);
        let src = owner_src.t().slice_move(s![si..si + m, sj..sj + n]);
        assert_eq!(
            (src.dim(), src.strides()),
            ((m, n), &[1, stride as isize][..])
        );
        let start = mat::<T>(m, n, 7);
        for accum in [Accum::Replace, Accum::Add] {
            let fill = if accum == Accum::Add {
                T::one()
            } else {
                T::nan()
            };
            let mut o = Array2::from_elem((m + di + 3, stride), fill);
            let mut d = o.slice_mut(s![di..di + m, dj..dj + n]);
            assert_eq!(d.strides(), [stride as isize, 1]);
            let mut want = start.clone();
            if accum == Accum::Add {
                d.assign(&start);
                want += &src;
            } else {
                want.assign(&src);
            }
            copy(d.view_mut(), src, accum).unwrap();
            assert!(d == want, "{m}×{n} {accum:?}");
            // Nothing outside the view is written.
            let outside = o.iter().filter(|x| **x == fill || x.is_nan()).count();
            assert_eq!(outside, o.len() - m * n, "{m}×{n} {accum:?}");
        }
    }

    #[test]
    fn power_of_two_strides_in_the_shared_cache_copy_exactly_through_the_buffer() {
        let bytes = |m: usize, n: usize, size: usize| m * n * size;
        for (stride, shape) in [(512, (500, 509)), (1024, (512, 512)), (1024, (300, 1000))] {
            let b = bytes(shape.0, shape.1, 8);
            assert!(b > IN_CACHE && b <= BUFFERED, "{shape:?}");
            strided_agrees::<f64>(stride, shape);
        }
        assert!(bytes(700, 900, 4) > IN_CACHE);
        strided_agrees::<f32>(1024, (700, 900));
    }

    /// Past [`STREAM_ABOVE`], destination rows a whole number of cache lines apart: the
    /// blocks are written with non-temporal stores, at a power-of-two stride and another,
    /// from views starting inside a line.
    #[test]
    fn large_copies_with_streaming_stores_copy_exactly() {
        for (stride, shape) in [(1024, (600, 1000)), (1032, (520, 1020))] {
            assert!(shape.0 * shape.1 * 8 > STREAM_ABOVE && (stride * 8) % 64 == 0);
            strided_agrees::<f64>(stride, shape);
        }
    }

    #[test]
    fn shapes_must_agree() {
        let a = mat::<f64>(3, 4, 1);
        let mut c = Array2::<f64>::zeros((4, 3));
        assert!(matches!(
            copy(c.view_mut(), a.view(), Accum::Replace),
            Err(Error::WrongShape { op: "copy", .. })
        ));
    }
}
