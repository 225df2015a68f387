//! `ledgerflow produce --tenants-file`: a tenants file for the tenants the workload generates,
//! so a consumer can be pointed at the same tenants without writing one by hand.
//!
//! Secrets (ERP bearer tokens, Standard Webhooks `whsec_` signing secrets) go into a directory
//! next to the tenants file, `<stem>.secrets/` (mode 0700, files 0600), and the TOML only
//! references them by relative path, exactly as an operator's file would. They are derived from
//! `--seed` on a ChaCha stream of their own: test secrets, reproducible, not for production.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ledgerflow_loadgen::TenantProfile;
use ledgerflow_tenants::{
    AccountMapping, ErpKind, ErpTarget, NotificationTemplates, SecretRef, TenantConfig,
    TenantRegistry, TenantsFile, WebhookEndpoint, read_secret,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// ERP kinds handed out to tenants in turn: t001 NetSuite, t002 Dynamics 365, ...
const ERP_ROTATION: [ErpKind; 4] = [
    ErpKind::Netsuite,
    ErpKind::Dynamics365,
    ErpKind::S4hana,
    ErpKind::OracleFusion,
];

/// ChaCha stream of the secrets; the workload uses stream 0 of the same seed.
const SECRET_STREAM: u64 = 1;

/// Random bytes in a webhook secret (Standard Webhooks: 24 to 64).
const WEBHOOK_SECRET_BYTES: usize = 24;

/// Id of the one webhook endpoint each generated tenant gets.
const WEBHOOK_ID: &str = "default";

/// What to write.
#[derive(Debug, Clone)]
pub(crate) struct TenantsFileSpec<'a> {
    /// The tenants file.
    pub(crate) path: &'a Path,
    /// ERP base URL; tenants get `<url>/<kind>/<tenant>`. None: no ERP targets.
    pub(crate) erp_url: Option<&'a str>,
    /// Webhook base URL; tenants get `<url>/<tenant>`. None: no webhooks.
    pub(crate) webhook_url: Option<&'a str>,
    /// Seed of the secrets.
    pub(crate) seed: u64,
}

/// What was written.
#[derive(Debug)]
pub(crate) struct Written {
    /// Tenants in the file (checked by loading it back).
    pub(crate) tenants: usize,
    /// The secrets directory, if any secret was written.
    pub(crate) secrets_dir: Option<PathBuf>,
}

/// Writes the tenants file (and its secrets) for `profiles`, then loads it back with
/// [`TenantRegistry::load`] and reads every secret through its reference, so a file that a
/// consumer could not use is an error here rather than there.
pub(crate) fn write(
    spec: &TenantsFileSpec<'_>,
    profiles: &[TenantProfile],
) -> anyhow::Result<Written> {
    let stem = spec
        .path
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .with_context(|| format!("{} has no usable file name", spec.path.display()))?;
    let secrets_name = format!("{stem}.secrets");
    let dir = match spec.path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let secrets_dir = dir.join(&secrets_name);

    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    rng.set_stream(SECRET_STREAM);
    let mut secrets: Vec<(String, String)> = Vec::new();
    let mut tenants = Vec::with_capacity(profiles.len());
    for (i, profile) in profiles.iter().enumerate() {
        let tenant = profile.tenant_id.as_str();
        let erp = spec.erp_url.map(|base| {
            let kind = ERP_ROTATION[i % ERP_ROTATION.len()];
            let name = format!("erp-{tenant}.token");
            secrets.push((name.clone(), erp_token(&mut rng)));
            ErpTarget {
                kind,
                endpoint: format!("{}/{kind}/{tenant}", base.trim_end_matches('/')),
                credential: SecretRef::File {
                    file: Path::new(&secrets_name).join(name),
                },
            }
        });
        let webhooks = spec
            .webhook_url
            .map(|base| {
                let name = format!("whsec-{tenant}.txt");
                secrets.push((name.clone(), webhook_secret(&mut rng)));
                vec![WebhookEndpoint {
                    id: WEBHOOK_ID.to_owned(),
                    url: format!("{}/{tenant}", base.trim_end_matches('/')),
                    secret: SecretRef::File {
                        file: Path::new(&secrets_name).join(name),
                    },
                    events: Vec::new(),
                    templates: NotificationTemplates::default(),
                }]
            })
            .unwrap_or_default();
        tenants.push(TenantConfig {
            tenant_id: profile.tenant_id.clone(),
            legal_entity: profile.legal_entity.clone(),
            functional_currency: profile.currency,
            erp,
            accounts: accounts(),
            webhooks,
            rate_limit_per_sec: None,
        });
    }
    let file = TenantsFile { tenants };

    // Validate before touching the disk: a bad --erp-url fails here, leaving nothing behind.
    TenantRegistry::from_config(file.clone()).context("the generated tenants are invalid")?;
    let toml = file.to_toml().context("rendering the tenants file")?;

    let secrets_dir = (!secrets.is_empty()).then_some(secrets_dir);
    if let Some(secrets_dir) = &secrets_dir {
        create_private_dir(secrets_dir)?;
        for (name, value) in &secrets {
            write_private_file(&secrets_dir.join(name), value)?;
        }
    }
    let header = format!(
        "# Tenants of the ledgerflow load generator ({} tenants, seed {}), written by\n\
         # `ledgerflow produce --tenants-file`. Secrets live in {secrets_name}/ next to this file\n\
         # and are only referenced here. deploy/tenants.example.toml explains every field.\n\n",
        profiles.len(),
        spec.seed,
    );
    write_atomically(spec.path, &(header + &toml))?;

    let registry = TenantRegistry::load(spec.path)
        .with_context(|| format!("loading back {}", spec.path.display()))?;
    let loaded = registry.tenant_ids().len();
    anyhow::ensure!(
        loaded == profiles.len(),
        "{} holds {loaded} tenants, expected {}",
        spec.path.display(),
        profiles.len()
    );
    for id in registry.tenant_ids() {
        let Some(tenant) = registry.get(&id) else {
            continue;
        };
        let refs = tenant.erp.iter().map(|erp| &erp.credential);
        for secret in refs.chain(tenant.webhooks.iter().map(|w| &w.secret)) {
            read_secret(secret).with_context(|| format!("checking a secret of tenant {id}"))?;
        }
    }
    Ok(Written {
        tenants: loaded,
        secrets_dir,
    })
}

/// Plausible GL accounts, the same for every generated tenant; one revenue account per
/// product family of the load generator's catalogue.
fn accounts() -> AccountMapping {
    AccountMapping {
        receivable: "1200".to_owned(),
        revenue_default: "4000".to_owned(),
        revenue_by_family: [
            ("platform", "4000"),
            ("usage", "4010"),
            ("support", "4020"),
            ("addons", "4030"),
        ]
        .into_iter()
        .map(|(family, account)| (family.to_owned(), account.to_owned()))
        .collect(),
        tax_payable: "2200".to_owned(),
        cash_clearing: "1010".to_owned(),
        payment_fees: "6150".to_owned(),
        unapplied_cash: "2400".to_owned(),
    }
}

/// A Standard Webhooks signing secret: `whsec_` + base64 of random bytes.
fn webhook_secret(rng: &mut ChaCha8Rng) -> String {
    let mut bytes = [0u8; WEBHOOK_SECRET_BYTES];
    rng.fill_bytes(&mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// An opaque bearer token for the ERP stub.
fn erp_token(rng: &mut ChaCha8Rng) -> String {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    format!("lf_erp_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Creates `dir` (and parents) and restricts it to the owner, also when it already existed.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating the secrets directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {} to mode 0700", dir.display()))?;
    }
    Ok(())
}

/// Writes a secret file readable by the owner only (mode 0600 from creation on, and reset for a
/// file that already existed with wider permissions).
fn write_private_file(path: &Path, value: &str) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating the secret file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {} to mode 0600", path.display()))?;
    }
    file.write_all(value.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .with_context(|| format!("writing the secret file {}", path.display()))
}

/// Writes via a temporary file and a rename, so a consumer watching the file (started in
/// parallel) never loads a half-written one.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use ledgerflow_core::TenantId;
    use ledgerflow_loadgen::{Workload, WorkloadConfig};

    use super::*;

    fn profiles(count: u32) -> Vec<TenantProfile> {
        let cfg = WorkloadConfig {
            tenants: count,
            events: 1,
            ..WorkloadConfig::default()
        };
        Workload::new(cfg).unwrap().tenants().to_vec()
    }

    fn spec<'a>(
        path: &'a Path,
        erp: Option<&'a str>,
        webhook: Option<&'a str>,
    ) -> TenantsFileSpec<'a> {
        TenantsFileSpec {
            path,
            erp_url: erp,
            webhook_url: webhook,
            seed: 42,
        }
    }

    fn id(raw: &str) -> TenantId {
        TenantId::parse(raw).unwrap()
    }

    #[test]
    fn writes_every_workload_tenant_with_erp_and_webhooks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        let profiles = profiles(5);
        let written = write(
            &spec(
                &path,
                Some("http://127.0.0.1:9000/"),
                Some("http://127.0.0.1:9100/hooks"),
            ),
            &profiles,
        )
        .unwrap();
        assert_eq!(written.tenants, 5);
        assert_eq!(
            written.secrets_dir,
            Some(dir.path().join("tenants.secrets"))
        );

        let registry = TenantRegistry::load(&path).unwrap();
        for (i, profile) in profiles.iter().enumerate() {
            let tenant = registry.get(&profile.tenant_id).unwrap();
            assert_eq!(tenant.legal_entity, profile.legal_entity);
            assert_eq!(tenant.functional_currency, profile.currency);
            assert_eq!(tenant.accounts.revenue_for("usage"), "4010");
            assert_eq!(tenant.accounts.unapplied_cash, "2400");
            let erp = tenant.erp.as_ref().unwrap();
            assert_eq!(erp.kind, ERP_ROTATION[i % 4]);
            assert_eq!(
                erp.endpoint,
                format!("http://127.0.0.1:9000/{}/{}", erp.kind, profile.tenant_id)
            );
            let token = read_secret(&erp.credential).unwrap();
            assert!(token.starts_with("lf_erp_"), "{token}");

            assert_eq!(tenant.webhooks.len(), 1);
            let webhook = &tenant.webhooks[0];
            assert_eq!(webhook.id, "default");
            assert_eq!(
                webhook.url,
                format!("http://127.0.0.1:9100/hooks/{}", profile.tenant_id)
            );
            let secret = read_secret(&webhook.secret).unwrap();
            let key = secret.strip_prefix("whsec_").expect("whsec_ prefix");
            assert_eq!(STANDARD.decode(key).unwrap().len(), WEBHOOK_SECRET_BYTES);
        }
        let kinds: Vec<ErpKind> = ["t001", "t002", "t003", "t004", "t005"]
            .iter()
            .map(|t| registry.get(&id(t)).unwrap().erp.as_ref().unwrap().kind)
            .collect();
        assert_eq!(
            kinds,
            [
                ErpKind::Netsuite,
                ErpKind::Dynamics365,
                ErpKind::S4hana,
                ErpKind::OracleFusion,
                ErpKind::Netsuite
            ]
        );
    }

    #[test]
    fn the_toml_references_secrets_relatively_and_never_contains_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        write(
            &spec(&path, Some("http://erp.test"), Some("http://hooks.test")),
            &profiles(2),
        )
        .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("run.secrets/erp-t001.token"), "{text}");
        assert!(text.contains("run.secrets/whsec-t002.txt"), "{text}");
        assert!(
            !text.contains(dir.path().to_str().unwrap()),
            "paths are relative: {text}"
        );
        for entry in fs::read_dir(dir.path().join("run.secrets")).unwrap() {
            let secret = fs::read_to_string(entry.unwrap().path()).unwrap();
            assert!(!text.contains(secret.trim()), "secret leaked into the toml");
        }
        assert!(!dir.path().join("run.toml.tmp").exists());
    }

    #[cfg(unix)]
    #[test]
    fn secrets_are_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        // A pre-existing, world-readable secrets dir and file get tightened.
        let secrets = dir.path().join("tenants.secrets");
        fs::create_dir(&secrets).unwrap();
        fs::set_permissions(&secrets, fs::Permissions::from_mode(0o755)).unwrap();
        let stale = secrets.join("whsec-t001.txt");
        fs::write(&stale, "old").unwrap();
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).unwrap();

        write(
            &spec(&path, Some("http://erp.test"), Some("http://hooks.test")),
            &profiles(2),
        )
        .unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&secrets), 0o700);
        let mut files = 0;
        for entry in fs::read_dir(&secrets).unwrap() {
            assert_eq!(mode(&entry.unwrap().path()), 0o600);
            files += 1;
        }
        assert_eq!(files, 4, "an ERP token and a webhook secret per tenant");
        assert_ne!(fs::read_to_string(&stale).unwrap(), "old");
    }

    #[test]
    fn without_urls_tenants_have_no_erp_no_webhooks_and_no_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        let written = write(&spec(&path, None, None), &profiles(3)).unwrap();
        assert_eq!(written.tenants, 3);
        assert_eq!(written.secrets_dir, None);
        assert!(!dir.path().join("tenants.secrets").exists());
        let registry = TenantRegistry::load(&path).unwrap();
        let tenant = registry.get(&id("t003")).unwrap();
        assert!(tenant.erp.is_none());
        assert!(tenant.webhooks.is_empty());
    }

    #[test]
    fn secrets_are_deterministic_per_seed() {
        let read_all = |seed: u64| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tenants.toml");
            let spec = TenantsFileSpec {
                seed,
                ..spec(&path, Some("http://erp.test"), Some("http://hooks.test"))
            };
            write(&spec, &profiles(2)).unwrap();
            [
                "erp-t001.token",
                "whsec-t001.txt",
                "erp-t002.token",
                "whsec-t002.txt",
            ]
            .map(|name| fs::read_to_string(dir.path().join("tenants.secrets").join(name)).unwrap())
        };
        let first = read_all(7);
        assert_eq!(first, read_all(7));
        assert_ne!(first, read_all(8));
        assert_ne!(first[1], first[3], "tenants get different secrets");
    }

    #[test]
    fn a_bad_url_fails_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        let err = write(&spec(&path, Some("erp.test"), None), &profiles(1)).unwrap_err();
        assert!(format!("{err:#}").contains("erp.endpoint"), "{err:#}");
        assert!(!path.exists());
        assert!(!dir.path().join("tenants.secrets").exists());
    }
}
