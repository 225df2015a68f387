#!/usr/bin/env bash
# Makes sure the system packages the build and the tests need are present: OpenSSL (TLS and
# SASL/SCRAM in the bundled librdkafka) and pkg-config to find it, and Prometheus (`promtool`
# checks deploy/prometheus; the end-to-end metrics test runs a real Prometheus server). Installs
# them with apt-get only when missing. The Prometheus package's service is never started here.
set -euo pipefail
missing=()
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
command -v pkg-config >/dev/null || missing+=(pkg-config)
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages present (openssl, pkg-config, prometheus)"
  exit 0
fi
echo "installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
  --no-install-recommends "${missing[@]}"
# Only the binaries are wanted: where systemd runs, the package enables and starts a system
# Prometheus on :9090; stop it so it neither scrapes anything nor holds the port.
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
  "${sudo_cmd[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
