//! The machine and its backend: CPU model and load from `/proc`, the date, the
//! backend's configuration, kernel and thread count (from `matgrad::runtime`), one
//! backend GEMM as the rate to compare against, and the re-run under a better
//! `OPENBLAS_CORETYPE`.

use crate::timing::{case, time_one};
use crate::Res;
use matgrad::check::random;
use matgrad::{Accum, Runtime};
use ndarray::Array2;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The backend's configuration string (OpenBLAS's build options, faer's version).
pub fn blas_config() -> String {
    matgrad::runtime().config
}

/// The kernel the backend runs (OpenBLAS's core name, or faer's instruction set).
pub fn blas_core() -> String {
    matgrad::runtime().kernel
}

/// The backend's name as the tables print it: `OpenBLAS` or `faer`.
pub fn backend() -> &'static str {
    matgrad::runtime().backend
}

/// Sets the backend's thread count and returns the count it then reports.
pub fn set_threads(n: usize) -> usize {
    matgrad::set_threads(n);
    matgrad::runtime().threads
}

/// Flops of an order-`n` matrix product, `2n³`.
pub fn matmul_flops(n: usize) -> f64 {
    2.0 * (n as f64).powi(3)
}

/// One backend GEMM of order `n` (`matgrad::blas::gemm`: `cblas_dgemm` or faer's
/// `matmul`) into a preallocated output, no allocation: the ceiling the rules are held to.
pub struct Gemm {
    a: Array2<f64>,
    b: Array2<f64>,
    c: Array2<f64>,
}

impl Gemm {
    /// Random `n×n` operands and a zero output.
    pub fn new(n: usize) -> Gemm {
        let mut rng = random::rng(99);
        Gemm {
            a: random::randn(n, n, &mut rng),
            b: random::randn(n, n, &mut rng),
            c: Array2::zeros((n, n)),
        }
    }
    /// Order of the product.
    pub fn n(&self) -> usize {
        self.a.nrows()
    }
    /// `C ← AB`.
    pub fn call(&mut self) {
        matgrad::blas::gemm(
            self.c.view_mut(),
            Accum::Replace,
            self.a.view(),
            self.b.view(),
            1.0,
        )
        .expect("square operands of one order");
    }
}

/// DGEMM rate in GFLOP/s at order `n`, timed on its own.
pub fn gemm_rate(n: usize, budget: f64) -> f64 {
    let mut g = Gemm::new(n);
    matmul_flops(n) / time_one(budget, case(|| g.call())) / 1e9
}

/// Set in the environment of the re-run: the kernel OpenBLAS chose by itself and the
/// DGEMM rate it gave.
pub const DETECTED_ENV: &str = "MATGRAD_REPORT_DETECTED_KERNEL";

/// What the report's header says about the machine.
pub struct Machine {
    /// `YYYY-MM-DD HH:MM UTC` at the start.
    pub date: String,
    /// CPU model name.
    pub cpu: String,
    /// Cores online.
    pub cores: usize,
    /// OpenBLAS's configuration string.
    pub blas: String,
    /// The backend, `OpenBLAS` or `faer`.
    pub backend: &'static str,
    /// `matgrad::runtime()` as one line, with its warning when OpenBLAS runs a kernel
    /// older than the CPU supports.
    pub runtime: String,
    /// Kernel in use.
    pub core: String,
    /// The kernel OpenBLAS detected by itself and its DGEMM rate, when this is a re-run
    /// under another one.
    pub detected: Option<(String, f64)>,
    /// `OPENBLAS_NUM_THREADS`, or "unset".
    pub env_threads: String,
    /// Load average at the start.
    pub load: String,
    /// Share of all cores that other processes kept busy during the run.
    pub others_busy: Option<f64>,
}

impl Machine {
    /// The machine as it is now; `others_busy` is filled in after the run.
    pub fn now() -> Machine {
        Machine {
            date: utc_now(),
            cpu: cpu_model(),
            cores: cores(),
            blas: blas_config(),
            backend: backend(),
            runtime: matgrad::runtime().to_string(),
            core: blas_core(),
            detected: std::env::var(DETECTED_ENV).ok().and_then(|v| {
                let (k, r) = v.split_once(' ')?;
                Some((k.to_string(), r.parse().ok()?))
            }),
            env_threads: std::env::var("OPENBLAS_NUM_THREADS")
                .unwrap_or_else(|_| "unset".to_string()),
            load: load_average(),
            others_busy: None,
        }
    }
}

/// Cores available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown (no /proc/cpuinfo)".to_string())
}

/// The OpenBLAS kernel this CPU can run when OpenBLAS runs an older one.
pub fn better_kernel(rt: &Runtime) -> Option<&'static str> {
    rt.better_coretype()
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock (days to civil date after
/// H. Hinnant's `civil_from_days`).
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// CPU time from `/proc/stat` (all cores) and `/proc/self/stat` (this process, all
/// its threads), in clock ticks.
#[derive(Clone, Copy)]
pub struct CpuTicks {
    busy: u64,
    total: u64,
    own: u64,
}

impl CpuTicks {
    /// The counters now, or `None` without `/proc`.
    pub fn now() -> Option<CpuTicks> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        let total: u64 = cpu.iter().take(8).sum();
        let idle = cpu.get(3)? + cpu.get(4)?;
        let me = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name start at `state`, field 3.
        let rest: Vec<&str> = me.rsplit_once(')')?.1.split_whitespace().collect();
        let own = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
        Some(CpuTicks {
            busy: total - idle,
            total,
            own,
        })
    }
    /// Share of all cores that processes other than this one kept busy since `self`.
    pub fn others_busy_since(self) -> Option<f64> {
        let now = CpuTicks::now()?;
        let total = now.total.checked_sub(self.total)?;
        let others = (now.busy - self.busy).saturating_sub(now.own - self.own);
        (total > 0).then(|| others as f64 / total as f64)
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Runs this program again with the kernel the CPU supports, when OpenBLAS runs an
/// older one (its generic one, or AVX2 on an AVX-512 CPU) and neither `OPENBLAS_CORETYPE` nor `keep_kernel` says otherwise;
/// returns `false` when no re-run is needed. The detected kernel's DGEMM rate at order
/// `gemm_n` is passed to the re-run in [`DETECTED_ENV`].
pub fn rerun_with_better_kernel(keep_kernel: bool, gemm_n: usize) -> Res<bool> {
    if keep_kernel || std::env::var_os("OPENBLAS_CORETYPE").is_some() {
        return Ok(false);
    }
    let rt = matgrad::runtime();
    let Some(kernel) = better_kernel(&rt) else {
        return Ok(false);
    };
    eprintln!("{}", rt.warning().unwrap_or_default());
    let detected = rt.kernel;
    set_threads(1);
    let rate = gemm_rate(gemm_n, 0.5);
    eprintln!(
        "OpenBLAS chose its {detected} kernel ({rate:.1} GFLOP/s); running again with \
         OPENBLAS_CORETYPE={kernel} (pass --detected-kernel to keep {detected})"
    );
    let status = Command::new(std::env::current_exe()?)
        .args(std::env::args_os().skip(1))
        .env("OPENBLAS_CORETYPE", kernel)
        .env(DETECTED_ENV, format!("{detected} {rate}"))
        .status()?;
    if !status.success() {
        return Err(format!("the run with OPENBLAS_CORETYPE={kernel} failed ({status})").into());
    }
    Ok(true)
}
