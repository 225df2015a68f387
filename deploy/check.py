#!/usr/bin/env python3
"""Static checks of deploy/ (run by `make check-observability`, next to promtool).

- every YAML file parses; the dashboard is valid JSON; the TOML configs parse;
- every ledgerflow_* metric the dashboard and the alert rules query is defined in the
  catalogue (crates/telemetry/src/lib.rs), except the gauges written by scheduled
  reconcile / audit runs (crates/telemetry/src/textfile.rs);
- compose runs Kafka in KRaft mode, the registry, Postgres, ledgerflow with metrics on
  0.0.0.0:9464, Prometheus and Grafana;
- Kubernetes has a StatefulSet per consumer with `--consumer NAME`, the pod name as its static
  member id, a grace period longer than its shutdown timeout, /healthz and /readyz probes, a
  PodDisruptionBudget selecting it, and the metrics Service;
- the ConfigMap's tenants.toml has the current shape (`[[erp_accounts]]`, `[tenants.erp]` with
  kind, account, base_url and auth; not the old endpoint/credential keys), and every secret it
  references by file is a key of the tenant Secret (secrets.example.yaml) mounted where the
  reference points, and every key of that Secret is referenced. ledgerflow's own loader
  validates the same file in crates/tenants/tests/deploy_configmap.rs (`cargo test`).
"""
import json
import pathlib
import re
import sys
import tomllib

import yaml

DEPLOY = pathlib.Path(__file__).resolve().parent
ROOT = DEPLOY.parent
CONSUMERS = ["erp-receivables", "warehouse", "notifications"]
ERP_KINDS = {"netsuite", "dynamics365", "s4hana", "oracle_fusion"}
SECRETS_MOUNT = "/var/run/secrets/ledgerflow/"
CONFIG_KEYS = {"brokers", "schema_registry_url", "database_url", "topics", "tenants_file",
               "group_prefix", "consumers", "batch", "exit_when_idle", "kafka", "metrics_listen",
               "max_wait", "shutdown_timeout", "not_ready_after", "group_protocol", "instance_id",
               "session_timeout"}

failures = []


def check(ok, message):
    if not ok:
        failures.append(message)


def docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


yaml_files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
parsed = {}
for path in yaml_files:
    try:
        parsed[path] = docs(path)
    except yaml.YAMLError as e:
        check(False, f"{path.relative_to(ROOT)}: {e}")

dashboard = json.loads((DEPLOY / "grafana/ledgerflow.json").read_text())
for path in [DEPLOY / "ledgerflow.toml", DEPLOY / "tenants.example.toml"]:
    tomllib.loads(path.read_text())

# Metric names against the catalogue.
catalogue = set(re.findall(r'pub const \w+: &str =\s+"(ledgerflow_\w+)";',
                           (ROOT / "crates/telemetry/src/lib.rs").read_text()))
check(len(catalogue) >= 10, f"catalogue not found: {catalogue}")
# Written by `ledgerflow reconcile` / `ledgerflow audit verify` runs (textfile or Pushgateway):
# their names are defined in crates/telemetry/src/textfile.rs.
EXTERNAL = set(re.findall(r'pub const \w+: &str =\s+"(ledgerflow_\w+)";',
                          (ROOT / "crates/telemetry/src/textfile.rs").read_text()))
check(len(EXTERNAL) >= 4, f"textfile gauges not found: {EXTERNAL}")
queried = set()
exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
exprs += [r["expr"] for g in parsed[DEPLOY / "prometheus/alerts.yml"][0]["groups"] for r in g["rules"]]
for expr in exprs:
    queried |= {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"ledgerflow_\w+", expr)}
unknown = queried - catalogue - EXTERNAL
check(not unknown, f"queried but not in the catalogue: {sorted(unknown)}")
check(not (EXTERNAL & catalogue), "EXTERNAL metrics are now in the catalogue: move them")

# compose.
compose = parsed[DEPLOY / "compose.yaml"][0]
services = compose["services"]
for name in ["kafka", "schema-registry", "postgres", "ledgerflow", "prometheus", "grafana"]:
    check(name in services, f"compose: no service {name}")
check(services["kafka"]["image"].startswith("apache/kafka:"), "compose: kafka is not apache/kafka")
check("controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "compose: kafka is not KRaft")
command = services["ledgerflow"]["command"]
check(command[:3] == ["run", "--config", "/etc/ledgerflow/ledgerflow.toml"]
      and "0.0.0.0:9464" in command, f"compose: ledgerflow command {command}")

# Kubernetes.
k8s = [d for p, ds in parsed.items() if "k8s" in p.parts for d in ds]
# Not part of kustomization.yaml: the shape of the Secrets an operator creates.
k8s_secrets = parsed.get(DEPLOY / "k8s/secrets.example.yaml", [])
kinds = lambda kind: [d for d in k8s if d.get("kind") == kind]
for consumer in CONSUMERS:
    deployments = [d for d in kinds("StatefulSet")
                   if d["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") == consumer]
    check(len(deployments) == 1, f"k8s: {len(deployments)} StatefulSets for {consumer}")
    if not deployments:
        continue
    pod = deployments[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}
    check(env.get("LEDGERFLOW_INSTANCE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
          == "metadata.name", f"k8s: {consumer} instance id is not the pod name")
    shutdown = int(env.get("LEDGERFLOW_SHUTDOWN_TIMEOUT", {}).get("value", "30s").rstrip("s"))
    check(pod.get("terminationGracePeriodSeconds", 30) >= shutdown + 5,
          f"k8s: {consumer} grace period shorter than the shutdown timeout plus 5 s")
    args = container["args"]
    check(args[0] == "run" and args[args.index("--consumer") + 1] == consumer,
          f"k8s: {consumer} args {args}")
    check(container["livenessProbe"]["httpGet"]["path"] == "/healthz", f"k8s: {consumer} liveness")
    check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", f"k8s: {consumer} readiness")
    labels = deployments[0]["spec"]["selector"]["matchLabels"]
    pdbs = [d for d in kinds("PodDisruptionBudget") if d["spec"]["selector"]["matchLabels"] == labels]
    check(len(pdbs) == 1, f"k8s: {len(pdbs)} PodDisruptionBudgets for {consumer}")
check(any(p["name"] == "metrics" for s in kinds("Service") for p in s["spec"]["ports"]),
      "k8s: no metrics Service")
config_maps = kinds("ConfigMap")
check(len(config_maps) == 1, "k8s: expected one ConfigMap")


def file_refs(value):
    """Every `{ file = PATH }` secret reference in a parsed TOML value."""
    if isinstance(value, dict):
        if set(value) == {"file"}:
            yield value["file"]
        else:
            for v in value.values():
                yield from file_refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from file_refs(v)


tenant_secrets = [d for d in k8s_secrets if d["metadata"]["name"] == "ledgerflow-tenant-secrets"]
check(len(tenant_secrets) == 1, "k8s: secrets.example.yaml has no ledgerflow-tenant-secrets")
secret_keys = set(tenant_secrets[0]["stringData"]) if tenant_secrets else set()
for consumer_set in kinds("StatefulSet"):
    pod = consumer_set["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"].rstrip("/") + "/": m["name"] for m in pod["containers"][0].get("volumeMounts", [])}
    volume = volumes.get(mounts.get(SECRETS_MOUNT, ""), {})
    check(volume.get("secret", {}).get("secretName") == "ledgerflow-tenant-secrets",
          f"k8s: {consumer_set['metadata']['name']} does not mount ledgerflow-tenant-secrets at {SECRETS_MOUNT}")
for cm in config_maps:
    config = tomllib.loads(cm["data"]["ledgerflow.toml"])
    check(set(config) <= CONFIG_KEYS, f"k8s: unknown config keys {set(config) - CONFIG_KEYS}")
    tenants = tomllib.loads(cm["data"]["tenants.toml"])
    check(set(tenants) <= {"erp_accounts", "tenants"}, f"k8s tenants.toml: top-level keys {set(tenants)}")
    routes = set()
    for tenant in tenants.get("tenants", []):
        erp = tenant.get("erp")
        if erp is None:
            continue
        name = tenant.get("tenant_id")
        old = {"endpoint", "credential"} & set(erp)
        check(not old, f"k8s tenants.toml: {name}: old erp keys {sorted(old)} (see tenants.example.toml)")
        missing = {"kind", "account", "base_url", "auth"} - set(erp)
        check(not missing, f"k8s tenants.toml: {name}: erp lacks {sorted(missing)}")
        check(erp.get("kind") in ERP_KINDS, f"k8s tenants.toml: {name}: erp kind {erp.get('kind')}")
        check("method" in erp.get("auth", {}), f"k8s tenants.toml: {name}: erp auth has no method")
        routes.add((erp.get("kind"), erp.get("account")))
    for account in tenants.get("erp_accounts", []):
        key = (account.get("kind"), account.get("account"))
        check(key in routes, f"k8s tenants.toml: [[erp_accounts]] {key} is used by no tenant")
        check(account.get("concurrency", 0) > 0, f"k8s tenants.toml: [[erp_accounts]] {key} concurrency")
    refs = set(file_refs(tenants))
    for ref in refs:
        check(ref.startswith(SECRETS_MOUNT) and ref[len(SECRETS_MOUNT):] in secret_keys,
              f"k8s tenants.toml: secret file {ref} is not a key of ledgerflow-tenant-secrets at {SECRETS_MOUNT}")
    unused = secret_keys - {r[len(SECRETS_MOUNT):] for r in refs}
    check(not unused, f"k8s: ledgerflow-tenant-secrets keys the tenants file never references: {sorted(unused)}")
kustomization = parsed[DEPLOY / "k8s/kustomization.yaml"][0]
for resource in kustomization["resources"]:
    check((DEPLOY / "k8s" / resource).is_file(), f"k8s: kustomization lists missing {resource}")

if failures:
    print("deploy checks failed:\n  " + "\n  ".join(failures))
    sys.exit(1)
print(f"deploy: {len(yaml_files)} YAML files, dashboard ({len(dashboard['panels'])} panels), "
      f"{len(queried)} queried metrics, {len(CONSUMERS)} consumer StatefulSets: ok")
