#!/usr/bin/env bash
# Installs what ClinAuth needs to build and test on a fresh Debian machine.
# Both README commands call this first. Set CLINAUTH_SKIP_APT=1 to skip it
# on a machine you prepared yourself.
set -euo pipefail

# One list, so that the demo and the tests never disagree on what is needed.
PACKAGES=(
  pkg-config          # -sys crates find their C libraries
  ca-certificates
  openssl             # TLS tests drive `openssl s_client` from outside the server
  # Smartcards through the real PC/SC stack (hardware-tests, agent):
  pcscd libpcsclite-dev vsmartcard-vpcd pcsc-tools opensc
  util-linux          # unshare: a private pcscd per test run
  # Fingerprints through fprintd and libfprint's virtual sensors (hardware-tests):
  fprintd libpam-fprintd python3-dbusmock dbus
  chromium            # the officer web console's browser tests (server/tests/console.rs)
  # PAM through real libpam without touching /etc/pam.d (pam-module tests, demo):
  libpam0g-dev libpam-wrapper pamtester
)

log() { printf '\033[1m[deps]\033[0m %s\n' "$*"; }

if [[ "${CLINAUTH_SKIP_APT:-0}" == "1" ]]; then
  log "CLINAUTH_SKIP_APT=1: not installing packages"
else
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    log "installing: ${missing[*]}"
    for attempt in 1 2 3; do
      if $SUDO apt-get update -qq && \
         DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
        break
      fi
      [[ $attempt == 3 ]] && { log "apt-get failed three times"; exit 1; }
      log "apt-get failed; retrying in 5 s"
      sleep 5
    done
  else
    log "all Debian packages present"
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  log "cargo is not on PATH: install the Rust toolchain (rustup, Rust >= 1.87) first"
  exit 1
fi
