//! The tenants file of the Kubernetes ConfigMap (deploy/k8s/configmap.yaml, key `tenants.toml`)
//! must load with ledgerflow's own loader: a ConfigMap that the pods would refuse at start is
//! caught here, not in the cluster. (deploy/check.py checks the YAML, the file's shape and that
//! every secret it references is a key of the mounted Secret.)

use std::path::Path;

use ledgerflow_core::TenantId;
use ledgerflow_tenants::{ErpKind, SecretRef, TenantRegistry};

/// The block scalar under `  tenants.toml: |`, de-indented.
fn embedded_tenants_toml(yaml: &str) -> String {
    let mut lines = yaml
        .lines()
        .skip_while(|l| l.trim_end() != "  tenants.toml: |");
    assert!(
        lines.next().is_some(),
        "no tenants.toml key in the ConfigMap"
    );
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_configmap_tenants_file_loads() {
    let configmap = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/k8s/configmap.yaml"
    ));
    let yaml = std::fs::read_to_string(configmap).expect("read the ConfigMap");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("tenants.toml");
    std::fs::write(&path, embedded_tenants_toml(&yaml)).expect("write tenants.toml");
    let registry = TenantRegistry::load(&path).unwrap_or_else(|e| panic!("{e}"));

    let ids: Vec<String> = registry
        .tenant_ids()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ids, ["acme", "globex"]);
    let tenant = |id: &str| {
        let id = TenantId::parse(id).expect("tenant id");
        registry.get(&id).expect("tenant")
    };
    let acme = tenant("acme");
    let erp = acme.erp.as_ref().expect("acme posts to an ERP");
    assert_eq!(erp.kind, ErpKind::Netsuite);
    assert_eq!(erp.account_limits().concurrency, 4, "from [[erp_accounts]]");
    let globex = tenant("globex");
    let erp = globex.erp.as_ref().expect("globex posts to an ERP");
    assert_eq!(erp.kind, ErpKind::Dynamics365);
    // Every secret is a file of the mounted Secret, never a value in the ConfigMap.
    for tenant in [&acme, &globex] {
        let erp = tenant.erp.as_ref().expect("erp");
        for (_, secret) in erp.auth.secrets() {
            assert!(
                matches!(secret, SecretRef::File { file }
                    if file.starts_with("/var/run/secrets/ledgerflow/")),
                "{secret:?}"
            );
        }
    }
}
