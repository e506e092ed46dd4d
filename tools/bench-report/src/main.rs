//! How much faster is a BLAS-backed rule than the loop one would write by hand?
//!
//! ```text
//! cargo run --release -p bench-report [-- --quick --out DIR --detected-kernel]
//! ```
//!
//! Times every primitive against its scalar loop in `matgrad::naive` (medians of
//! repeated runs, f64, one thread; the main cases again at two threads), the
//! reverse/forward ratios of `TriSolve` and `ChoSolve` at n = 1000 with 501 right-hand
//! sides, and `Transpose` and `Vectorize` as a fraction of the bandwidth of a plain
//! copy; measures the backend's own GEMM rate to compare against, and writes
//! `docs/benchmarks.md` and `docs/benchmarks.svg` (`docs/benchmarks-faer.*` when built
//! with `--no-default-features --features faer`). It takes one to two minutes on two
//! idle cores (the naive i-j-k product at n = 1024 alone is about 15 s); `--quick` runs
//! a small sweep (n ≤ 256) for a smoke test, `--out` writes elsewhere. If
//! `docs/peers.csv` exists (from `benches/peers/run.sh`), its rows are tabulated as
//! matgrad/peer ratios; if `docs/backends.csv` exists (from
//! `tools/bench-report/backends.sh`), the two backends are tabulated side by side.
//!
//! OpenBLAS picks its kernel when it loads. Debian's 0.3.21 does not recognise recent
//! Intel cores and falls back to its generic "Prescott" kernel, several times slower
//! than the AVX2/AVX-512 kernels the CPU can run, and runs its AVX2 kernel on AVX-512
//! Zen 5 parts. Unless `OPENBLAS_CORETYPE` is set or
//! `--detected-kernel` is given, the report then runs itself again with the kernel the
//! CPU supports (as `benches/peers/run.sh` does), and records both rates in the header.
//!
//! `cases` measures, `markdown` writes the report, `plot` the figure; the timing
//! harness and the machine description are in the library, shared with the `peers`
//! program.

mod cases;
mod markdown;
mod plot;

use bench_report::machine::{cores, rerun_with_better_kernel, CpuTicks, Machine};
use bench_report::Res;
use std::path::PathBuf;

/// The command line.
struct Options {
    quick: bool,
    out: PathBuf,
    keep_kernel: bool,
}

impl Options {
    fn parse() -> Res<Options> {
        let mut o = Options {
            quick: false,
            out: repository_root().join("docs"),
            keep_kernel: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--detected-kernel" => o.keep_kernel = true,
                "--out" => o.out = args.next().ok_or("--out needs a directory")?.into(),
                other => {
                    return Err(format!(
                        "unknown argument {other}; see the top of tools/bench-report/src/main.rs"
                    )
                    .into())
                }
            }
        }
        Ok(o)
    }
    fn sizes(&self) -> Vec<usize> {
        if self.quick {
            vec![16, 64, 256]
        } else {
            vec![16, 64, 256, 512, 1024]
        }
    }
    fn threaded_sizes(&self) -> Vec<usize> {
        if self.quick {
            vec![256]
        } else {
            vec![256, 512, 1024]
        }
    }
    /// Seconds of timed rounds per case once the minimum count is reached.
    fn budget(&self) -> f64 {
        if self.quick {
            0.05
        } else {
            0.3
        }
    }
    /// The Cholesky size beyond the sweep (see [`cases::CHOL_LARGE`]).
    fn chol_large(&self) -> usize {
        if self.quick {
            512
        } else {
            cases::CHOL_LARGE
        }
    }
    fn gemm_n(&self) -> usize {
        if self.quick {
            512
        } else {
            2048
        }
    }
}

/// The matgrad repository, two levels above this tool's manifest.
fn repository_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).map_or(here.clone(), PathBuf::from)
}

fn main() -> Res<()> {
    let opts = Options::parse()?;
    if rerun_with_better_kernel(opts.keep_kernel, opts.gemm_n() / 2)? {
        return Ok(());
    }
    let mut machine = Machine::now();
    eprintln!(
        "{} | {} cores | {} | load {}",
        machine.cpu, machine.cores, machine.blas, machine.load
    );
    eprintln!("matgrad::runtime(): {}", machine.runtime);
    let before = CpuTicks::now();
    let results = cases::run(&opts, cores())?;
    machine.others_busy = before.and_then(|b| b.others_busy_since());
    let head = markdown::headline(&results);
    std::fs::create_dir_all(&opts.out)?;
    let peers = markdown::read_peers(&opts.out.join("peers.csv"))?;
    let both = bench_report::backends::read(&opts.out.join("backends.csv"))?;
    let md = markdown::write_markdown(
        &results,
        &machine,
        &head,
        peers.as_deref(),
        both.as_deref(),
        &opts,
    )?;
    // One report per backend: the default one's name, and `-faer` for the faer build.
    let stem = match machine.backend {
        "faer" => "benchmarks-faer",
        _ => "benchmarks",
    };
    let md_path = opts.out.join(format!("{stem}.md"));
    let svg_path = opts.out.join(format!("{stem}.svg"));
    std::fs::write(&md_path, md)?;
    plot::write_svg(&svg_path, &results)?;
    for l in &head.lines {
        println!("- {}", l.replace("**", ""));
    }
    println!("wrote {} and {}", md_path.display(), svg_path.display());
    Ok(())
}
