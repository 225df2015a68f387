#!/usr/bin/env bash
# The whole local path with nothing installed by hand: a single-node Apache Kafka 4.4 (KRaft,
# scripts/kafka), the built-in schema registry, the ERP simulator (ledgerflow-erp-sim: NetSuite,
# Dynamics 365, S/4HANA and Oracle Fusion as their vendors document them, with 5% injected faults
# including commit-then-drop) and a webhook receiver, a few tenants' worth of produced events,
# every consumer (erp-receivables, warehouse, notifications) run until drained, then stats,
# reconcile (manifest and billing export), audit verify, a warehouse export, the notification
# deliveries, a replay plan, and the simulator's own count of the documents it stored.
#
# One tenant's ERP mapping is broken on purpose: t003's Dynamics 365 company (dataAreaId) is
# mistyped in the tenants file, so D365 refuses its journals and they fail. The demo shows them
# (postings list --status failed, reconcile unclean), fixes the tenants file, requeues them
# re-rendered with the fixed mapping (postings requeue --re-render, a dry run first), and the
# second run delivers them: at the end every posting is confirmed, once.
#
# One progress line per phase on the terminal; every process logs to a file under
# DEMO_DIR/logs (default target/demo/logs), and the warnings the demo provokes on purpose
# (injected webhook and ERP failures) are counted in the closing summary instead of printed.
#
# Binaries: LEDGERFLOW (default target/debug/ledgerflow) and LEDGERFLOW_ERP_SIM (default
# target/debug/ledgerflow-erp-sim), both built by `make setup` (`make demo` runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
LEDGERFLOW=${LEDGERFLOW:-target/debug/ledgerflow}
ERP_SIM=${LEDGERFLOW_ERP_SIM:-target/debug/ledgerflow-erp-sim}
for bin in "$LEDGERFLOW" "$ERP_SIM"; do
  if [ ! -x "$bin" ]; then
    echo "$bin not found: run make demo (or cargo build -p ledgerflow-cli -p ledgerflow-erp-sim)" >&2
    exit 1
  fi
done
WORK=${DEMO_DIR:-$PWD/target/demo}
LOGS=$WORK/logs
rm -rf "$WORK"
mkdir -p "$LOGS"
pids=()
started=$SECONDS
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -f "$WORK/kafka/cluster.env" ] && scripts/kafka stop --dir "$WORK/kafka" 2>>"$LOGS/kafka.log"
  return 0
}
trap cleanup EXIT

phase=0
PHASES=13
step() { phase=$((phase + 1)); printf '\n[%2d/%d] %s\n' "$phase" "$PHASES" "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_block() {
  python3 - <<'PY'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 32000, 2)
    try:
        socks = []
        for p in (base, base + 1):
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
        print(base); break
    except OSError:
        continue
PY
}
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on port $1" >&2; return 1
}

REGISTRY_PORT=$(free_port)
ERP_PORT=$(free_port)
WEBHOOK_PORT=$(free_port)
TOPIC=billing.events

step "starting Apache Kafka 4.4 (one KRaft node, logs in $WORK/kafka/node-1/)"
BOOTSTRAP=$(scripts/kafka start --dir "$WORK/kafka" --port "$(free_block)" --owner-pid $$ \
  2>>"$LOGS/kafka.log" | sed -n 's/^BOOTSTRAP=//p')
echo "        broker on $BOOTSTRAP"

step "starting the schema registry on 127.0.0.1:$REGISTRY_PORT (SQLite) and the ERP simulator"
"$LEDGERFLOW" registry serve --listen "127.0.0.1:$REGISTRY_PORT" \
  --database "sqlite://$WORK/registry.db" >"$LOGS/registry.log" 2>&1 &
pids+=($!)
# 5% of ERP requests fail on purpose: 5xx, 429, or the document is stored and the connection then
# dropped without an answer (ledgerflow must look it up, not post it twice).
"$ERP_SIM" --listen "127.0.0.1:$ERP_PORT" --state "$WORK/erp-sim" --faults 0.05 \
  --fault-kinds 5xx,429,drop --seed 42 >"$LOGS/erp-sim.log" 2>&1 &
pids+=($!)
wait_port "$REGISTRY_PORT"
wait_port "$ERP_PORT"
echo "        ERP simulator on http://127.0.0.1:$ERP_PORT (/netsuite /d365 /s4hana /fusion; 5% faults"
echo "        incl. commit-then-drop; report at /_sim/report)"

export LEDGERFLOW_DATABASE_URL="sqlite://$WORK/ledgerflow.db"
export LEDGERFLOW_BROKERS="$BOOTSTRAP"
export LEDGERFLOW_SCHEMA_REGISTRY_URL="http://127.0.0.1:$REGISTRY_PORT"

step "creating topic $TOPIC with 6 partitions"
scripts/kafka topic --dir "$WORK/kafka" --create "$TOPIC" --partitions 6 2>>"$LOGS/kafka.log"

step "producing 2,000 events for 8 tenants, 5% exact duplicates; tenants spread over the four ERPs"
"$LEDGERFLOW" produce --topic "$TOPIC" --tenants 8 --events 2000 --duplicates 0.05 --seed 42 \
  --manifest "$WORK/manifest.json" --billing-csv "$WORK/billing.csv" \
  --tenants-file "$WORK/tenants.toml" \
  --erp-url "http://127.0.0.1:$ERP_PORT" --webhook-url "http://127.0.0.1:$WEBHOOK_PORT" \
  2>"$LOGS/produce.log"
sed -n 's/^provisioned/        provisioned/p' "$LOGS/produce.log"
python3 - "$WORK/tenants.toml" <<'PY'
import sys, tomllib
f = tomllib.load(open(sys.argv[1], "rb"))
routes = [f"{t['tenant_id']}={t['erp']['kind']}/{t['erp']['account']}" for t in f["tenants"]]
print("        ERP routes:", " ".join(routes))
for a in f.get("erp_accounts", []):
    print(f"        shared account {a['kind']}/{a['account']}: at most {a['concurrency']} requests in flight")
PY
python3 scripts/webhook_receiver.py "$WEBHOOK_PORT" "$WORK/tenants.toml" "$WORK/webhooks.json" 20 \
  >"$LOGS/webhook-receiver.log" 2>&1 &
webhook_pid=$!
pids+=($webhook_pid)
wait_port "$WEBHOOK_PORT"
echo "        webhook receiver on 127.0.0.1:$WEBHOOK_PORT: checks every signature with Python's"
echo "        hmac, fails the first attempt of 20% of the webhook-ids on purpose, dedups by id"
python3 - "$WORK/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"        sent={m['events_sent']} distinct={m['distinct_events']} duplicates={m['duplicates_sent']}")
print(f"        {'tenant':8} {'ccy':4} {'invoices':>9} {'invoiced':>14} {'payments':>9} {'paid':>14} {'memos':>6} {'credited':>12}")
for t, d in m["tenants"].items():
    print(f"        {t:8} {d['currency']:4} {d['invoices']['count']:9} {d['invoices']['total']:>14} "
          f"{d['payments']['count']:9} {d['payments']['total']:>14} {d['credit_memos']['count']:6} "
          f"{d['credit_memos']['total']:>12}")
PY
# The mapping mistake, on purpose: t003 (Dynamics 365) gets company "usmx", a legal entity its
# environment does not have (it has usmf); D365 refuses every journal written to it.
set_company() {
  python3 - "$WORK/tenants.toml" "$1" "$2" <<'PY'
import re, sys
path, old, new = sys.argv[1:]
text = open(path).read()
start = text.index('tenant_id = "t003"')
end = text.find("[[tenants]]", start)
end = len(text) if end < 0 else end
part, n = re.subn(f'data_area_id = "{old}"', f'data_area_id = "{new}"', text[start:end])
assert n == 1, f"t003 has no D365 company {old}"
open(path, "w").write(text[:start] + part + text[end:])
PY
}
set_company usmf usmx
echo "        on purpose: t003's D365 company mistyped in tenants.toml (dataAreaId usmx; its"
echo "        environment has usmf), so D365 refuses its journals"

step "reading the topic back without a consumer group (ledgerflow tail)"
"$LEDGERFLOW" tail --topic "$TOPIC" --from-beginning --max 3 --format text 2>>"$LOGS/tail.log" \
  | cut -c1-150 | sed 's/^/        /'
"$LEDGERFLOW" tail --topic "$TOPIC" --from-beginning --exit-at-end --format json 2>>"$LOGS/tail.log" \
  | python3 -c 'import json,sys,collections
rows=[json.loads(l) for l in sys.stdin]
c=collections.Counter(r.get("event_type","ERROR") for r in rows)
print(f"        {len(rows)} records decode:", dict(sorted(c.items())))'

step "running every consumer until drained (--exit-when-idle 4s; log: $LOGS/run.log)"
LEDGERFLOW_ERP_POLL_MS=100 LEDGERFLOW_ERP_BACKOFF_BASE_MS=200 LEDGERFLOW_WEBHOOK_POLL_MS=100 LEDGERFLOW_WEBHOOK_BACKOFF_BASE_MS=200 \
  "$LEDGERFLOW" --log info --log-format json run --tenants "$WORK/tenants.toml" --topic "$TOPIC" \
  --exit-when-idle 4s 2>"$LOGS/run.log" | sed 's/^/        /'

step "a mapping mistake: t003's failed ERP postings, reconcile's verdict, the fix, a requeue"
"$LEDGERFLOW" postings list --status failed 2>>"$LOGS/tools.log" >"$WORK/failed.txt"
sed -n '1,4p' "$WORK/failed.txt" | cut -c1-150 | sed 's/^/        /'
echo "        ...  $(tail -1 "$WORK/failed.txt")"
"$LEDGERFLOW" postings show "$(sed -n '2s/ .*//p' "$WORK/failed.txt")" --format json \
  2>>"$LOGS/tools.log" | python3 -c 'import json,sys
e=json.load(sys.stdin)["last_error_full"] or ""
print("        D365 answered:", e.split("Infolog: ")[-1][:130])'
set +e
"$LEDGERFLOW" reconcile --format json >"$WORK/reconcile-failed.json" 2>>"$LOGS/tools.log"
code=$?
set -e
python3 - "$WORK/reconcile-failed.json" "$code" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
failed = {t: v["erp"]["failed"] for t, v in r["tenants"].items() if v["erp"]["failed"]}
print(f"        reconcile: clean={r['clean']} (exit {sys.argv[2]}), failed postings by tenant: {failed}")
PY
set_company usmx usmf
echo "        tenants.toml fixed (t003 dataAreaId usmf again); requeue, re-rendered with it:"
requeue=("$LEDGERFLOW" postings requeue --status failed --tenant t003 --re-render
  --tenants "$WORK/tenants.toml" --reason "t003 dataAreaId usmx -> usmf")
"${requeue[@]}" 2>>"$LOGS/tools.log" >"$WORK/requeue-dry-run.txt"
python3 - "$WORK/requeue-dry-run.txt" <<'PY'
import collections, re, sys
lines = open(sys.argv[1]).read().splitlines()
found = (re.search(r"(config \S+ -> \S+ \(document \w+\))", l) for l in lines)
for change, n in collections.Counter(m.group(1) for m in found if m).items():
    print(f"        {n} postings would be re-rendered: {change}")
print("        " + lines[-1])
PY
"${requeue[@]}" --execute 2>>"$LOGS/tools.log" | tail -1 | cut -c1-150 | sed 's/^/        /'

step "ledgerflow stats"
"$LEDGERFLOW" stats 2>>"$LOGS/tools.log" | sed 's/^/        /'

step "ledgerflow reconcile against the manifest and the billing export"
"$LEDGERFLOW" reconcile --source "$WORK/manifest.json" 2>>"$LOGS/tools.log" | sed 's/^/        /'
"$LEDGERFLOW" reconcile --source "$WORK/billing.csv" --format json 2>>"$LOGS/tools.log" | python3 -c 'import json,sys
r=json.load(sys.stdin); docs=("invoices","payments","credit_memos")
n=sum(t[d]["expected_count"] for t in r["tenants"].values() for d in docs)
bad=sum(t[d]["missing_count"]+t[d]["extra_count"]+t[d]["mismatched_count"] for t in r["tenants"].values() for d in docs)
src, clean = r["source"], r["clean"]
print(f"        billing export: source={src} clean={clean} documents={n} missing+extra+mismatched={bad}")'

step "ledgerflow audit verify"
"$LEDGERFLOW" audit verify 2>>"$LOGS/tools.log" | sed 's/^/        /'

step "warehouse and notifications"
"$LEDGERFLOW" warehouse export --table fact_invoice --format csv --out "$WORK/fact_invoice.csv" >/dev/null \
  2>>"$LOGS/tools.log"
echo "        fact_invoice.csv: $(($(wc -l <"$WORK/fact_invoice.csv") - 1)) rows; first:"
sed -n 2,3p "$WORK/fact_invoice.csv" | cut -c1-140 | sed 's/^/          /'
"$LEDGERFLOW" notifications list --format json 2>>"$LOGS/tools.log" \
  | python3 -c 'import json,sys,collections; print("        notifications by status:", dict(collections.Counter(r["status"] for r in json.load(sys.stdin))))'

step "replay plan of everything, then a second run: nothing posted twice, t003's requeued delivered"
"$LEDGERFLOW" replay plan --consumer erp-receivables --topic "$TOPIC" --tenants "$WORK/tenants.toml" \
  --from 2000-01-01 --format json 2>>"$LOGS/tools.log" | python3 -c 'import json,sys
r=json.load(sys.stdin); t=r["totals"]
print("        replay plan: read=%d would_apply=%d already_applied=%d conflicts=%d skipped=%d" % (r["read"], t["applied"], t["already_applied"], t["conflicts"], t["skipped"]))'
"$LEDGERFLOW" --log info --log-format json run --tenants "$WORK/tenants.toml" --topic "$TOPIC" \
  --exit-when-idle 3s 2>"$LOGS/run-again.log" | sed 's/^/        /'

step "what the ERPs and the webhook receiver saw"
"$LEDGERFLOW" reconcile --format json 2>>"$LOGS/tools.log" >"$WORK/reconcile.json" || true
python3 - "http://127.0.0.1:$ERP_PORT/_sim/report" "$WORK/reconcile.json" <<'PY'
import json, sys, urllib.request
r = json.load(urllib.request.urlopen(sys.argv[1], timeout=10))
rec = json.load(open(sys.argv[2]))
erp = [t["erp"] for t in rec["tenants"].values()]
confirmed = sum(e.get("confirmed", e.get("acked", 0)) for e in erp)
left = sum(e["pending"] + e["accepted"] + e["failed"] for e in erp)
print(f"        ERP simulator (duplicates must be 0, documents = confirmed postings):")
print(f"          documents={r['documents']} duplicates={r['duplicates']} throttled={r['throttled']} "
      f"rejected_auth={r['rejected_auth']} requests={r['requests']} faults={r['faults']}")
print("          by ERP: " + ", ".join(f"{k} {v['documents']}" for k, v in r["erps"].items()))
for a in r["accounts"]:
    if a["erp"] == "netsuite":
        print(f"          netsuite/{a['account']}: max {a['max_concurrency']} requests in flight")
print(f"        ledgerflow: {confirmed} postings confirmed, {left} pending/accepted/failed; "
      f"reconcile clean={rec['clean']}")
if r["duplicates"] != 0 or r["documents"] != confirmed or left != 0:
    sys.exit("ERP delivery is not exact")
PY
python3 - "http://127.0.0.1:$ERP_PORT/_sim/documents?erp=d365&account=lf-d365-t003" <<'PY'
import collections, json, sys, urllib.request
docs = json.load(urllib.request.urlopen(sys.argv[1], timeout=10))["documents"]
by_company = collections.Counter(d["body"].get("dataAreaId") for d in docs)
refs = collections.Counter(d["source_ref"] for d in docs)
twice = sum(1 for n in refs.values() if n > 1)
print(f"        t003's D365 journals after the requeue: {len(docs)} by company {dict(by_company)}, "
      f"{twice} stored twice")
if twice or set(by_company) != {"usmf"}:
    sys.exit("t003's requeued journals are not stored once each in company usmf")
PY
kill "$webhook_pid" 2>/dev/null || true
for _ in $(seq 1 50); do [ -f "$WORK/webhooks.json" ] && break; sleep 0.1; done
python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))
print("        webhook receiver (accepted_twice and bad_signatures must be 0):",
      {k: s[k] for k in ("requests","accepted","replays","injected_failures","bad_signatures","accepted_twice")})' "$WORK/webhooks.json"

echo
echo "== log summary (files in $LOGS)"
python3 - "$LOGS" <<'PY'
import collections, json, os, sys
logs = sys.argv[1]
levels = collections.Counter()
warnings = collections.Counter()
for name in sorted(os.listdir(logs)):
    if not name.startswith("run"):
        continue
    for line in open(os.path.join(logs, name), errors="replace"):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        level = entry.get("level", "?")
        levels[level] += 1
        if level in ("WARN", "ERROR"):
            fields = entry.get("fields", {})
            warnings[(level, fields.get("message", "?"))] += 1
print("   log lines by level:", dict(sorted(levels.items())))
if warnings:
    print("   warnings and errors, counted (the injected webhook and ERP failures, and t003's")
    print("   journals D365 refused before its company was fixed, are expected):")
    for (level, message), n in warnings.most_common():
        print(f"     {n:6}  {level:5} {message}")
else:
    print("   no warnings")
PY
echo "== demo done in $((SECONDS - started)) s; work dir $WORK"
