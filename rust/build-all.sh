#!/usr/bin/env bash
# Builds every runtime variant of the Rust agent into rust/target/release/:
#   cfexp-agent-tokio  cfexp-agent-tokio_localset  cfexp-agent-smol
#   cfexp-agent-smol_1kb  cfexp-agent-async_std
#
# One cargo invocation per variant, with only that variant's feature — the
# same command cfexp/agents/rust_build.py runs — so no binary links a runtime
# it does not use, and a later harness build finds everything fresh.
# Then checks that the smol/async_std binaries contain no tokio runtime
# (hyper 1.x itself depends on tokio, with its `sync` feature only).
#
# Usage: rust/build-all.sh [--no-check]
set -euo pipefail
cd "$(dirname "$0")"

variants=(tokio tokio_localset smol smol_1kb async_std)
start=$(date +%s)
for v in "${variants[@]}"; do
    echo "== cargo build --release --locked --features $v --bin cfexp-agent-$v" >&2
    cargo build --release --locked --features "$v" --bin "cfexp-agent-$v"
done
echo "built ${#variants[@]} variants in $(( $(date +%s) - start )) s:" >&2
for v in "${variants[@]}"; do
    bin="target/release/cfexp-agent-$v"
    printf '  %-40s %8d bytes\n' "$bin" "$(stat -c %s "$bin")" >&2
done

[[ "${1:-}" == "--no-check" ]] && exit 0

# No tokio runtime outside the tokio variants: tokio may appear only as
# hyper's dependency, with no feature beyond `sync` (its default set is
# empty), and the binaries must not contain tokio's scheduler, runtime
# builder, drivers (IO, timer), blocking pool, net or time. (`sync` alone
# still compiles tokio's cooperative-budget hooks, `tokio::task::coop` and a
# thread-local `tokio::runtime::context::CONTEXT`: no-ops without a runtime.)
status=0
for v in smol smol_1kb async_std; do
    features=$(cargo tree -e normal -p cfexp-agent --no-default-features --features "$v" \
        --prefix none --format '{p} {f}' | awk '$1 == "tokio" {print $3}' | sort -u)
    dependents=$(cargo tree -e normal -p cfexp-agent --no-default-features --features "$v" \
        -i tokio --depth 1 --prefix none | tail -n +2 | awk '{print $1}' | sort -u | tr '\n' ' ')
    echo "[$v] tokio features: ${features:-(none)}; depended on by: ${dependents:-(nothing)}" >&2
    if [[ -n "$features" && "$features" != "default,sync" && "$features" != "sync" ]]; then
        echo "[$v] FAIL: tokio has features beyond sync" >&2; status=1
    fi
    if [[ "$dependents" != "hyper " ]]; then
        echo "[$v] FAIL: something other than hyper depends on tokio" >&2; status=1
    fi
    if command -v nm >/dev/null; then
        runtime_syms=$(nm -C "target/release/cfexp-agent-$v" 2>/dev/null \
            | grep -cE 'tokio::(runtime::(scheduler|builder|driver|io|time|blocking|handle)|net|time)::' || true)
        echo "[$v] tokio scheduler/driver/net/time symbols in the binary: $runtime_syms" >&2
        [[ "$runtime_syms" == 0 ]] || status=1
    fi
done
exit $status
