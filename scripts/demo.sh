#!/usr/bin/env bash
# The whole local path with nothing installed by hand: a Tansu broker (SQLite storage), the
# built-in schema registry (SQLite), a local ERP receiver and webhook receiver, a few tenants'
# worth of produced events, every consumer (erp-receivables, warehouse, notifications) run until
# idle, then stats, reconcile (manifest and billing export), audit verify, a warehouse export,
# the notification deliveries and a replay plan.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
LEDGERFLOW=${LEDGERFLOW:-target/debug/ledgerflow}
WORK=$(mktemp -d -t ledgerflow-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on port $1" >&2; return 1
}

BROKER_PORT=$(free_port)
REGISTRY_PORT=$(free_port)
ERP_PORT=$(free_port)
WEBHOOK_PORT=$(free_port)
TOPIC=billing.events

echo "== starting tansu broker on 127.0.0.1:$BROKER_PORT (sqlite storage in a temp dir)"
(cd "$WORK" && exec tansu broker --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" --storage-engine sqlite://tansu.db \
  >"$WORK/broker.log" 2>&1) &
pids+=($!)
wait_port "$BROKER_PORT"

echo "== starting the schema registry on 127.0.0.1:$REGISTRY_PORT (sqlite)"
"$LEDGERFLOW" registry serve --listen "127.0.0.1:$REGISTRY_PORT" \
  --database "sqlite://$WORK/registry.db" >"$WORK/registry.log" 2>&1 &
pids+=($!)
wait_port "$REGISTRY_PORT"

echo "== starting a local ERP receiver on 127.0.0.1:$ERP_PORT (stands in for the tenants' ERPs)"
python3 scripts/erp_receiver.py "$ERP_PORT" "$WORK/erp-summary.json" &
pids+=($!)
wait_port "$ERP_PORT"

export LEDGERFLOW_DATABASE_URL="sqlite://$WORK/ledgerflow.db"
export LEDGERFLOW_BROKERS="127.0.0.1:$BROKER_PORT"
export LEDGERFLOW_SCHEMA_REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT"

echo "== creating topic $TOPIC with 6 partitions"
tansu topic create --broker "tcp://127.0.0.1:$BROKER_PORT" --partitions 6 "$TOPIC" >/dev/null

echo "== producing 2,000 events for 8 tenants, 5% exact duplicates"
"$LEDGERFLOW" produce --topic "$TOPIC" --tenants 8 --events 2000 --duplicates 0.05 --seed 42 \
  --manifest "$WORK/manifest.json" --billing-csv "$WORK/billing.csv" \
  --tenants-file "$WORK/tenants.toml" \
  --erp-url "http://127.0.0.1:$ERP_PORT" --webhook-url "http://127.0.0.1:$WEBHOOK_PORT"

echo "== starting a webhook receiver on 127.0.0.1:$WEBHOOK_PORT (verifies every signature with"
echo "   Python's hmac, fails the first attempt of 20% of the webhook-ids, dedups by webhook-id)"
python3 scripts/webhook_receiver.py "$WEBHOOK_PORT" "$WORK/tenants.toml" "$WORK/webhooks.json" 20 \
  >"$WORK/webhooks.log" 2>&1 &
pids+=($!)
wait_port "$WEBHOOK_PORT"

echo "== registered subjects (TopicRecordNameStrategy)"
curl -s "$LEDGERFLOW_SCHEMA_REGISTRY_URL/subjects" | python3 -m json.tool

echo "== manifest summary"
python3 - "$WORK/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"events_sent={m['events_sent']} distinct={m['distinct_events']} duplicates={m['duplicates_sent']}")
print(f"{'tenant':8} {'ccy':4} {'invoices':>9} {'invoiced':>14} {'payments':>9} {'paid':>14} {'memos':>6} {'credited':>12}")
for t, d in m["tenants"].items():
    print(f"{t:8} {d['currency']:4} {d['invoices']['count']:9} {d['invoices']['total']:>14} "
          f"{d['payments']['count']:9} {d['payments']['total']:>14} {d['credit_memos']['count']:6} "
          f"{d['credit_memos']['total']:>12}")
PY

echo "== the first 5 events, decoded by ledgerflow tail"
"$LEDGERFLOW" tail --topic "$TOPIC" --from-beginning --max 5 --format text 2>/dev/null | cut -c1-220

echo "== all $((2000)) records decode back (tail --exit-at-end --format json)"
"$LEDGERFLOW" tail --topic "$TOPIC" --from-beginning --exit-at-end --format json 2>/dev/null \
  | python3 -c 'import json,sys,collections
rows=[json.loads(l) for l in sys.stdin]
c=collections.Counter(r.get("event_type","ERROR") for r in rows)
print(f"{len(rows)} records:", dict(sorted(c.items())))'
echo "== running every consumer until idle (SQLite store: $LEDGERFLOW_DATABASE_URL)"
LEDGERFLOW_ERP_POLL_MS=100 LEDGERFLOW_WEBHOOK_POLL_MS=100 LEDGERFLOW_WEBHOOK_BACKOFF_BASE_MS=200 \
  "$LEDGERFLOW" run --tenants "$WORK/tenants.toml" --topic "$TOPIC" --exit-when-idle 4s --log warn

echo "== ledgerflow stats"
"$LEDGERFLOW" stats

echo "== ledgerflow reconcile --source manifest.json (exit 0 = the ledger matches what was produced)"
"$LEDGERFLOW" reconcile --source "$WORK/manifest.json"

echo "== ledgerflow reconcile --source billing.csv (every document by id, exact amounts)"
"$LEDGERFLOW" reconcile --source "$WORK/billing.csv" --format json | python3 -c 'import json,sys
r=json.load(sys.stdin); docs=("invoices","payments","credit_memos")
n=sum(t[d]["expected_count"] for t in r["tenants"].values() for d in docs)
bad=sum(t[d]["missing_count"]+t[d]["extra_count"]+t[d]["mismatched_count"] for t in r["tenants"].values() for d in docs)
src, clean = r["source"], r["clean"]
print(f"source={src} clean={clean} documents={n} missing+extra+mismatched={bad}")'

echo "== ledgerflow audit verify"
"$LEDGERFLOW" audit verify

echo "== warehouse: fact_invoice exported to CSV (first rows)"
"$LEDGERFLOW" warehouse export --table fact_invoice --format csv --out "$WORK/fact_invoice.csv"
sed -n 1,4p "$WORK/fact_invoice.csv" | cut -c1-160

echo "== notifications by status"
"$LEDGERFLOW" notifications list --format json \
  | python3 -c 'import json,sys,collections; print(dict(collections.Counter(r["status"] for r in json.load(sys.stdin))))'

echo "== replay plan of everything: every event is already applied"
"$LEDGERFLOW" replay plan --consumer erp-receivables --topic "$TOPIC" --tenants "$WORK/tenants.toml" \
  --from 2000-01-01 --format json | python3 -c 'import json,sys
r=json.load(sys.stdin); t=r["totals"]
print("read=%d would_apply=%d already_applied=%d conflicts=%d skipped=%d" % (r["read"], t["applied"], t["already_applied"], t["conflicts"], t["skipped"]))'

echo "== running again: every event is already applied, nothing new is posted"
"$LEDGERFLOW" run --tenants "$WORK/tenants.toml" --topic "$TOPIC" --exit-when-idle 3s --log warn

echo "== ERP receiver"
kill "${pids[2]}" 2>/dev/null || true
for _ in $(seq 1 50); do [ -f "$WORK/erp-summary.json" ] && break; sleep 0.1; done
cat "$WORK/erp-summary.json" 2>/dev/null && echo
echo "== webhook receiver (accepted_twice and bad_signatures must be 0)"
kill "${pids[3]}" 2>/dev/null || true
for _ in $(seq 1 50); do [ -f "$WORK/webhooks.json" ] && break; sleep 0.1; done
python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))
print({k: s[k] for k in ("requests","accepted","replays","injected_failures","bad_signatures","accepted_twice")})' "$WORK/webhooks.json"
echo "== demo done"
