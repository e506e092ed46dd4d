//! What the linear algebra runs on: the backend, its kernel and its thread count, in
//! one line a program can log, with a warning when OpenBLAS runs a kernel older than
//! the CPU supports.
//!
//! ```
//! let rt = matgrad::runtime();
//! println!("{rt}");   // e.g. "OpenBLAS, kernel Haswell, 2 threads (CPU: AVX-512); …"
//! if let Some(warning) = rt.warning() {
//!     eprintln!("{warning}");
//! }
//! ```
//!
//! Distribution builds of OpenBLAS choose their kernel by CPU model at load time and
//! fall back to an older one for a model they do not know (Debian's 0.3.21 runs its
//! AVX2 kernel on AVX-512 Zen 5 parts, its SSE3 kernel on some Xeons): GEMM then runs
//! at half or a quarter of the machine's speed until `OPENBLAS_CORETYPE` names the
//! right kernel. The faer backend chooses its kernels from the CPU's features at run
//! time and never needs the variable.

use crate::blas::backend;
use std::fmt;

/// x86 SIMD generations, as far as they decide which GEMM kernel can run.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub enum Simd {
    /// SSE2/SSE3 only.
    Sse,
    /// AVX (OpenBLAS's Sandybridge kernels).
    Avx,
    /// AVX2 with FMA (Haswell, Zen kernels).
    Avx2,
    /// AVX-512 F, CD, BW, DQ and VL (SkylakeX, Cooperlake kernels).
    Avx512,
}

impl Simd {
    /// What this CPU supports, `None` off x86-64.
    pub fn of_cpu() -> Option<Simd> {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let level = if has!("avx512f")
                && has!("avx512cd")
                && has!("avx512bw")
                && has!("avx512dq")
                && has!("avx512vl")
            {
                Simd::Avx512
            } else if has!("avx2") && has!("fma") {
                Simd::Avx2
            } else if has!("avx") {
                Simd::Avx
            } else {
                Simd::Sse
            };
            Some(level)
        }
        #[cfg(not(target_arch = "x86_64"))]
        None
    }

    /// The generation an OpenBLAS x86 kernel (`openblas_get_corename`) is written for.
    pub fn of_openblas_kernel(name: &str) -> Simd {
        match name.to_ascii_lowercase().as_str() {
            "skylakex" | "cooperlake" | "sapphirerapids" => Simd::Avx512,
            "haswell" | "zen" | "excavator" => Simd::Avx2,
            "sandybridge" | "bulldozer" | "piledriver" | "steamroller" => Simd::Avx,
            _ => Simd::Sse,
        }
    }

    /// The `OPENBLAS_CORETYPE` that selects OpenBLAS's kernel for this generation.
    pub fn openblas_coretype(self) -> Option<&'static str> {
        match self {
            Simd::Avx512 => Some("SkylakeX"),
            Simd::Avx2 => Some("Haswell"),
            Simd::Avx => Some("Sandybridge"),
            Simd::Sse => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Simd::Sse => "SSE",
            Simd::Avx => "AVX",
            Simd::Avx2 => "AVX2",
            Simd::Avx512 => "AVX-512",
        }
    }
}

/// The backend a program runs on, as [`runtime`] found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Runtime {
    /// `"OpenBLAS"`, `"MKL"` or `"faer"`.
    pub backend: &'static str,
    /// The backend's own description (OpenBLAS's build configuration, faer's version).
    pub config: String,
    /// The kernel it runs: OpenBLAS's core name (`Haswell`, `SkylakeX`, …), or the
    /// instruction set faer's kernels use.
    pub kernel: String,
    /// Threads a large call runs on.
    pub threads: usize,
    /// What the CPU supports (x86-64 only).
    pub cpu: Option<Simd>,
    /// With OpenBLAS on x86-64: the generation its kernel is written for.
    pub kernel_simd: Option<Simd>,
}

impl Runtime {
    /// The `OPENBLAS_CORETYPE` to set when OpenBLAS runs a kernel older than the CPU
    /// supports, `None` when it runs the right one (or the backend is not OpenBLAS).
    pub fn better_coretype(&self) -> Option<&'static str> {
        match (self.kernel_simd, self.cpu) {
            (Some(k), Some(c)) if k < c => c.openblas_coretype(),
            _ => None,
        }
    }

    /// One line naming the slow kernel and the variable to set, when there is one.
    pub fn warning(&self) -> Option<String> {
        let coretype = self.better_coretype()?;
        let (kernel, cpu) = (self.kernel_simd?, self.cpu?);
        Some(format!(
            "warning: OpenBLAS runs its {} kernel ({}) on a CPU with {}: set \
             OPENBLAS_CORETYPE={coretype} for up to {}x faster matrix products, or build \
             matgrad with the `faer` backend",
            self.kernel,
            kernel.name(),
            cpu.name(),
            if kernel == Simd::Sse { 4 } else { 2 },
        ))
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.threads == 1 { "" } else { "s" };
        write!(
            f,
            "{}, kernel {}, {} thread{s}",
            self.backend, self.kernel, self.threads
        )?;
        if let Some(cpu) = self.cpu {
            write!(f, " (CPU: {})", cpu.name())?;
        }
        if let Some(w) = self.warning() {
            write!(f, "; {w}")?;
        }
        Ok(())
    }
}

/// The backend, kernel and thread count the linear algebra runs on now.
pub fn runtime() -> Runtime {
    let kernel = backend::kernel();
    let cpu = Simd::of_cpu();
    let kernel_simd =
        (backend::NAME == "OpenBLAS" && cpu.is_some()).then(|| Simd::of_openblas_kernel(&kernel));
    Runtime {
        backend: backend::NAME,
        config: backend::config(),
        kernel,
        threads: backend::threads(),
        cpu,
        kernel_simd,
    }
}

/// Runs later level-3 calls on `n` threads, `0` meaning all cores.
///
/// - OpenBLAS: its thread pool, which `OPENBLAS_NUM_THREADS` sizes at start (all cores
///   when unset).
/// - faer: as many threads of rayon's global pool (`RAYON_NUM_THREADS` sizes it); one
///   thread, sequential, unless `MATGRAD_NUM_THREADS` or this function asks for more,
///   because faer's parallel dispatch allocates small job records on every call.
/// - The sequential MKL ignores it.
pub fn set_threads(n: usize) {
    let n = if n == 0 {
        if backend::NAME == "faer" {
            0
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    } else {
        n
    };
    backend::set_threads(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openblas(kernel: &str, cpu: Simd) -> Runtime {
        Runtime {
            backend: "OpenBLAS",
            config: String::new(),
            kernel: kernel.to_string(),
            threads: 1,
            cpu: Some(cpu),
            kernel_simd: Some(Simd::of_openblas_kernel(kernel)),
        }
    }

    #[test]
    fn an_older_kernel_than_the_cpu_gets_one_line_naming_the_variable() {
        let zen5 = openblas("Zen", Simd::Avx512);
        assert_eq!(zen5.better_coretype(), Some("SkylakeX"));
        let w = zen5.warning().expect("a warning");
        assert!(
            w.contains("OPENBLAS_CORETYPE=SkylakeX") && !w.contains('\n'),
            "{w}"
        );
        assert!(zen5.to_string().contains("OPENBLAS_CORETYPE=SkylakeX"));
        let sse = openblas("Prescott", Simd::Avx2);
        assert_eq!(sse.better_coretype(), Some("Haswell"));
    }

    #[test]
    fn the_right_kernel_gets_no_warning() {
        for (k, c) in [
            ("Cooperlake", Simd::Avx512),
            ("SkylakeX", Simd::Avx512),
            ("Haswell", Simd::Avx2),
            ("SkylakeX", Simd::Avx2),
        ] {
            let rt = openblas(k, c);
            assert_eq!(rt.warning(), None, "{k} on {c:?}");
        }
    }

    #[test]
    fn the_running_backend_reports_itself() {
        let rt = runtime();
        assert!(rt.threads >= 1);
        assert!(!rt.kernel.is_empty());
        assert!(rt.to_string().starts_with(rt.backend));
    }
}
