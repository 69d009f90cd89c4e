#!/usr/bin/env bash
# The whole test suite: formatting, lints, and every crate's tests, with the
# real parts each test needs started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "PostgreSQL on 127.0.0.1:5432 (the storage tests run on SQLite and PostgreSQL)"
if ! (echo > /dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
    for version in /etc/postgresql/*; do
      pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start || true
    done
  fi
  for _ in $(seq 1 30); do (echo > /dev/tcp/127.0.0.1/5432) 2>/dev/null && break; sleep 1; done
fi
if (echo > /dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  echo "PostgreSQL is listening"
else
  echo "PostgreSQL is not reachable on 127.0.0.1:5432: the PostgreSQL tests will fail" >&2
fi

step "cargo test --workspace"
cargo test --workspace --locked
