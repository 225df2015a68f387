#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 for user postgres without a password, as the
# tests and the demo expect: installs Debian's `postgresql` when it is missing, lets user
# postgres in with trust on 127.0.0.1 and ::1 (a line at the top of pg_hba.conf, added once),
# loads pg_stat_statements (the benchmark reads it), allows enough connections for tests that
# run in parallel, serves TLS with a certificate of a project CA (so clients can use
# sslmode=verify-full; the CA is .local/postgres-tls/ca.pem), requires TLS for the role
# `ledgerflow_tls` (the TLS test logs in as it), and starts the cluster when it is down.
# Idempotent; a line per step.
set -euo pipefail
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

if ! command -v pg_ctlcluster >/dev/null || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "postgres: installing Debian's postgresql (about a minute)"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq \
    --no-install-recommends postgresql postgresql-contrib >/dev/null
fi
version=$(ls /etc/postgresql | sort -V | tail -1)
conf_dir=/etc/postgresql/$version/main
if [ ! -d "$conf_dir" ]; then
  echo "postgres: creating cluster $version/main"
  "${sudo_cmd[@]}" pg_createcluster "$version" main >/dev/null
fi

changed=0
ROOT=$(cd "$(dirname "$0")/.." && pwd)
tls=$ROOT/.local/postgres-tls
# The cluster is the machine's, the CA is the clone's: when the cluster already serves a
# certificate of a CA installed beside it (by this clone or another one on the machine), this
# clone adopts that CA instead of installing a new pair and breaking the other clone's trust.
machine_ca=$conf_dir/ledgerflow-ca.pem
if [ -f "$machine_ca" ] &&
  "${sudo_cmd[@]}" openssl verify -CAfile "$machine_ca" "$conf_dir/ledgerflow-server.crt" >/dev/null 2>&1; then
  mkdir -p "$tls"
  if ! cmp -s "$machine_ca" "$tls/ca.pem"; then
    echo "postgres: adopting the CA of the certificate the cluster serves ($machine_ca)"
    cp "$machine_ca" "$tls/ca.pem"
  fi
else
if [ ! -f "$tls/server.crt" ] || [ ! -f "$tls/ca.pem" ]; then
  echo "postgres: making a test CA and a server certificate (127.0.0.1, localhost) in $tls"
  mkdir -p "$tls"
  (
    cd "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
      -subj "/CN=ledgerflow local Postgres CA" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
      -subj "/CN=localhost" >/dev/null 2>&1
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.crt >/dev/null 2>&1
    rm -f server.csr server.ext
    chmod 600 ca.key server.key
  )
fi
for f in server.crt server.key; do
  if ! "${sudo_cmd[@]}" cmp -s "$tls/$f" "$conf_dir/ledgerflow-$f" 2>/dev/null; then
    echo "postgres: installing $conf_dir/ledgerflow-$f"
    "${sudo_cmd[@]}" install -m 600 -o postgres -g postgres "$tls/$f" "$conf_dir/ledgerflow-$f"
    changed=1
  fi
done
"${sudo_cmd[@]}" install -m 644 "$tls/ca.pem" "$machine_ca"
fi
hba=$conf_dir/pg_hba.conf
marker="# ledgerflow: trust for user postgres on loopback, TLS only for ledgerflow_tls"
if ! grep -qF "$marker" "$hba"; then
  echo "postgres: trust for user postgres on 127.0.0.1 and ::1, TLS for ledgerflow_tls ($hba)"
  tmp=$(mktemp)
  {
    echo "$marker"
    echo "host    all    postgres    127.0.0.1/32    trust"
    echo "host    all    postgres    ::1/128         trust"
    echo "hostnossl all  ledgerflow_tls 0.0.0.0/0    reject"
    echo "hostssl all    ledgerflow_tls 127.0.0.1/32 scram-sha-256"
    # An earlier version of this block is replaced, not stacked.
    grep -vE '^# ledgerflow:|^host +all +postgres +(127\.0\.0\.1/32|::1/128) +trust$' "$hba"
  } >"$tmp"
  "${sudo_cmd[@]}" cp "$tmp" "$hba"
  rm -f "$tmp"
  changed=1
fi
extra=$conf_dir/conf.d/ledgerflow.conf
want="# ledgerflow: local test and benchmark settings (scripts/ensure-postgres.sh)
max_connections = 300
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
ssl = on
ssl_cert_file = '$conf_dir/ledgerflow-server.crt'
ssl_key_file = '$conf_dir/ledgerflow-server.key'"
if [ ! -f "$extra" ] || [ "$(cat "$extra")" != "$want" ]; then
  echo "postgres: settings in $extra"
  "${sudo_cmd[@]}" mkdir -p "$conf_dir/conf.d"
  printf '%s\n' "$want" | "${sudo_cmd[@]}" tee "$extra" >/dev/null
  changed=1
fi

if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if [ "$changed" -eq 1 ]; then
    echo "postgres: restarting cluster $version/main for the new settings"
    "${sudo_cmd[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main restart
  fi
else
  echo "postgres: starting cluster $version/main"
  "${sudo_cmd[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
fi
for _ in $(seq 1 60); do
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null &&
    psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
    echo "postgres $version ready on 127.0.0.1:5432 (user postgres, trust)"
    exit 0
  fi
  sleep 1
done
echo "postgres is not reachable on 127.0.0.1:5432 as user postgres; see /var/log/postgresql/" >&2
exit 1
