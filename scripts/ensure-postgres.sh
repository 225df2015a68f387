#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432 for user postgres without a password, as the
# tests and the demo expect: installs Debian's `postgresql` when it is missing, lets user
# postgres in with trust on 127.0.0.1 and ::1 (a line at the top of pg_hba.conf, added once),
# loads pg_stat_statements (the benchmark reads it), allows enough connections for tests that
# run in parallel, and starts the cluster when it is down. Idempotent; a line per step.
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
hba=$conf_dir/pg_hba.conf
marker="# ledgerflow: trust for user postgres on loopback"
if ! grep -qF "$marker" "$hba"; then
  echo "postgres: trust for user postgres on 127.0.0.1 and ::1 ($hba)"
  tmp=$(mktemp)
  {
    echo "$marker"
    echo "host    all    postgres    127.0.0.1/32    trust"
    echo "host    all    postgres    ::1/128         trust"
    cat "$hba"
  } >"$tmp"
  "${sudo_cmd[@]}" cp "$tmp" "$hba"
  rm -f "$tmp"
  changed=1
fi
extra=$conf_dir/conf.d/ledgerflow.conf
want="# ledgerflow: local test and benchmark settings (scripts/ensure-postgres.sh)
max_connections = 300
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top"
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
