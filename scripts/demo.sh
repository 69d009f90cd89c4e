#!/usr/bin/env bash
# The main job: build ClinAuth and show it working on embedded defaults.
#
# Today it shows the policy engine that every login goes through: an officer's
# policy checked against the MHLW guideline requirements, a weak policy refused
# with its reasons, and the decisions the engine makes for real factor
# combinations. Each later part (server, agent, PAM) extends this script until
# it ends with a real PAM login.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

step() { printf '\n\033[1;34m== %s\033[0m\n' "$*"; }
ctl=target/debug/clinauthctl

step "1. Build"
cargo build --workspace --locked

step "2. The hospital's policy is checked against the guideline (exit 0)"
$ctl policy check examples/policy/hospital.toml

step "3. A weak policy is refused, every violation named (exit 1 expected)"
if $ctl policy check examples/policy/weak.toml; then
  echo "weak.toml was accepted: that is a bug" >&2
  exit 1
fi

step "4. Decisions at a ward workstation (nurse, purpose login)"
decide() {
  local label=$1; shift
  printf '\n-- %s\n' "$label"
  $ctl policy simulate examples/policy/hospital.toml "$@" || true
}
decide "card + card PIN"                 --roles nurse --group ward --evidence card
decide "badge + PIN"                     --roles nurse --group ward --evidence badge,server_pin
decide "badge + sealed fingerprint"      --roles nurse --group ward --evidence badge,finger_sealed
decide "FIDO2 with user verification"    --roles nurse --group ward --evidence fido2_uv
decide "user ID + USB token (weak)"      --roles nurse --group ward --evidence fido2
decide "badge + host-matched fingerprint" --roles nurse --group ward --evidence badge,finger_host
decide "server down, card + PIN, bundle 10h old" --roles nurse --group ward --evidence card --offline-bundle-age 10h
decide "prescription signature by a nurse's card" --roles physician --group ward --purpose sign --evidence card --qualification Nurse

step "Done"
echo "The policy engine works. The server, agent and PAM login join this demo as they land (see README)."
