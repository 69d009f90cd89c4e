#!/usr/bin/env bash
# The main job: build ClinAuth, deploy it locally on embedded defaults
# (SQLite, a local CA), and authenticate a clinician over mutual TLS.
#
#   scripts/demo.sh          run everything, then stop what it started
#   scripts/demo.sh --keep   leave the server running for you to explore
#
# Until the workstation agent and the PAM module land (issues 5 and 6),
# `curl` with the workstation's client certificate plays the workstation:
# it asks the server to begin, presents the evidence, and gets the decision.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

KEEP=0
[[ "${1:-}" == "--keep" ]] && KEEP=1

scripts/install-deps.sh

step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }
say() { printf '   %s\n' "$*"; }
ctl="$ROOT/target/debug/clinauthctl"
server_bin="$ROOT/target/debug/clinauth-server"
DEMO=${CLINAUTH_DEMO_DIR:-$ROOT/target/demo}

step "1. Build"
cargo build --workspace --locked --bins

step "2. The hospital's policy is checked against the guideline (exit 0)"
$ctl policy check examples/policy/hospital.toml | head -20
say "… (full summary: clinauthctl policy check examples/policy/hospital.toml)"

step "3. A weak policy is refused, every violation named (exit 1 expected)"
if $ctl policy check examples/policy/weak.toml > "$ROOT/target/weak-policy.txt"; then
  echo "weak.toml was accepted: that is a bug" >&2
  exit 1
fi
grep -E '^  (R-|POLICY-)' "$ROOT/target/weak-policy.txt" | head -12
tail -1 "$ROOT/target/weak-policy.txt"

step "4. Deploy: a local CA, a workstation certificate, keys, the database (SQLite)"
rm -rf "$DEMO"
mkdir -p "$DEMO"
$ctl pki init --dir "$DEMO/pki" --site "Demo General Hospital" > /dev/null
$ctl pki issue-workstation --dir "$DEMO/pki" --name ward3-ws01 > "$DEMO/ws.txt"
$ctl pki issue-workstation --dir "$DEMO/pki" --name stolen-laptop > "$DEMO/stranger.txt"
FP=$(awk '/^  sha256:/ {print $2}' "$DEMO/ws.txt")
read -r WS_PORT OFFICER_PORT < <(python3 - <<'PY'
import socket
ports = []
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); ports.append(s.getsockname()[1]); s.close()
print(*ports)
PY
)
cat > "$DEMO/server.toml" <<EOF
[server]
name = "clinauth.demo-hospital.jp"
workstation_listen = "127.0.0.1:$WS_PORT"
officer_listen = "127.0.0.1:$OFFICER_PORT"
[database]
url = "sqlite://$DEMO/clinauth.db"
[keys]
dir = "$DEMO/keys"
[policy]
initial = "$ROOT/examples/policy/hospital.toml"
[tls]
cert = "$DEMO/pki/server.pem"
key = "$DEMO/pki/server-key.pem"
workstation_ca = "$DEMO/pki/ca.pem"
crl = "$DEMO/pki/crl.pem"
EOF
export CLINAUTH_CONFIG="$DEMO/server.toml"
$ctl init
say "bootstrap on the server host: a nurse with a staff badge and a PIN, and her ward workstation"
$ctl user add nurse.tanaka --name "田中 花子 (看護師)" --roles nurse
$ctl badge add nurse.tanaka 04A1B2C3
echo 482913 | $ctl user pin nurse.tanaka
$ctl workstation add ward3-ws01 --fingerprint "$FP" --group ward --location "3F east ward"

step "5. Start clinauth-server (workstation API: mutual TLS 1.3 on 127.0.0.1:$WS_PORT)"
"$server_bin" --config "$DEMO/server.toml" > "$DEMO/server.log" 2>&1 &
SERVER_PID=$!
cleanup() {
  if [[ $KEEP == 0 ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
for _ in $(seq 1 50); do
  if (echo > "/dev/tcp/127.0.0.1/$WS_PORT") 2>/dev/null; then break; fi
  sleep 0.2
done
say "server pid $SERVER_PID, log $DEMO/server.log"

WS_CERT="$DEMO/pki/workstations/ward3-ws01.pem"
WS_KEY="$DEMO/pki/workstations/ward3-ws01-key.pem"
api() { # api CERT KEY PATH BODY
  curl -sS --tlsv1.3 --cacert "$DEMO/pki/ca.pem" --cert "$1" --key "$2" \
       -H 'content-type: application/json' -d "$4" "https://localhost:$WS_PORT$3"
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
login() { # login EVIDENCE-JSON…
  local begun challenge
  begun=$(api "$WS_CERT" "$WS_KEY" /v1/auth/begin '{"user":"nurse.tanaka","purpose":"login"}')
  challenge=$(echo "$begun" | json 'd["challenge_id"]')
  api "$WS_CERT" "$WS_KEY" /v1/auth/finish "{\"challenge_id\":\"$challenge\",\"evidence\":[$1]}"
}
BADGE='{"type":"badge","uid":"BKGyww"}'   # 04 A1 B2 C3, base64url

step "6. The nurse taps her badge and types her PIN: two factors, allowed"
say "begin → what the policy allows at this workstation:"
api "$WS_CERT" "$WS_KEY" /v1/auth/begin '{"user":"nurse.tanaka","purpose":"login"}' \
  | json '"\n".join("     " + " + ".join(c) for c in d["options"])'
RESULT=$(login "$BADGE,{\"type\":\"server_pin\",\"value\":\"482913\"}")
echo "$RESULT" | json '"   outcome: %s, rule: %s, factors: %s" % (d["outcome"], d["rule"], " + ".join(d["factors"]))'
say "the signed ticket (JWS EdDSA), decoded:"
echo "$RESULT" | python3 -c '
import base64, json, sys
t = json.load(sys.stdin)["ticket"].split(".")[1]
c = json.loads(base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)))
for k in ("sub", "ws", "purpose", "rule", "factors", "policy_version", "idle_lock", "exp"):
    print("     %-15s %s" % (k, c[k]))'

step "7. What is refused, and why"
sleep 1.1   # the policy's backoff after a failure is 1 s, then doubles
say "badge alone (a device on its own, R-AUTH-3):"
login "$BADGE" | json '"     " + d["outcome"] + ": " + d["reason"]'
sleep 2.1
say "badge with the wrong PIN:"
login "$BADGE,{\"type\":\"server_pin\",\"value\":\"000000\"}" | json '"     " + d["outcome"] + ": " + d["reason"]'
say "a laptop with a certificate from the same CA, never registered (R-TLS-2):"
api "$DEMO/pki/workstations/stolen-laptop.pem" "$DEMO/pki/workstations/stolen-laptop-key.pem" \
  /v1/auth/begin '{"user":"nurse.tanaka","purpose":"login"}' | json '"     " + d["error"] + ": " + d["message"]'
say "a client offering only TLS 1.2 (R-TLS-1):"
if curl -sS --tls-max 1.2 --cacert "$DEMO/pki/ca.pem" --cert "$WS_CERT" --key "$WS_KEY" \
     "https://localhost:$WS_PORT/v1/auth/begin" -d '{}' > /dev/null 2> "$DEMO/tls12.txt"; then
  echo "TLS 1.2 was accepted: that is a bug" >&2
  exit 1
fi
say "  refused: $(head -c 120 "$DEMO/tls12.txt")"

step "8. The audit trail (R-LOG-1): hash-chained, signed, verified"
$ctl audit export | tail -6 | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    print("   #%-3s %-18s %-14s %-12s %s" % (e["seq"], e["action"], e["actor"], e["workstation"] or "-", e["outcome"]))'
$ctl audit verify

step "Done"
if [[ $KEEP == 1 ]]; then
  say "the server keeps running (pid $SERVER_PID); stop it with: kill $SERVER_PID"
  say "configuration: $DEMO/server.toml (export CLINAUTH_CONFIG=$DEMO/server.toml to use clinauthctl)"
else
  say "stopping the server; everything lives in $DEMO"
fi
say "The workstation agent and the PAM login join this demo with issues 5 and 6."
