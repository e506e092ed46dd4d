#!/usr/bin/env bash
# Mutation testing of the rules (src/ops) and the checker (src/check) with cargo-mutants:
# each mutant (an operator flipped, a function body replaced) must make a test fail.
#
#   scripts/mutants.sh check                 # src/check, with the tests that exercise it
#   scripts/mutants.sh ops --shard 3/20      # a twentieth of src/ops
#   scripts/mutants.sh ops -f src/ops/trace.rs
#   scripts/mutants.sh check --list          # the mutants, without running them
#
# Install once: cargo install --locked cargo-mutants. Extra arguments go to cargo-mutants
# (a later -f narrows the files). Results land in mutants.out/ (caught.txt, missed.txt,
# unviable.txt, timeout.txt). `--iterate` re-runs only the mutants not caught last time.
#
# Every mutant rebuilds the crate: a full run of src/ops is some 1500 mutants, hours on a
# small machine, so shard it (--shard k/N) or name files.
#
# The run happens in a copy of the tree under target/mutants-tree (so the working tree
# is never edited), kept between runs so that the dependencies are built once; the
# `mutants` profile (Cargo.toml) builds the crate quickly.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
what=${1:-check}
shift || true

case $what in
check)
    files=(-f 'src/check/**')
    tests=(--lib --test=checker_mistakes --test=checker_options
        --test=downstream_primitive --test=downstream_two_output)
    ;;
ops)
    files=(-f 'src/ops/**')
    tests=(--lib --test=giles_lu --test=giles_misc --test=giles_spectral
        --test=cholesky --test=cholesky_family --test=losses --test=matmul
        --test=ops_elementwise --test=ops_structural --test=naive_oracle
        --test=properties --test=fuzz)
    ;;
*)
    echo "usage: $0 check|ops [cargo-mutants arguments]" >&2
    exit 2
    ;;
esac

# As cargo arguments, so that the build (`cargo test --no-run`) builds only these too.
test_args=()
for t in "${tests[@]}"; do
    test_args+=("--cargo-arg=$t")
done

tree=$root/target/mutants-tree
mkdir -p "$tree"
# The sources as they are now (committed or not); the copy's own target/ is kept.
find "$tree" -mindepth 1 -maxdepth 1 ! -name target -exec rm -rf {} +
(cd "$root" && tar --exclude=./target --exclude=./mutants.out --exclude=./.git -cf - .) |
    (cd "$tree" && tar -xf -)

cd "$tree"
status=0
cargo mutants --in-place --profile mutants \
    --timeout-multiplier 3 --build-timeout-multiplier 4 \
    --output "$root" \
    "${files[@]}" "${test_args[@]}" "$@" || status=$?
# cargo-mutants exits 2 when mutants were missed, 3 on timeouts: the summary says.
for f in caught missed timeout unviable; do
    printf '%-9s %s\n' "$f" "$(wc -l < "$root/mutants.out/$f.txt" 2>/dev/null || echo 0)"
done
exit $status
