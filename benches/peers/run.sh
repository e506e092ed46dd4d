#!/usr/bin/env bash
# Times matrix product and Cholesky, forward and backward, in matgrad, JAX, PyTorch and
# HIPS autograd, and writes docs/peers.csv (library,op,n,threads,pass,median_s).
#
#   bash benches/peers/run.sh
#
# Creates benches/peers/.venv on first use and installs requirements.txt into it.
# Settings, all optional:
#   PEERS_THREADS="1 2"       thread counts, one process per library and count
#   PEERS_LIBRARIES="matgrad matgrad-faer jax pytorch autograd"
#                             matgrad is the default (OpenBLAS) build, matgrad-faer the
#                             pure-Rust one (--no-default-features --features faer)
#   PEERS_ROUNDS=3            sweeps over all libraries, each in another library order;
#                             the CSV holds the median over rounds, so that load from
#                             other processes falls on every library alike
#   PEERS_MIN_REPS=3 PEERS_MAX_REPS=10 PEERS_BUDGET=1.0
#                             timed runs per case and round: at least MIN, at most MAX,
#                             and no new run once BUDGET seconds are spent
#   PEERS_OUT=docs/peers.csv  where the CSV goes
#   PEERS_OPENBLAS_CORETYPE   kernel of the system OpenBLAS for matgrad (see below);
#                             "detected" keeps OpenBLAS's own choice
#   PYTHON=python3            interpreter the virtual environment is made from
#   PEERS_PYTHON              an interpreter whose environment already has the peers
#                             (JAX, PyTorch, autograd): used as it is, nothing installed
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv="$here/.venv"
py=${PEERS_PYTHON:-$venv/bin/python}
out=${PEERS_OUT:-$root/docs/peers.csv}
threads_list=${PEERS_THREADS:-"1 2"}
libraries=${PEERS_LIBRARIES:-"matgrad matgrad-faer jax pytorch autograd"}
rounds=${PEERS_ROUNDS:-3}
reps=(--min-reps "${PEERS_MIN_REPS:-3}" --max-reps "${PEERS_MAX_REPS:-10}" --budget "${PEERS_BUDGET:-1.0}")

say() { printf '[run.sh] %s\n' "$*" >&2; }

install_env() {
    local stamp="$venv/.requirements.sha256"
    local want
    want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
    if [[ -x "$py" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    local t0=$SECONDS
    if [[ ! -x "$py" ]]; then
        say "creating $venv"
        "${PYTHON:-python3}" -m venv "$venv"
    fi
    say "installing the pinned requirements (about 2.6 GB of wheels on first use)"
    # --no-deps: requirements.txt is the complete list; see the comment at its top.
    "$py" -m pip install --quiet --disable-pip-version-check --no-deps -r "$here/requirements.txt"
    "$py" -c 'import autograd, jax, numpy, scipy, torch, threadpoolctl' \
        || { say "the environment does not import; delete $venv and run again"; exit 1; }
    echo "$want" >"$stamp"
    say "environment ready in $((SECONDS - t0)) s"
}

# Debian's OpenBLAS 0.3.21 does not know recent Intel cores and falls back to its
# generic SSE3 kernel ("Prescott"), 2-4x slower than what numpy's own OpenBLAS, MKL or
# XLA use on the same machine. Unless told otherwise, matgrad gets the AVX-512 (or AVX2)
# kernel such a CPU supports; the peers program checks its results against the naive loops
# before timing, so a kernel the CPU cannot run stops the run.
choose_coretype() {
    local detected
    detected=$("$bins/matgrad" --print-kernel)
    if [[ -n "${PEERS_OPENBLAS_CORETYPE:-}" ]]; then
        [[ "$PEERS_OPENBLAS_CORETYPE" == detected ]] && echo "" || echo "$PEERS_OPENBLAS_CORETYPE"
        return
    fi
    # matgrad::runtime() compares OpenBLAS's kernel with what the CPU supports.
    "$bins/matgrad" --print-better-kernel
}

thread_env() {
    local t=$1
    echo OPENBLAS_NUM_THREADS="$t" OMP_NUM_THREADS="$t" MKL_NUM_THREADS="$t"
}

# Below the machine's core count every process, matgrad's included, also runs on only
# `t` cores (its affinity mask): XLA ignores its thread flags and would otherwise use
# every core for a "one-thread" case.
pin() {
    local t=$1
    local cores
    cores=$(nproc)
    if ((t < cores)); then
        echo taskset -c "0-$((t - 1))"
    fi
}

main() {
    cd "$root"
    if [[ -z "${PEERS_PYTHON:-}" ]]; then
        case " $libraries " in *" jax "* | *" pytorch "* | *" autograd "*) install_env ;; esac
    fi

    local coretype=""
    bins=$(mktemp -d)
    trap 'rm -rf "$bins"' EXIT
    rows="$bins/rows.csv"
    # One build per backend, the faer one in its own target directory so that neither
    # build invalidates the other.
    local target=${CARGO_TARGET_DIR:-$root/target}
    if [[ " $libraries " == *" matgrad "* ]]; then
        say "building tools/bench-report (the peers program, OpenBLAS)"
        cargo build --release --quiet -p bench-report --bin peers
        cp "$target/release/peers" "$bins/matgrad"
        coretype=$(choose_coretype)
        say "matgrad: system OpenBLAS kernel ${coretype:-as detected}"
    fi
    if [[ " $libraries " == *" matgrad-faer "* ]]; then
        say "building tools/bench-report (the peers program, faer)"
        cargo build --release --quiet -p bench-report --no-default-features --features faer \
            --target-dir "$target/faer" --bin peers
        cp "$target/faer/release/peers" "$bins/matgrad-faer"
    fi
    local -a libs
    read -r -a libs <<<"$libraries"
    local t0=$SECONDS
    say "timing started $(date -u '+%Y-%m-%d %H:%M:%S UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    for ((r = 0; r < rounds; r++)); do
        say "round $((r + 1)) of $rounds"
        for t in $threads_list; do
            for ((i = 0; i < ${#libs[@]}; i++)); do
                local lib=${libs[$(((i + r) % ${#libs[@]}))]}
                # Every thread setting is read when a library loads: one process each.
                if [[ "$lib" == matgrad ]]; then
                    $(pin "$t") env $(thread_env "$t") ${coretype:+OPENBLAS_CORETYPE=$coretype} \
                        "$bins/matgrad" --threads "$t" "${reps[@]}" >>"$rows"
                elif [[ "$lib" == matgrad-faer ]]; then
                    $(pin "$t") env $(thread_env "$t") "$bins/matgrad-faer" --threads "$t" "${reps[@]}" >>"$rows"
                else
                    $(pin "$t") env $(thread_env "$t") "$py" "$here/peers.py" --library "$lib" --threads "$t" "${reps[@]}" >>"$rows"
                fi
            done
        done
    done
    say "timing took $((SECONDS - t0)) s, load average now $(cut -d' ' -f1-3 /proc/loadavg)"

    mkdir -p "$(dirname "$out")"
    "${PYTHON:-python3}" "$here/peers.py" --aggregate "$rows" >"$out.tmp"
    mv "$out.tmp" "$out"
    say "wrote $out"
    "${PYTHON:-python3}" "$here/peers.py" --summarize "$out"
}

main "$@"
