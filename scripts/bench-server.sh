#!/usr/bin/env bash
# The server's load runs of docs/BENCHMARKS.md: card logins over mutual TLS
# on SQLite and PostgreSQL, closed loop (maximum) then open loop at 80 % of
# the maximum measured (32 workstations evenly, and 256 workstations with
# Poisson arrivals), plus a run at 4,000/s. One JSON report per run in OUT,
# and a line each on standard output.
#
#   scripts/bench-server.sh OUT [LOADGEN]
#
# LOADGEN defaults to target/release/clinauth-loadgen (build it first:
# cargo build --release -p clinauth-loadgen). PostgreSQL runs need a server
# on 127.0.0.1:5432 (PG, below) and are skipped when none answers.
set -euo pipefail
OUT=${1:?usage: $0 OUT [LOADGEN]}
LG=${2:-${CARGO_TARGET_DIR:-target}/release/clinauth-loadgen}
PG=${PG:-postgres://postgres@127.0.0.1:5432/postgres}
RUNS=${RUNS:-3}
mkdir -p "$OUT"

summary() {
    python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
l = d["latency"]
def p(k):
    x = l[k]
    return f"{x['p50']:.2f}/{x['p99']:.2f}/{x['p999']:.1f}/{x['max']:.1f}"
c = d["cpu"]
s = l.get("login_per_second", {})
print(f"{d['throughput']:.0f}/s  login p50/p99/p99.9/max {p('login_ms')}  begin {p('begin_ms')}  "
      f"finish {p('finish_ms')}  late {p('late_ms')}  "
      f"p99 by second median/worst {s.get('p99_median_ms', 0):.2f}/{s.get('p99_worst_ms', 0):.1f}  "
      f"{c['server_us_per_login']:.0f} us/login  "
      f"{c['logins_per_core_s']:.0f}/core  ecdsa ratio {d['ecdsa']['ratio_to_logins']:.2f}  errors {d['errors_total']}")
PY
}

run() {
    local name=$1
    shift
    "$LG" run --users "${USERS:-256}" --workstations "${WS:-32}" --duration "${DURATION:-10s}" --json "$@" >"$OUT/$name.json"
    printf '%-28s ' "$name"
    summary "$OUT/$name.json"
}

mean_rate() {
    python3 - "$@" <<'PY'
import json, sys
rates = [json.load(open(f))["throughput"] for f in sys.argv[1:]]
print(int(0.8 * sum(rates) / len(rates)))
PY
}

for i in $(seq "$RUNS"); do run "sqlite-closed-$i"; done
R80=$(mean_rate "$OUT"/sqlite-closed-*.json)
echo "80 % of the mean maximum: $R80/s"
for i in $(seq "$RUNS"); do run "sqlite-80-$i" --rate "$R80"; done
for i in $(seq "$RUNS"); do
    WS=256 USERS=1024 run "sqlite-80-poisson-256ws-$i" --rate "$R80" --arrivals poisson
done
for i in $(seq "$RUNS"); do run "sqlite-4000-$i" --rate 4000; done

if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    for i in $(seq "$RUNS"); do run "pg-closed-$i" --postgres "$PG"; done
    P80=$(mean_rate "$OUT"/pg-closed-*.json)
    echo "PostgreSQL, 80 % of the mean maximum: $P80/s"
    for i in $(seq "$RUNS"); do run "pg-80-$i" --postgres "$PG" --rate "$P80"; done
else
    echo "no PostgreSQL on 127.0.0.1:5432: PostgreSQL runs skipped"
fi
