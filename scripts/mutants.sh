#!/usr/bin/env bash
# Mutation testing of the rules (src/ops) and the checker (src/check) with cargo-mutants:
# each mutant (an operator flipped, a function body replaced) must make a test fail.
#
#   scripts/mutants.sh check                 # src/check, with the tests that exercise it
#   scripts/mutants.sh ops --shard 3/20      # a twentieth of src/ops
#   scripts/mutants.sh ops -f src/ops/trace.rs
#   scripts/mutants.sh check --list          # the mutants, without running them
#   scripts/mutants.sh ops --shard 0/100 --sharding round-robin   # a uniform sample
#
# Install once: cargo install --locked cargo-mutants cargo-nextest. Extra arguments go to
# cargo-mutants (a later -f narrows the files). Results land in
# target/mutants-check/mutants.out/ or target/mutants-ops/mutants.out/ (caught.txt,
# missed.txt, unviable.txt, timeout.txt); `--iterate` re-runs only the mutants of that
# kind not caught last time.
#
# Every mutant rebuilds the crate and its test binaries: src/check is some 500 mutants
# and src/ops some 1900, each half a minute or more on a small machine, so shard them
# (--shard k/N; --sharding round-robin makes a shard a uniform sample) or name files.
# Shards partition the mutant list of one tree: a change that adds or removes mutants
# shifts every later mutant to another shard, so the shards of one sample belong on
# one commit (a worktree checked out at it), or their results must be matched by
# mutant, not added up.
#
# The run happens in a copy of the tree under target/mutants-check/tree or
# target/mutants-ops/tree (so the working tree is never edited, and a check run and an
# ops run can go side by side), kept between runs so that the dependencies are built
# once; the `mutants` profile (Cargo.toml) builds the crate quickly. The tests run under
# cargo-nextest: it runs the test binaries side by side and stops at the first failure,
# which halves the test phase (the unmutated run of the ops tests on 2 cores: 11 s, where
# `cargo test` takes 22 s). MUTANTS_TEST_TOOL=cargo runs them with `cargo test`.
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
        --test=properties --test=hardening --test=fuzz --test=allocation)
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

out=$root/target/mutants-$what
tree=$out/tree
mkdir -p "$tree"
# The sources as they are now (committed or not); the copy's own target/ is kept. The
# copies are stamped with the time of copying (-m): with their own older times, cargo
# would take the builds left from the last mutant of an earlier run as up to date.
find "$tree" -mindepth 1 -maxdepth 1 ! -name target -exec rm -rf {} +
(cd "$root" && tar --exclude=./target --exclude=./mutants.out --exclude=./.git -cf - .) |
    (cd "$tree" && tar -xmf -)

cd "$tree"
status=0
# The test timeout is a multiple of the unmutated run's time, measured once: on a shared
# machine a later run can take several times as long, hence the floor. The build timeout
# is fixed: the tree copy is kept between runs, so the unmutated build may take a second
# and a multiple of it would stop every mutant's build.
cargo mutants --in-place --profile mutants --test-tool="${MUTANTS_TEST_TOOL:-nextest}" \
    --timeout-multiplier 3 --minimum-test-timeout 90 --build-timeout 1200 \
    --output "$out" \
    "${files[@]}" "${test_args[@]}" "$@" || status=$?
# cargo-mutants exits 2 when mutants were missed, 3 on timeouts: the summary says.
for f in caught missed timeout unviable; do
    printf '%-9s %s\n' "$f" "$(wc -l < "$out/mutants.out/$f.txt" 2>/dev/null || echo 0)"
done
exit $status
