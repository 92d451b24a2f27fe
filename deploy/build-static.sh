#!/usr/bin/env bash
# Builds the fully static sidecar binary: glibc linked in (crt-static), no ELF interpreter,
# no shared library needed at run time. Prints the binary's path on stdout.
#
# The flag is set here, for an explicit --target, and not in .cargo/config.toml: there it
# would also apply to the ordinary `cargo build` / `cargo test`. With --target, RUSTFLAGS
# reach only the target's crates, never build scripts or proc macros (which must stay
# dynamic). The `static` profile (Cargo.toml) keeps its artifacts apart from debug/release.
#
# getrandom_backend: the getrandom crate finds glibc's getrandom() with dlsym, which finds
# nothing in a static binary, and then falls back to reading /dev/random and /dev/urandom;
# an empty root has neither, and the first request ID would fail. This cfg makes it call
# getrandom() directly (glibc >= 2.25, Linux >= 3.17).
#
#   deploy/build-static.sh            # -> target/x86_64-unknown-linux-gnu/static/immutable-id-proxy
#   CARGO_TARGET_DIR=/tmp/t deploy/build-static.sh
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
export RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"'
cargo build --locked --profile static --target "$target" --bin immutable-id-proxy >&2
target_dir=${CARGO_TARGET_DIR:-target}
case $target_dir in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
echo "$target_dir/$target/static/immutable-id-proxy"
