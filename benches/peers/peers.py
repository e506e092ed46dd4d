"""Times matrix product and Cholesky, forward and reverse, in JAX, PyTorch and HIPS autograd.

One library and one thread count per process: every BLAS/OpenMP/XLA thread setting
is read once, when the library loads, so it is set here before any import.

Prints CSV rows `library,op,n,threads,pass,median_s` (no header) on stdout and
progress on stderr. Two helpers for run.sh need no third-party package:
`--aggregate FILE` reads such rows from several rounds and prints the CSV, with
header, of the median over rounds of each case; `--summarize FILE` reads that CSV and
prints, per case, each library's backward time, its backward/forward ratio, and
matgrad's backward time over each peer's.

Backward is the vector-Jacobian product for a random cotangent, without the forward
pass: JAX times the jitted pullback of a jitted `jax.vjp`, PyTorch times
`torch.autograd.grad(..., retain_graph=True)` on a graph built once, autograd times
the function returned by `make_vjp`.
"""

import argparse
import os
import sys
import time

LIBRARIES = ("jax", "pytorch", "autograd")
MATMUL_SIZES = (256, 1024)
CHOLESKY_SIZES = (500, 1000, 2000)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--library", choices=LIBRARIES)
    p.add_argument("--threads", type=int)
    p.add_argument("--aggregate", metavar="ROWS", help="print the CSV of medians over rounds and exit")
    p.add_argument("--summarize", metavar="CSV", help="print ratios from a finished CSV and exit")
    p.add_argument("--min-reps", type=int, default=3, help="timed runs at least")
    p.add_argument("--max-reps", type=int, default=10, help="timed runs at most")
    p.add_argument(
        "--budget",
        type=float,
        default=1.0,
        help="seconds of timed runs per case after which no new run starts once min-reps are done",
    )
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    if args.summarize is None and args.aggregate is None and (args.library is None or args.threads is None):
        p.error("--library and --threads are required unless --aggregate or --summarize is given")
    return args


def aggregate(path):
    rounds = {}
    with open(path) as f:
        for line in f:
            *key, seconds = line.strip().split(",")
            if key:
                rounds.setdefault(tuple(key), []).append(float(seconds))
    print("library,op,n,threads,pass,median_s")
    for key, times in rounds.items():
        print(",".join(key) + f",{median(times):.9f}")


def summarize(path):
    import csv

    med = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            key = (r["op"], int(r["n"]), int(r["threads"]))
            med.setdefault(key, {}).setdefault(r["library"], {})[r["pass"]] = float(r["median_s"])
    libs = ("matgrad", "matgrad-faer") + LIBRARIES
    head = f"{'op':<9}{'n':>6}{'thr':>4}  " + "".join(f"{lib + ' bwd (b/f)':>24}" for lib in libs)
    head += "".join(f"{'matgrad/' + lib:>18}" for lib in LIBRARIES)
    print(head)
    for (op, n, t), by_lib in sorted(med.items()):
        line = f"{op:<9}{n:>6}{t:>4}  "
        for lib in libs:
            p = by_lib.get(lib, {})
            if "backward" in p and "forward" in p:
                cell = f"{p['backward'] * 1e3:.1f} ms ({p['backward'] / p['forward']:.2f}x)"
            else:
                cell = "-"
            line += f"{cell:>24}"
        mine = by_lib.get("matgrad", {}).get("backward")
        for lib in LIBRARIES:
            theirs = by_lib.get(lib, {}).get("backward")
            line += f"{mine / theirs:>18.2f}" if mine and theirs else f"{'-':>18}"
        print(line)


def limit_threads(threads, library):
    t = str(threads)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = t
    if library == "jax":
        eigen = "false" if threads == 1 else "true"
        flags = f"--xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={t}"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()


def median(xs):
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else 0.5 * (s[m - 1] + s[m])


def measure(run, args, warmups=1):
    """Median wall time of `run()`, after `warmups` untimed calls."""
    for _ in range(warmups):
        run()
    times = []
    spent = 0.0
    while len(times) < args.max_reps and (len(times) < args.min_reps or spent < args.budget):
        t0 = time.perf_counter()
        run()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
    return median(times), len(times)


def spd(rng, n):
    import numpy as np

    g = rng.standard_normal((n, n))
    return g @ g.T / n + np.eye(n)


def cases(rng):
    """(op, n, inputs, cotangent) with the same construction for every library."""
    import numpy as np

    for n in MATMUL_SIZES:
        a = rng.standard_normal((n, n))
        b = rng.standard_normal((n, n))
        cbar = rng.standard_normal((n, n))
        yield "matmul", n, (a, b), cbar
    for n in CHOLESKY_SIZES:
        a = spd(rng, n)
        lbar = np.tril(rng.standard_normal((n, n)))
        yield "cholesky", n, (a,), lbar


def jax_runners(op, inputs, cot):
    import jax
    import jax.numpy as jnp

    f = (lambda a, b: a @ b) if op == "matmul" else jnp.linalg.cholesky
    xs = [jnp.asarray(x) for x in inputs]
    ct = jnp.asarray(cot)
    fwd = jax.jit(f)
    _, pullback = jax.jit(lambda *a: jax.vjp(f, *a))(*xs)
    bwd = jax.jit(lambda pb, c: pb(c))
    return (
        lambda: fwd(*xs).block_until_ready(),
        lambda: jax.block_until_ready(bwd(pullback, ct)),
    )


def pytorch_runners(op, inputs, cot):
    import torch

    f = (lambda a, b: a @ b) if op == "matmul" else torch.linalg.cholesky
    plain = [torch.from_numpy(x) for x in inputs]
    leaves = [torch.from_numpy(x.copy()).requires_grad_(True) for x in inputs]
    out = f(*leaves)
    ct = torch.from_numpy(cot)

    def forward():
        with torch.no_grad():
            f(*plain)

    return forward, lambda: torch.autograd.grad(out, leaves, ct, retain_graph=True)


def autograd_runners(op, inputs, cot):
    import autograd.numpy as anp
    import numpy as np
    from autograd import make_vjp

    if op == "matmul":
        a, b = inputs
        vjp, _ = make_vjp(lambda ab: anp.dot(ab[0], ab[1]))((a, b))
        return lambda: np.dot(a, b), lambda: vjp(cot)
    (a,) = inputs
    vjp, _ = make_vjp(anp.linalg.cholesky)(a)
    return lambda: np.linalg.cholesky(a), lambda: vjp(cot)


def configure(library, threads):
    if library == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_platforms", "cpu")
    elif library == "pytorch":
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)


def report_threads(library):
    """One stderr line saying which thread pools the process really has."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return
    pools = ", ".join(f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info())
    extra = ""
    if library == "pytorch":
        import torch

        extra = f", torch intra-op={torch.get_num_threads()}"
    print(f"[{library}] thread pools: {pools}{extra}", file=sys.stderr)


def main():
    args = parse_args()
    if args.aggregate:
        aggregate(args.aggregate)
        return
    if args.summarize:
        summarize(args.summarize)
        return
    limit_threads(args.threads, args.library)

    import numpy as np

    configure(args.library, args.threads)
    runners = {
        "jax": jax_runners,
        "pytorch": pytorch_runners,
        "autograd": autograd_runners,
    }[args.library]
    # Compilation happens in the first call; a second untimed call lets caches settle.
    warmups = 2 if args.library == "jax" else 1
    report_threads(args.library)

    rng = np.random.default_rng(args.seed)
    for op, n, inputs, cot in cases(rng):
        forward, backward = runners(op, inputs, cot)
        for pass_name, run in (("forward", forward), ("backward", backward)):
            med, reps = measure(run, args, warmups)
            print(f"{args.library},{op},{n},{args.threads},{pass_name},{med:.9f}", flush=True)
            print(
                f"[{args.library}] {op} n={n} threads={args.threads} {pass_name}: "
                f"{med * 1e3:.2f} ms (median of {reps})",
                file=sys.stderr,
                flush=True,
            )


if __name__ == "__main__":
    main()
