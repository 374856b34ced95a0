#!/usr/bin/env bash
# Proves each security regression test can fail: for every patch here, builds berth-runtime
# with that one defence removed and runs the tests the patch names against it (through
# BERTH_RUNTIME). Every test the filter matches must fail on the weakened build; the
# workspace's `cargo test` shows they pass on the real one. A patch that no longer applies
# fails this script, so the patches follow the code.
#
# Each patch starts with a line `Defeats: <test file> <test name filter>`.
# Usage (root, after the fixtures are built): bash kernel-tests/weakened/run.sh [patch…]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
triple=$(rustc -vV | sed -n 's/^host: //p')

# A copy of the sources outside this repository (git apply then acts on plain files), built
# into this repository's target directory under a profile of its own, so registry crates are
# compiled once and the real binaries are never replaced.
src=$(mktemp -d "${TMPDIR:-/tmp}/berth-weakened.XXXXXX")
trap 'rm -rf "$src"' EXIT
tar --exclude=./target --exclude=./.git -cf - . | tar -xf - -C "$src"
printf '\n[profile.weakened]\ninherits = "dev"\n' >>"$src/Cargo.toml"
weak="$root/target/$triple/weakened/berth-runtime"

patches=("$@")
[ ${#patches[@]} -gt 0 ] || patches=(kernel-tests/weakened/*.patch)
failed=0
for patch in "${patches[@]}"; do
  name=$(basename "$patch" .patch)
  read -r _ test filter <"$patch"
  (cd "$src" && git apply "$root/$patch")
  CARGO_TARGET_DIR="$root/target" cargo build --quiet --profile weakened -p berth-runtime \
    --manifest-path "$src/Cargo.toml"
  (cd "$src" && git apply -R "$root/$patch")
  log="$root/target/weakened-$name.log"
  if BERTH_RUNTIME="$weak" cargo test --quiet -p berth-kernel-tests --test "$test" -- "$filter" \
    >"$log" 2>&1; then
    echo "weakened build $name: $test $filter PASSED without its defence (see $log)" >&2
    failed=1
  elif ! grep -q "^test result: FAILED. 0 passed" "$log"; then
    echo "weakened build $name: not every test matching $test $filter failed (see $log)" >&2
    failed=1
  else
    echo "weakened build $name: $test $filter fails without its defence, as it must"
  fi
done
exit $failed
