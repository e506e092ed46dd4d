//! The report: `docs/benchmarks.md` from the results, with the headline numbers and,
//! when `docs/peers.csv` exists, the table against other libraries.

use crate::cases::{
    chol_flops, CholRow, MatmulRow, Results, Threaded, CHOL_BLOCK, CHOL_LARGE, NAIVE_BACKWARD_MAX,
    NAIVE_IJK_MAX, SOLVE_K, SOLVE_N,
};
use crate::Options;
use bench_report::machine::{matmul_flops, Machine};
use bench_report::Res;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One row of `docs/peers.csv`.
pub struct PeerRow {
    library: String,
    op: String,
    n: usize,
    threads: usize,
    pass: String,
    median_s: f64,
}

/// The rows of `docs/peers.csv`, or `None` when there is no such file.
pub fn read_peers(path: &Path) -> Res<Option<Vec<PeerRow>>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if line.trim().is_empty() || f.first() == Some(&"library") {
            continue;
        }
        let bad = || {
            format!(
                "{}:{}: expected library,op,n,threads,pass,median_s",
                path.display(),
                i + 1
            )
        };
        if f.len() != 6 {
            return Err(bad().into());
        }
        rows.push(PeerRow {
            library: f[0].to_string(),
            op: f[1].to_string(),
            n: f[2].parse().map_err(|_| bad())?,
            threads: f[3].parse().map_err(|_| bad())?,
            pass: f[4].to_string(),
            median_s: f[5].parse().map_err(|_| bad())?,
        });
    }
    Ok(Some(rows))
}

/// Three significant figures in the unit that keeps the number between 1 and 1000.
fn secs(t: f64) -> String {
    let (v, unit) = if t < 1e-6 {
        (t * 1e9, "ns")
    } else if t < 1e-3 {
        (t * 1e6, "µs")
    } else if t < 1.0 {
        (t * 1e3, "ms")
    } else {
        (t, "s")
    };
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {unit}")
}

fn opt_secs(t: Option<f64>) -> String {
    t.map_or_else(|| "—".to_string(), secs)
}

fn ratio(num: Option<f64>, den: f64) -> String {
    num.map_or_else(|| "—".to_string(), |x| format!("{:.1}×", x / den))
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

/// The headline numbers, one sentence each, in markdown.
pub struct Headline {
    pub lines: Vec<String>,
}

/// The headline sentences of these results.
/// The Cholesky row of the size beyond the sweep, if it ran.
fn large_chol(t: &Threaded) -> Option<&CholRow> {
    t.chol.iter().find(|c| c.n == CHOL_LARGE)
}

pub fn headline(r: &Results) -> Headline {
    let mut lines = Vec::new();
    let s = &r.single;
    if let Some(big) = s.matmul.last() {
        let n = big.n;
        let (into, alloc) = (big.into_over_fwd, big.bwd_over_fwd);
        lines.push(format!(
            "MatMul backward (Ā and B̄) / forward at n = {n}, 1 thread: **{into:.3}** written into \
             preallocated buffers with `backward_into` (target ≤ 2.05: {}); **{alloc:.3}** with `backward`, \
             which also allocates Ā and B̄ (see the note under the backward table)",
            mark(into <= 2.05)
        ));
        let frac = big.peak.map_or(f64::NAN, |p| p.1);
        lines.push(format!(
            "MatMul forward at n = {n}, 1 thread: **{:.1} GFLOP/s = {:.0}%** of the measured DGEMM rate \
             ({:.1} GFLOP/s) (target ≥ 90%: {})",
            matmul_flops(n) / big.fwd / 1e9,
            100.0 * frac,
            s.gemm,
            mark(frac >= 0.9)
        ));
        let vs = big.fwd_over_dot - 1.0;
        lines.push(format!(
            "MatMul forward vs raw ndarray `a.dot(&b)` at n = {n}, 1 thread: **{:+.1}%** (target within ±5%: {})",
            100.0 * vs,
            mark(vs.abs() <= 0.05)
        ));
        let across = |naive: fn(&MatmulRow) -> Option<f64>| {
            s.matmul
                .iter()
                .filter_map(|r| naive(r).map(|t| format!("{:.0}× at {}", t / r.fwd, r.n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        lines.push(format!(
            "BLAS over the naive loops, MatMul forward, 1 thread (the seed's \"about 50×\"): over textbook \
             i-j-k **{}**; over cache-friendly i-k-j **{}**",
            across(|r| r.ijk),
            across(|r| r.ikj)
        ));
    }
    if let Some(c) = s.chol.iter().rev().find(|c| c.naive_bwd.is_some()) {
        lines.push(format!(
            "Cholesky at n = {}, 1 thread: LAPACK forward {:.0}× faster than the naive loop, \
             backward {:.0}× faster than the naive reverse loop, {:.2}× the blocked one and \
             {:.2}× the symbolic one; backward / forward {:.2}",
            c.n,
            c.naive_fwd.unwrap_or(f64::NAN) / c.fwd,
            c.naive_bwd.unwrap_or(f64::NAN) / c.bwd,
            c.blocked / c.bwd,
            c.symbolic / c.bwd,
            c.bwd_over_fwd
        ));
    }
    for (t, target) in [(Some(s), 1.5), (r.multi.as_ref(), 1.3)] {
        if let Some((c, t)) = t.and_then(|t| large_chol(t).map(|c| (c, t))) {
            lines.push(format!(
                "Cholesky backward / forward at n = {}, {} thread{}: **{:.2}** (target ≤ {target}: {}); \
                 the reverse pass has twice the factorisation's flops, so with the factorisation \
                 at {:.1} GFLOP/s a reverse pass at the full measured DGEMM rate ({:.1} GFLOP/s) \
                 would give **{:.2}**; it runs at {:.0}% of that rate",
                c.n,
                t.threads,
                if t.threads == 1 { "" } else { "s" },
                c.bwd_over_fwd,
                mark(c.bwd_over_fwd <= target),
                chol_flops(c.n) / c.fwd / 1e9,
                t.gemm,
                2.0 * chol_flops(c.n) / c.fwd / 1e9 / t.gemm,
                100.0 * 2.0 * chol_flops(c.n) / c.bwd / 1e9 / t.gemm,
            ));
        }
    }
    for row in &s.solves {
        lines.push(format!(
            "{} backward / forward at L, B = {}, 1 thread: **{:.2}** with `backward`, which allocates L̄ \
             and B̄; **{:.2}** into preallocated buffers with `backward_into` (target ≤ {}: {})",
            row.name,
            row.shapes,
            row.bwd_over_fwd,
            row.into_over_fwd,
            row.target,
            mark(row.bwd_over_fwd <= row.target && row.into_over_fwd <= row.target)
        ));
    }
    let worst = r
        .copies
        .iter()
        .flat_map(|c| c.cases.iter().map(move |x| (c, x)))
        .min_by(|a, b| a.1 .2.total_cmp(&b.1 .2));
    if let Some((c, (name, _, f))) = worst {
        let pow2: Vec<String> = r
            .copies
            .iter()
            .filter(|c| c.m == c.n && c.n.is_power_of_two() && c.n >= 256)
            .map(|c| {
                let low = c.cases.iter().map(|x| x.2).fold(f64::INFINITY, f64::min);
                format!("{:.0}% at {}²", 100.0 * low, c.n)
            })
            .collect();
        lines.push(format!(
            "Transpose and Vectorize, forward and backward into preallocated buffers, 1 thread: the \
             slowest reaches **{:.0}%** of the bandwidth of a plain copy ({name} at {}×{}; target ≥ 50% \
             at every shape: {}); the slowest at the powers of two: {}",
            100.0 * f,
            c.m,
            c.n,
            mark(*f >= 0.5),
            if pow2.is_empty() { "—".to_string() } else { pow2.join(", ") }
        ));
    }
    for row in &r.small {
        let x = row.ratio;
        lines.push(format!(
            "Small matrices, n = {}: forward + backward through the primitive / the 3 raw `dot` calls = \
             **{x:.2}×**; `forward_into` + `backward_into` / 3 raw GEMMs into the same buffers = \
             **{:.2}×** (target ≤ 1.5×: {})",
            row.n,
            row.ratio_into,
            mark(row.ratio_into <= 1.5)
        ));
    }
    if let Some(m) = &r.multi {
        if let (Some(one), Some(two)) = (
            s.matmul.last(),
            m.matmul
                .iter()
                .find(|x| Some(x.n) == s.matmul.last().map(|y| y.n)),
        ) {
            lines.push(format!(
                "{} threads: MatMul forward at n = {} runs {:.2}× as fast as at 1 thread \
                 (DGEMM rate {:.1} vs {:.1} GFLOP/s)",
                m.threads,
                one.n,
                one.fwd / two.fwd,
                m.gemm,
                s.gemm
            ));
        }
    }
    Headline { lines }
}

/// The whole of `docs/benchmarks.md`.
pub fn write_markdown(
    r: &Results,
    m: &Machine,
    h: &Headline,
    peers: Option<&[PeerRow]>,
    both: Option<&[bench_report::backends::Row]>,
    opts: &Options,
) -> Res<String> {
    let mut o = String::new();
    let s = &r.single;
    writeln!(o, "# Benchmarks\n")?;
    writeln!(
        o,
        "Generated by `cargo run --release -p bench-report`{} on {}; do not edit by hand, run it again.\n",
        if opts.quick { " -- --quick (a smoke-test sweep, not for quoting)" } else { "" },
        m.date
    )?;
    writeln!(o, "| | |\n|---|---|")?;
    writeln!(o, "| CPU | {} ({} cores online) |", m.cpu, m.cores)?;
    writeln!(o, "| Backend | {}: {} |", m.backend, m.blas)?;
    writeln!(o, "| `matgrad::runtime()` | {} |", m.runtime)?;
    let core_note = match &m.detected {
        Some((k, rate)) => format!(
            "{} (set through `OPENBLAS_CORETYPE`; OpenBLAS detected `{k}` by itself, whose DGEMM runs at \
             {rate:.1} GFLOP/s on one thread here; `--detected-kernel` keeps it)",
            m.core
        ),
        None => match std::env::var("OPENBLAS_CORETYPE") {
            Ok(v) => format!("{} (`OPENBLAS_CORETYPE={v}`)", m.core),
            Err(_) => format!("{} (as detected)", m.core),
        },
    };
    writeln!(o, "| Kernel | {core_note} |")?;
    writeln!(
        o,
        "| Threads | sweep at {} thread, main cases again at {} (set with `matgrad::set_threads`); \
         `OPENBLAS_NUM_THREADS` = {} |",
        s.threads,
        r.multi.as_ref().map_or("— (one core)".to_string(), |t| t.threads.to_string()),
        m.env_threads
    )?;
    writeln!(
        o,
        "| Measured DGEMM rate | {:.1} GFLOP/s at 1 thread{} (one backend GEMM, `matgrad::blas::gemm`, of order {} into a \
         preallocated output, median, timed in the same rounds as the largest MatMul; the fractions of it \
         quoted at that size are medians of per-round ratios) |",
        s.gemm,
        r.multi.as_ref().map_or(String::new(), |t| format!(", {:.1} GFLOP/s at {} threads", t.gemm, t.threads)),
        opts.gemm_n()
    )?;
    writeln!(
        o,
        "| Timing | f64, square n×n inputs, median of interleaved repeated runs (at least 7, or 3 for runs over \
         half a second), short calls batched to about 2 ms; ratios of cases timed together are medians of \
         per-round ratios; load average at start {}; CPU used by other processes during the run {} |",
        m.load,
        m.others_busy.map_or("unknown".to_string(), |b| format!("{:.0}%", 100.0 * b))
    )?;
    writeln!(o)?;
    if let Some(busy) = m.others_busy.filter(|&b| b >= 0.1) {
        writeln!(
            o,
            "> Other processes kept {:.0}% of the CPU busy during this run, so its timings are noisier than \
             on an idle machine; paired ratios suffer least. Run it again on an idle machine before quoting \
             absolute times.\n",
            100.0 * busy
        )?;
    }
    writeln!(
        o,
        "![time against n, naive loops and BLAS, forward and backward](benchmarks.svg)\n"
    )?;

    writeln!(o, "## Headline\n")?;
    for l in &h.lines {
        writeln!(o, "- {l}")?;
    }
    writeln!(
        o,
        "\n\"Naive\" is the scalar loop one would write by hand (`matgrad::naive`, plain indexed loops \
         over ndarray views, no blocking); \"BLAS\" is the primitive (`MatMul`, `Cholesky`, …) as a user \
         calls it, allocation and shape checks included. Speed-up = naive time / BLAS time.\n"
    )?;

    writeln!(o, "## MatMul, C = AB, 1 thread\n")?;
    writeln!(
        o,
        "| n | naive i-j-k | naive i-k-j | BLAS forward | speed-up vs i-j-k | vs i-k-j | GFLOP/s | % of DGEMM rate \
         | ndarray `dot` | forward / `dot` |"
    )?;
    writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for row in &s.matmul {
        let g = matmul_flops(row.n) / row.fwd / 1e9;
        writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.0}% | {} | {:.3} |",
            row.n,
            opt_secs(row.ijk),
            opt_secs(row.ikj),
            secs(row.fwd),
            ratio(row.ijk, row.fwd),
            ratio(row.ikj, row.fwd),
            g,
            100.0 * row.peak.map_or(g / s.gemm, |p| p.1),
            secs(row.dot),
            row.fwd_over_dot
        )?;
    }
    writeln!(
        o,
        "\nBackward, Ā = C̄Bᵀ and B̄ = AᵀC̄ (two products, so 2× the forward flops):\n"
    )?;
    writeln!(
        o,
        "| n | naive backward | BLAS `backward` | speed-up | backward / forward | `backward_into` \
         | backward_into / forward | GFLOP/s (into) | % of DGEMM rate |"
    )?;
    writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for row in &s.matmul {
        let g = 2.0 * matmul_flops(row.n) / row.bwd_into / 1e9;
        writeln!(
            o,
            "| {} | {} | {} | {} | {:.3} | {} | {:.3} | {:.1} | {:.0}% |",
            row.n,
            opt_secs(row.naive_bwd),
            secs(row.bwd),
            ratio(row.naive_bwd, row.bwd),
            row.bwd_over_fwd,
            secs(row.bwd_into),
            row.into_over_fwd,
            g,
            100.0 * g / s.gemm
        )?;
    }
    writeln!(
        o,
        "\n`backward` returns new Ā and B̄; `backward_into` writes them into buffers the caller keeps \
         (`Grad::Write`: GEMM with beta = 0, the buffers' contents not read), which is what a training \
         loop reuses. At n = 1024 the two outputs of `backward` are 16 MB, past glibc's default trim \
         threshold: every call returns them to the system and faults them in again, which the \
         allocating column includes."
    )?;
    writeln!(
        o,
        "\nNaive i-j-k runs up to n = {NAIVE_IJK_MAX} and the naive backward up to n = {NAIVE_BACKWARD_MAX}; \
         beyond that one call takes many seconds (\"—\").\n"
    )?;

    writeln!(o, "## Cholesky, A = LLᵀ, 1 thread\n")?;
    writeln!(
        o,
        "| n | naive forward | LAPACK forward | speed-up | GFLOP/s | % of DGEMM rate | naive backward | backward \
         | speed-up | blocked backward | symbolic backward | backward GFLOP/s | backward / forward |"
    )?;
    writeln!(
        o,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for c in &s.chol {
        let g = chol_flops(c.n) / c.fwd / 1e9;
        writeln!(
            o,
            "| {} | {} | {} | {} | {:.1} | {:.0}% | {} | {} | {} | {} | {} | {:.1} | {:.2} |",
            c.n,
            opt_secs(c.naive_fwd),
            secs(c.fwd),
            ratio(c.naive_fwd, c.fwd),
            g,
            100.0 * g / s.gemm,
            opt_secs(c.naive_bwd),
            secs(c.bwd),
            ratio(c.naive_bwd, c.bwd),
            secs(c.blocked),
            secs(c.symbolic),
            2.0 * chol_flops(c.n) / c.bwd / 1e9,
            c.bwd_over_fwd
        )?;
    }
    writeln!(
        o,
        "\nBackward in the lower-triangle convention (`Convention::Lower`, which the naive reverse loop \
         computes). \"LAPACK forward\" and \"backward\" are the primitive's `forward` and `backward`, \
         the latter with the default `Method::Auto` (the scalar loop below n = 40, the recursive pass \
         from there on); \"blocked\" is `backward_blocked` with block {CHOL_BLOCK} \
         (`Method::DEFAULT_BLOCK`). Each allocates its result and copies its input in. GFLOP/s counts n³/3 for the factorisation \
         and twice that for the reverse pass; backward / forward is the median of ratios timed in the \
         same rounds. The largest size runs without the naive loops.\n"
    )?;

    writeln!(
        o,
        "## Solves with a triangular or Cholesky factor, n = {SOLVE_N}, k = {SOLVE_K}\n"
    )?;
    writeln!(
        o,
        "Flops in units of n²k. `TriSolve`: forward one TRSM (1); backward one TRSM for B̄ and one \
         triangular GEMM for L̄ (`gemm_tri`, 1): 2× the forward. `ChoSolve`: forward two TRSMs (2); \
         backward two TRSMs for B̄ = L⁻ᵀ(L⁻¹X̄) and two triangular GEMMs for \
         L̄ = −tril(B̄Yᵀ + XZᵀ), with Y = L⁻¹B kept from the forward solve (a residual output) and \
         Z = L⁻¹X̄ from the backward one (4): 2× the forward. GEMM runs \
         faster than TRSM, so the measured ratios can sit below these. `forward` and `backward` \
         allocate their outputs (zero-filled); `forward_into` and `backward_into` write into buffers \
         the caller keeps, with a caller workspace and first writes (`Grad::Write`).\n"
    )?;
    writeln!(
        o,
        "| primitive | threads | L, B | `forward` | `backward` | backward / forward | `forward_into` \
         | `backward_into` | backward_into / forward_into | target |"
    )?;
    writeln!(o, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let threaded = std::iter::once(s).chain(r.multi.as_ref());
    for t in threaded {
        for row in &t.solves {
            writeln!(
                o,
                "| {} | {} | {} | {} | {} | {:.2} | {} | {} | {:.2} | ≤ {} |",
                row.name,
                t.threads,
                row.shapes,
                secs(row.fwd),
                secs(row.bwd),
                row.bwd_over_fwd,
                secs(row.fwd_into),
                secs(row.bwd_into),
                row.into_over_fwd,
                row.target
            )?;
        }
    }
    writeln!(o)?;

    if let Some(t) = &r.multi {
        writeln!(o, "## Main cases at {} threads\n", t.threads)?;
        writeln!(
            o,
            "| n | MatMul forward | `backward` | backward / forward | `backward_into` | backward_into / forward \
             | GFLOP/s | % of {}-thread DGEMM rate | ndarray `dot` | forward / `dot` | speed-up over 1 thread |",
            t.threads
        )?;
        writeln!(
            o,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for row in &t.matmul {
            let g = matmul_flops(row.n) / row.fwd / 1e9;
            let one = s.matmul.iter().find(|x| x.n == row.n).map(|x| x.fwd);
            writeln!(
                o,
                "| {} | {} | {} | {:.3} | {} | {:.3} | {:.1} | {:.0}% | {} | {:.3} | {} |",
                row.n,
                secs(row.fwd),
                secs(row.bwd),
                row.bwd_over_fwd,
                secs(row.bwd_into),
                row.into_over_fwd,
                g,
                100.0 * row.peak.map_or(g / t.gemm, |p| p.1),
                secs(row.dot),
                row.fwd_over_dot,
                ratio(one, row.fwd)
            )?;
        }
        writeln!(
            o,
            "\n| n | Cholesky forward | backward | blocked backward | symbolic backward | backward / forward \
             | speed-up over 1 thread (forward, backward) |"
        )?;
        writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|")?;
        for c in &t.chol {
            let one = s.chol.iter().find(|x| x.n == c.n);
            writeln!(
                o,
                "| {} | {} | {} | {} | {} | {:.2} | {}, {} |",
                c.n,
                secs(c.fwd),
                secs(c.bwd),
                secs(c.blocked),
                secs(c.symbolic),
                c.bwd_over_fwd,
                ratio(one.map(|x| x.fwd), c.fwd),
                ratio(one.map(|x| x.bwd), c.bwd)
            )?;
        }
        writeln!(o)?;
    }

    writeln!(
        o,
        "## Small matrices: fixed cost of the primitive, 1 thread\n"
    )?;
    writeln!(
        o,
        "Forward and backward through `MatMul` against the three products they consist of \
         (C = AB, C̄Bᵀ, AᵀC̄), timed together: through the typed layer (`apply`, then `backward`, \
         which allocate C, Ā and B̄ and share C) against three ndarray `dot` calls, and through \
         `forward_into` + `backward_into` with first writes into caller buffers against three raw \
         GEMMs (`general_mat_mul`) into the same buffers. Target ≤ 1.5× for the second: the \
         typed layer's extra cost is its allocations (zero-filled, where `dot` leaves them \
         uninitialised) and the shared output's reference count.\n"
    )?;
    writeln!(
        o,
        "| n | 3 × `dot` | `apply` + `backward` | ratio | 3 × GEMM into buffers | `forward_into` + `backward_into` | ratio |"
    )?;
    writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|")?;
    for row in &r.small {
        writeln!(
            o,
            "| {} | {} | {} | {:.2}× | {} | {} | {:.2}× |",
            row.n,
            secs(row.raw),
            secs(row.primitive),
            row.ratio,
            secs(row.raw_into),
            secs(row.primitive_into),
            row.ratio_into
        )?;
    }
    writeln!(o)?;

    writeln!(o, "## Transpose, Add, Tril, Vectorize, 1 thread\n")?;
    writeln!(
        o,
        "These move memory and do no arithmetic worth a BLAS call; GB/s counts one n×n f64 read and one \
         written per forward. A backward that returns two n×n outputs (Add) meets the allocator effect \
         described under the MatMul backward table at n = 1024.\n"
    )?;
    writeln!(o, "| primitive | n | naive forward | forward | speed-up | naive backward | backward | speed-up | backward / forward | GB/s |")?;
    writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (name, rows) in &r.structural {
        for row in rows {
            let bytes = 2.0 * (row.n * row.n * 8) as f64;
            writeln!(
                o,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.1} |",
                row.n,
                secs(row.naive_fwd),
                secs(row.fwd),
                ratio(Some(row.naive_fwd), row.fwd),
                secs(row.naive_bwd),
                secs(row.bwd),
                ratio(Some(row.naive_bwd), row.bwd),
                row.bwd / row.fwd,
                bytes / row.fwd / 1e9
            )?;
        }
    }
    writeln!(o)?;

    writeln!(o, "## Transpose and Vectorize against a copy, 1 thread\n")?;
    writeln!(
        o,
        "The bandwidth of moving an m×n f64 matrix: a copy (`dst.assign(&src)` between two \
         standard-layout arrays, one read and one write per entry) against `Transpose` and \
         `Vectorize` (vec of a row-major matrix, itself a transpose) forward and backward, every case \
         into a preallocated buffer (`forward_into`, `backward_into` with a first write) and timed in \
         the same rounds. % of copy = copy time / case time, a median of per-round ratios; both move \
         the same bytes. Target ≥ 50% at every shape, powers of two included.\n"
    )?;
    writeln!(
        o,
        "| m×n | copy | copy GB/s | Transpose forward | % of copy | Transpose backward | % of copy \
         | Vectorize forward | % of copy | Vectorize backward | % of copy |"
    )?;
    writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for c in &r.copies {
        let bytes = 16.0 * (c.m * c.n) as f64;
        write!(
            o,
            "| {}×{} | {} | {:.1} |",
            c.m,
            c.n,
            secs(c.copy),
            bytes / c.copy / 1e9
        )?;
        for (_, t, f) in &c.cases {
            write!(o, " {} | {:.0}% |", secs(*t), 100.0 * f)?;
        }
        writeln!(o)?;
    }
    writeln!(o)?;

    if let Some(rows) = peers {
        write_peers(&mut o, rows)?;
    }
    if let Some(rows) = both {
        writeln!(o, "## OpenBLAS and faer\n")?;
        writeln!(
            o,
            "From `docs/backends.csv`, written by `bash tools/bench-report/backends.sh`, which builds the \
             timing program once per backend and runs the builds in alternating rounds (`forward_into` and \
             `backward_into` into preallocated buffers, f64; each backend's fastest round). \
             [docs/backends.md](backends.md) says when and under which load.\n"
        )?;
        o.push_str(&bench_report::backends::table(rows)?);
        writeln!(o)?;
    }
    Ok(o)
}

fn write_peers(o: &mut String, rows: &[PeerRow]) -> Res<()> {
    let mut libs: Vec<&str> = Vec::new();
    for r in rows {
        if r.library != "matgrad" && !libs.contains(&r.library.as_str()) {
            libs.push(&r.library);
        }
    }
    type Key<'a> = (&'a str, usize, &'a str, usize);
    let mut table: BTreeMap<Key<'_>, BTreeMap<&str, f64>> = BTreeMap::new();
    for r in rows {
        table
            .entry((r.op.as_str(), r.threads, r.pass.as_str(), r.n))
            .or_default()
            .insert(r.library.as_str(), r.median_s);
    }
    writeln!(o, "## Against other libraries\n")?;
    writeln!(
        o,
        "From `docs/peers.csv`, written by `bash benches/peers/run.sh`, which times every library, matgrad \
         included, in the same run (one process per library and thread count). Ratio = matgrad time / \
         peer time: below 1 matgrad is faster.\n"
    )?;
    write!(o, "| op | threads | pass | n | matgrad |")?;
    for l in &libs {
        write!(o, " {l} | matgrad / {l} |")?;
    }
    writeln!(o)?;
    writeln!(
        o,
        "|---|---:|---|---:|---:|{}",
        "---:|---:|".repeat(libs.len())
    )?;
    for ((op, threads, pass, n), by_lib) in &table {
        let Some(&mine) = by_lib.get("matgrad") else {
            continue;
        };
        write!(o, "| {op} | {threads} | {pass} | {n} | {} |", secs(mine))?;
        for l in &libs {
            match by_lib.get(l) {
                Some(&t) => write!(o, " {} | {:.2} |", secs(t), mine / t)?,
                None => write!(o, " — | — |")?,
            }
        }
        writeln!(o)?;
    }
    writeln!(o)?;
    Ok(())
}
