#!/usr/bin/env bash
# The main job: build ClinAuth, deploy it locally on embedded defaults
# (SQLite, a local CA), and log a clinician in through PAM: card + PIN,
# then badge + fingerprint (a sealed template).
#
#   scripts/demo.sh          run everything, then stop what it started
#   scripts/demo.sh --keep   leave the server, the agent and the devices running
#
# The parts are the real ones: clinauth-server, clinauth-agent, the PAM
# module loaded by the real libpam (pamtester, with pam_wrapper so that
# /etc/pam.d is never touched), pcscd. Only the hardware is virtual: a PIV
# smartcard and a contactless badge on the vpcd readers of a private pcscd,
# and a sealing fingerprint reader (clinauth-virtual-devices).
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
cargo build --locked -p pam_clinauth
PAM_MODULE="$ROOT/target/debug/libpam_clinauth.so"

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
mkdir -p "$DEMO" "$DEMO/pam.d"
mkdir -m 0755 "$DEMO/run"
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

PIDS=()
cleanup() {
  if [[ $KEEP == 0 ]]; then
    for pid in "${PIDS[@]}"; do
      [[ $pid == "${DEVICES_PID:-}" ]] || kill "$pid" 2>/dev/null || true
    done
    # The devices stop their pcscd and clean up on "quit".
    [[ -n "${DEVICES_PID:-}" ]] && { echo quit >&3; } 2>/dev/null
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  fi
}
trap cleanup EXIT

say "the virtual hardware: a private pcscd, a PIV card for the nurse (PIN 246810), a staff badge,"
say "and a fingerprint reader that seals each capture to the server's matcher key and signs it"
mkfifo "$DEMO/devices.ctl"
"$ROOT/target/debug/clinauth-virtual-devices" --dir "$DEMO/devices" --user nurse.tanaka \
  --pin 246810 --badge 04A1B2C3 <> "$DEMO/devices.ctl" > "$DEMO/devices.log" 2>&1 &
DEVICES_PID=$!
PIDS+=("$DEVICES_PID")
exec 3> "$DEMO/devices.ctl"
for _ in $(seq 1 100); do
  [[ -f "$DEMO/devices/state" ]] && break
  kill -0 "$DEVICES_PID" 2>/dev/null || { cat "$DEMO/devices.log"; exit 1; }
  sleep 0.1
done
device() { # device "card in": and wait until it is done and pcscd has seen it
  echo "$1" >&3
  for _ in $(seq 1 100); do
    if [[ "$(cat "$DEMO/devices/state")" == "$1" ]]; then sleep 0.6; return; fi
    sleep 0.1
  done
  echo "the virtual device did not do: $1" >&2
  cat "$DEMO/devices.log" >&2
  exit 1
}

cat > "$DEMO/server.toml" <<TOML
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
[smartcard]
# The demo's card CA publishes no CRL; a real site lists its CRLs here.
trust_anchors = ["$DEMO/devices/card-ca.pem"]
require_crl = false
[tls]
cert = "$DEMO/pki/server.pem"
key = "$DEMO/pki/server-key.pem"
workstation_ca = "$DEMO/pki/ca.pem"
crl = "$DEMO/pki/crl.pem"
TOML
export CLINAUTH_CONFIG="$DEMO/server.toml"
$ctl init
say "bootstrap on the server host: a nurse with her smartcard, a staff badge, a PIN and a fingerprint, and her ward workstation"
$ctl user add nurse.tanaka --name "田中 花子 (看護師)" --roles nurse
$ctl user add dr.suzuki --name "鈴木 一郎 (医師)" --roles physician
$ctl card enroll nurse.tanaka "$DEMO/devices/card.pem"
$ctl badge add nurse.tanaka 04A1B2C3
echo 482913 | $ctl user pin nurse.tanaka
$ctl reader add "$(cat "$DEMO/devices/reader.id")" --public-key "$(cat "$DEMO/devices/reader.pub")" \
  --protection sealed_template --description "3F east ward, bed-side station"
$ctl finger enroll nurse.tanaka "$DEMO/devices/finger.template"
$ctl workstation add ward3-ws01 --fingerprint "$FP" --group ward --location "3F east ward"

step "5. Start clinauth-server (workstation API: mutual TLS 1.3 on 127.0.0.1:$WS_PORT)"
"$server_bin" --config "$DEMO/server.toml" > "$DEMO/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
for _ in $(seq 1 50); do
  if (echo > "/dev/tcp/127.0.0.1/$WS_PORT") 2>/dev/null; then break; fi
  sleep 0.2
done
say "server pid $SERVER_PID, log $DEMO/server.log"

step "6. Start clinauth-agent on the workstation (socket $DEMO/run/agent.sock)"
cat > "$DEMO/agent.toml" <<TOML
[agent]
workstation = "ward3-ws01"
socket = "$DEMO/run/agent.sock"
state_dir = "$DEMO/agent-state"
log_format = "text"
[server]
address = "127.0.0.1:$WS_PORT"
server_name = "localhost"
ca = "$DEMO/pki/ca.pem"
certificate = "$DEMO/pki/workstations/ward3-ws01.pem"
key = "$DEMO/pki/workstations/ward3-ws01-key.pem"
[card]
insert_timeout = "10s"
[biometric]
reader = "unix:$DEMO/devices/bioreader.sock"
reader_id = "demo-bio-1"
capture_timeout = "10s"
# The agent's own PIN dialog for clinical apps. A real workstation uses
# GnuPG's /usr/bin/pinentry-gnome3; the demo's stands in for the person
# typing into it (answers from a file, one per dialog).
[pinentry]
program = "$ROOT/target/debug/clinauth-test-pinentry"
args = ["--answers", "$DEMO/pinentry-answers.txt", "--log", "$DEMO/pinentry.log"]
TOML
: > "$DEMO/pinentry-answers.txt"
PCSCLITE_CSOCK_NAME="$(cat "$DEMO/devices/pcscd.socket")" \
  "$ROOT/target/debug/clinauth-agent" --config "$DEMO/agent.toml" > "$DEMO/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
for _ in $(seq 1 50); do [[ -S "$DEMO/run/agent.sock" ]] && break; sleep 0.1; done
say "agent pid $AGENT_PID, log $DEMO/agent.log"

cat > "$DEMO/pam.d/clinauth-login" <<PAM
# What /etc/pam.d/login would hold (docs/PAM.md).
auth    required $PAM_MODULE socket=$DEMO/run/agent.sock timeout=60
account required $PAM_MODULE socket=$DEMO/run/agent.sock
PAM
# Anything not named falls to "other": deny.
echo "auth required pam_deny.so" > "$DEMO/pam.d/other"
pam_login() { # pam_login USER TYPED: pamtester through the real libpam
  local status=0
  printf '%s\n' "$2" | LD_PRELOAD=libpam_wrapper.so PAM_WRAPPER=1 \
    PAM_WRAPPER_SERVICE_DIR="$DEMO/pam.d" pamtester -v clinauth-login "$1" authenticate acct_mgmt \
    > "$DEMO/pamtester.txt" 2>&1 || status=$?
  sed 's/^/     /' "$DEMO/pamtester.txt"
  return $status
}

step "7. The nurse inserts her card and gives its PIN: logged in through PAM"
device "card in"
pam_login nurse.tanaka 246810 || { echo "the card + PIN login failed" >&2; exit 1; }
device "card out"

step "8. She taps her staff badge and puts her finger on the reader: logged in through PAM"
say "the reader seals the template inside itself (HPKE) and signs it; the agent relays opaque bytes;"
say "the server checks the reader's signature and the nonce, opens it and matches 1:1 (R-BIO-1..3)"
device "finger on"
device "badge in"
pam_login nurse.tanaka "" || { echo "the badge + fingerprint login failed" >&2; exit 1; }
device "finger off"

step "9. What is refused, and why"
say "the badge with someone else's finger:"
device "other finger"
if pam_login nurse.tanaka ""; then echo "another finger was let in: that is a bug" >&2; exit 1; fi
device "finger off"
device "badge out"
say "the card with a wrong PIN (the card counts the try; the agent says how many are left):"
device "card in"
if pam_login nurse.tanaka 111111; then echo "a wrong PIN was let in: that is a bug" >&2; exit 1; fi
device "card out"
WS_CERT="$DEMO/pki/workstations/ward3-ws01.pem"
WS_KEY="$DEMO/pki/workstations/ward3-ws01-key.pem"
api() { # api CERT KEY PATH BODY
  curl -sS --tlsv1.3 --cacert "$DEMO/pki/ca.pem" --cert "$1" --key "$2" \
       -H 'content-type: application/json' -d "$4" "https://localhost:$WS_PORT$3"
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
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

step "10. A clinical app: a step-up for a controlled drug, and an order entered by proxy"
say "the app (examples/python/clinauth_agent.py, standard library only) asks the agent; the PIN"
say "goes into the agent's own dialog (pinentry), never through the app"
APP=(python3 "$ROOT/examples/python/clinauth_agent.py" --socket "$DEMO/run/agent.sock")
device "card in"
echo 246810 > "$DEMO/pinentry-answers.txt"
rm -f "$DEMO/pinentry-answers.txt.used"
"${APP[@]}" --claims step-up order.controlled_drug --max-age 120 --user nurse.tanaka \
  > "$DEMO/step-up.json" 2> "$DEMO/step-up.err" || { cat "$DEMO/step-up.err" >&2; exit 1; }
device "card out"
json '"     " + d["outcome"] + ": ticket for " + d["user"] + ", factors " + "+".join(d["factors"])' < "$DEMO/step-up.json"
say "the nurse enters an order for Dr Suzuki (代行入力): it waits for him, however long it takes"
printf 'order: loxoprofen 60 mg tid, bed 12\n' > "$DEMO/order.txt"
"${APP[@]}" register "@$DEMO/order.txt" "処方: ロキソプロフェン 60mg 分3 (12床)" dr.suzuki --user nurse.tanaka \
  > "$DEMO/record.json" 2> /dev/null || { echo "the record was not registered" >&2; exit 1; }
json '"     record " + d["record"]["id"] + ": " + d["record"]["state"]' < "$DEMO/record.json"
$ctl record list --confirmer dr.suzuki | sed 's/^/     /'
say "she cannot name herself as the confirmer (R-AUTH-5):"
if "${APP[@]}" register "@$DEMO/order.txt" "self" nurse.tanaka --user nurse.tanaka > "$DEMO/self.json" 2> /dev/null; then
  echo "a self-confirmed record was registered: that is a bug" >&2
  exit 1
fi
json '"     refused: " + d.get("message", str(d))' < "$DEMO/self.json"

step "11. The audit trail (R-LOG-1): hash-chained, signed, verified"
$ctl audit export | tail -8 | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    print("   #%-3s %-18s %-14s %-12s %s" % (e["seq"], e["action"], e["actor"], e["workstation"] or "-", e["outcome"]))'
$ctl audit verify

step "Done"
if [[ $KEEP == 1 ]]; then
  say "running: server (pid $SERVER_PID), agent (pid $AGENT_PID), virtual devices (pid $DEVICES_PID)"
  say "move the card: echo 'card in' > $DEMO/devices.ctl (card out, badge in, badge out)"
  say "configuration: $DEMO/server.toml, $DEMO/agent.toml"
  say "log in again: echo 482913 | LD_PRELOAD=libpam_wrapper.so PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR=$DEMO/pam.d pamtester -v clinauth-login nurse.tanaka authenticate"
  say "stop everything: kill $AGENT_PID $SERVER_PID $DEVICES_PID"
else
  say "stopping the agent, the server and the virtual devices; everything lives in $DEMO"
fi
