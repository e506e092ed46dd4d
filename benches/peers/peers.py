"""Times matrix product, Cholesky, eigh, SVD and solve, forward and reverse, and an MLP training step, in JAX, PyTorch and HIPS autograd.

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
the function returned by `make_vjp`. For several outputs (eigh: values and vectors;
SVD: U, s, V) every output gets a random cotangent.

The MLP step (pass `step`) is forward, reverse and a plain SGD update of a tanh network
with a linear last layer into the softmax cross-entropy, in float64: PyTorch eager
(`nn.Linear`, `nn.Tanh`, `cross_entropy`, `torch.optim.SGD`), JAX one jitted function
of parameters and batch (`value_and_grad` and the update). Ops `mlp-small`
(64-128-128-10, batch 64) and `mlp-wide` (784-1024-1024-10, batch 256); `n` is the
batch. Autograd has no MLP case.
"""

import argparse
import os
import sys
import time

LIBRARIES = ("jax", "pytorch", "autograd")
MATMUL_SIZES = (256, 1024)
CHOLESKY_SIZES = (500, 1000, 2000)
GILES_SIZES = (100, 500)
MLPS = (("mlp-small", (64, 128, 128, 10), 64), ("mlp-wide", (784, 1024, 1024, 10), 256))
LR = 1e-3


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
    steps = {k: v for k, v in med.items() if k[0].startswith("mlp")}
    for (op, n, t), by_lib in sorted(med.items()):
        if (op, n, t) in steps:
            continue
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
    if steps:
        print()
        print(f"{'MLP step':<18}{'batch':>6}{'thr':>4}" + "".join(f"{lib:>14}" for lib in ("matgrad", "jax", "pytorch"))
              + "".join(f"{'matgrad/' + lib:>18}" for lib in ("jax", "pytorch")))
        for (op, n, t), by_lib in sorted(steps.items()):
            step = {lib: by_lib.get(lib, {}).get("step") for lib in ("matgrad", "jax", "pytorch")}
            line = f"{op:<18}{n:>6}{t:>4}"
            line += "".join(f"{v * 1e3:>11.2f} ms" if v else f"{'-':>14}" for v in step.values())
            for lib in ("jax", "pytorch"):
                mine, theirs = step["matgrad"], step[lib]
                line += f"{mine / theirs:>18.2f}" if mine and theirs else f"{'-':>18}"
            print(line)


def limit_threads(threads, library):
    t = str(threads)
    # XLA's CPU runtime sizes its own thread pool from the cores it may run on and
    # ignores the flags below (JAX 0.10 ran a GEMM on both cores of a 2-core machine
    # with them set); the only limit every library obeys is the CPU affinity mask.
    cpus = sorted(os.sched_getaffinity(0))
    if threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])
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
    for n in GILES_SIZES:
        g = rng.standard_normal((n, n))
        a = (g + g.T) / 2
        yield "eigh", n, (a,), (rng.standard_normal(n), rng.standard_normal((n, n)))
    for n in GILES_SIZES:
        a = rng.standard_normal((n, n))
        cots = (rng.standard_normal((n, n)), rng.standard_normal(n), rng.standard_normal((n, n)))
        yield "svd", n, (a,), cots
    for n in GILES_SIZES:
        a = rng.standard_normal((n, n)) + n**0.5 * np.eye(n)
        b = rng.standard_normal((n, n))
        yield "solve", n, (a, b), rng.standard_normal((n, n))


def mlp_cases(rng):
    """(op, batch, params [W1, b1, ...] as out×in and out, x as batch×in, labels)."""
    import numpy as np

    for op, widths, batch in MLPS:
        params = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            bound = (6.0 / (fan_in + fan_out)) ** 0.5
            params.append(rng.uniform(-bound, bound, (fan_out, fan_in)))
            params.append(0.1 * rng.standard_normal(fan_out))
        x = rng.standard_normal((batch, widths[0]))
        labels = (np.arange(batch) * 7 + 3) % widths[-1]
        yield op, batch, params, x, labels


def functions(op, mod, pack=tuple):
    """The function of `op` for a library whose linalg module is `mod.linalg`, with
    (U, s, V) for the SVD as matgrad gives it; `pack` makes the tuple of several
    outputs (autograd traces only its own container type)."""
    if op == "matmul":
        return lambda a, b: a @ b
    if op == "cholesky":
        return mod.linalg.cholesky
    if op == "eigh":
        return lambda a: pack(mod.linalg.eigh(a))
    if op == "svd":

        def svd(a):
            u, s, vh = mod.linalg.svd(a, full_matrices=False)
            return pack((u, s, vh.T))

        return svd
    if op == "solve":
        return mod.linalg.solve
    raise ValueError(op)


def jax_runners(op, inputs, cot):
    import jax
    import jax.numpy as jnp

    f = functions(op, jnp)
    xs = [jnp.asarray(x) for x in inputs]
    ct = tuple(jnp.asarray(c) for c in cot) if isinstance(cot, tuple) else jnp.asarray(cot)
    fwd = jax.jit(f)
    _, pullback = jax.jit(lambda *a: jax.vjp(f, *a))(*xs)
    bwd = jax.jit(lambda pb, c: pb(c))
    return (
        lambda: jax.block_until_ready(fwd(*xs)),
        lambda: jax.block_until_ready(bwd(pullback, ct)),
    )


def pytorch_runners(op, inputs, cot):
    import torch

    f = functions(op, torch)
    if op == "svd":

        def f(a):
            u, s, vh = torch.linalg.svd(a, full_matrices=False)
            return u, s, vh.mT

    plain = [torch.from_numpy(x) for x in inputs]
    leaves = [torch.from_numpy(x.copy()).requires_grad_(True) for x in inputs]
    out = f(*leaves)
    ct = tuple(torch.from_numpy(c) for c in cot) if isinstance(cot, tuple) else torch.from_numpy(cot)

    def forward():
        with torch.no_grad():
            f(*plain)

    return forward, lambda: torch.autograd.grad(out, leaves, ct, retain_graph=True)


def autograd_runners(op, inputs, cot):
    import autograd.numpy as anp
    import numpy as np
    from autograd import make_vjp
    from autograd.builtins import tuple as traced_tuple

    if len(inputs) == 2:
        f, g = functions(op, anp), functions(op, np)
        vjp, _ = make_vjp(lambda ab: f(ab[0], ab[1]))(tuple(inputs))
        return lambda: g(*inputs), lambda: vjp(cot)
    (a,) = inputs
    f, g = functions(op, anp, traced_tuple), functions(op, np)
    vjp, _ = make_vjp(f)(a)
    return lambda: g(a), lambda: vjp(cot)


def pytorch_step(params, x, labels):
    import torch

    layers = []
    for k in range(0, len(params), 2):
        w, b = params[k], params[k + 1]
        lin = torch.nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if k + 2 < len(params):
            layers.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(labels.astype("int64"))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()

    return step


def jax_step(params, x, labels):
    import jax
    import jax.numpy as jnp

    def loss_fn(ps, x, y):
        h = x
        for k in range(0, len(ps), 2):
            h = h @ ps[k].T + ps[k + 1]
            if k + 2 < len(ps):
                h = jnp.tanh(h)
        logp = jax.nn.log_softmax(h, axis=1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def update(ps, x, y):
        loss, g = jax.value_and_grad(loss_fn)(ps, x, y)
        return [p - LR * gp for p, gp in zip(ps, g)], loss

    state = {"ps": [jnp.asarray(p) for p in params]}
    xj, yj = jnp.asarray(x), jnp.asarray(labels)

    def step():
        state["ps"], loss = update(state["ps"], xj, yj)
        loss.block_until_ready()

    return step


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
    timed = [(op, n, runners(op, inputs, cot)) for op, n, inputs, cot in cases(rng)]
    steps = {"jax": jax_step, "pytorch": pytorch_step}.get(args.library)
    if steps is not None:
        for op, batch, params, x, labels in mlp_cases(rng):
            timed.append((op, batch, (("step", steps(params, x, labels)),)))
    for op, n, runs in timed:
        if not isinstance(runs[0], tuple):
            runs = (("forward", runs[0]), ("backward", runs[1]))
        for pass_name, run in runs:
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
