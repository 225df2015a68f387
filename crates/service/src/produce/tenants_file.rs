//! `ledgerflow produce --tenants-file`: a tenants file for the tenants the workload generates,
//! so a consumer can be pointed at the same tenants without writing one by hand.
//!
//! With `--erp-url` (the ERP simulator, `ledgerflow-erp-sim`) the tenants are spread over the
//! four ERPs: t001 and t002 share one NetSuite account (one by M2M, one by token-based auth),
//! then Dynamics 365, S/4HANA, Oracle Fusion and NetSuite in turn, each on an account of its
//! own. Every account gets credentials the simulator accepts, and [`provision`] registers them
//! with it (`POST /_sim/accounts`); when nothing answers there, the file is still written.
//!
//! Secrets (ERP keys, passwords and client secrets, Standard Webhooks `whsec_` signing secrets)
//! go into a directory next to the tenants file, `<stem>.secrets/` (mode 0700, files 0600), and
//! the TOML only references them by relative path, exactly as an operator's file would. They are
//! derived from `--seed` on a ChaCha stream of their own (test secrets, reproducible, not for
//! production), except the NetSuite M2M private keys, which are fresh P-256 keys.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ledgerflow_loadgen::TenantProfile;
use ledgerflow_tenants::{
    AccountMapping, Dynamics365Mapping, ErpAccountConfig, ErpAuth, ErpKind, ErpMode, ErpTarget,
    JwtAlgorithm, NetsuiteMapping, NotificationTemplates, OracleFusionMapping, S4hanaMapping,
    SecretRef, TenantConfig, TenantRegistry, TenantsFile, WebhookEndpoint, read_secret,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// Kinds of the tenants after the first two (which share a NetSuite account), in turn.
const ERP_ROTATION: [ErpKind; 4] = [
    ErpKind::Dynamics365,
    ErpKind::S4hana,
    ErpKind::OracleFusion,
    ErpKind::Netsuite,
];

/// The NetSuite account the first two tenants share.
const SHARED_NETSUITE_ACCOUNT: &str = "LFNS01";

/// Its concurrency limit in the tenants file: below the simulator's default of 5, so the
/// limiter, not the simulator, keeps the two tenants within the account's governance.
const SHARED_NETSUITE_CONCURRENCY: u32 = 3;

/// The Entra ID directory of every generated D365 environment.
const D365_DIRECTORY: &str = "lf-directory";

/// ChaCha stream of the secrets; the workload uses stream 0 of the same seed.
const SECRET_STREAM: u64 = 1;

/// Random bytes in a webhook secret (Standard Webhooks: 24 to 64).
const WEBHOOK_SECRET_BYTES: usize = 24;

/// Id of the one webhook endpoint each generated tenant gets.
const WEBHOOK_ID: &str = "default";

/// What to write.
#[derive(Debug, Clone)]
pub struct TenantsFileSpec<'a> {
    /// The tenants file.
    pub path: &'a Path,
    /// The ERP simulator's base URL. None: no ERP routes.
    pub erp_url: Option<&'a str>,
    /// Webhook base URL; tenants get `<url>/<tenant>`. None: no webhooks.
    pub webhook_url: Option<&'a str>,
    /// Seed of the secrets.
    pub seed: u64,
}

/// What was written.
#[derive(Debug)]
pub struct Written {
    /// Tenants in the file (checked by loading it back).
    pub tenants: usize,
    /// The secrets directory, if any secret was written.
    pub secrets_dir: Option<PathBuf>,
    /// The simulator accounts the tenants use, as `POST /_sim/accounts` takes them.
    pub sim_accounts: Vec<Value>,
}

/// Secrets to write, and the simulator accounts being built, while the tenants are made.
struct Builder<'a> {
    url: &'a str,
    secrets_name: String,
    rng: ChaCha8Rng,
    secrets: Vec<(String, String)>,
    accounts: BTreeMap<(String, String), Value>,
}

impl Builder<'_> {
    /// Stores a secret file and returns its reference.
    fn secret(&mut self, name: String, value: String) -> SecretRef {
        self.secrets.push((name.clone(), value));
        SecretRef::File {
            file: Path::new(&self.secrets_name).join(name),
        }
    }

    fn token(&mut self, prefix: &str) -> String {
        let mut bytes = [0u8; 24];
        self.rng.fill_bytes(&mut bytes);
        format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The simulator account `(erp, account)`, created on first use.
    fn account(&mut self, erp: &str, account: &str) -> &mut Value {
        self.accounts
            .entry((erp.to_owned(), account.to_owned()))
            .or_insert_with(|| json!({ "erp": erp, "account": account, "credentials": {} }))
    }

    fn push_credential(&mut self, erp: &str, account: &str, list: &str, item: Value) {
        let credentials = &mut self.account(erp, account)["credentials"];
        match credentials.get_mut(list).and_then(Value::as_array_mut) {
            Some(items) => items.push(item),
            None => credentials[list] = json!([item]),
        }
    }

    /// The route of tenant number `index` (0-based).
    fn route(&mut self, index: usize, tenant: &str) -> anyhow::Result<ErpTarget> {
        let base = self.url.trim_end_matches('/').to_owned();
        let kind = match index {
            0 | 1 => ErpKind::Netsuite,
            i => ERP_ROTATION[(i - 2) % ERP_ROTATION.len()],
        };
        let mut target = match kind {
            ErpKind::Netsuite => {
                let account = if index < 2 {
                    SHARED_NETSUITE_ACCOUNT.to_owned()
                } else {
                    format!("LFNS{}", tenant.to_uppercase())
                };
                // The second tenant of the shared account uses token-based auth: one
                // concurrency limit whatever the credentials.
                let auth = if index == 1 {
                    self.netsuite_tba(&account, tenant)
                } else {
                    self.netsuite_m2m(&account, tenant)?
                };
                ErpTarget {
                    netsuite: Some(NetsuiteMapping {
                        subsidiary: "1".to_owned(),
                        default_item: Some("501".to_owned()),
                        items: BTreeMap::new(),
                    }),
                    ..target(kind, &account, format!("{base}/netsuite/{account}"), auth)
                }
            }
            ErpKind::Dynamics365 => {
                let env = format!("lf-d365-{tenant}");
                let client_id = format!("lf-app-{tenant}");
                let secret = self.token("lf_d365_");
                let reference = self.secret(format!("d365-{tenant}.secret"), secret.clone());
                let account = self.account("d365", &env);
                account["default_company"] = json!("usmf");
                account["credentials"]["tenant_id"] = json!(D365_DIRECTORY);
                self.push_credential(
                    "d365",
                    &env,
                    "clients",
                    json!({ "client_id": client_id, "client_secret": secret }),
                );
                let auth = ErpAuth::Oauth2ClientCredentials {
                    token_url: format!("{base}/d365/login/{D365_DIRECTORY}/oauth2/v2.0/token"),
                    client_id,
                    client_secret: reference,
                    // The simulator's resource for an environment without its own.
                    scope: Some(format!("https://{env}.operations.dynamics.com/.default")),
                };
                ErpTarget {
                    dynamics365: Some(Dynamics365Mapping {
                        data_area_id: "usmf".to_owned(),
                        journal_name: "GenJrn".to_owned(),
                        payment_journal_name: Some("CustPay".to_owned()),
                    }),
                    ..target(kind, &env, format!("{base}/d365/{env}"), auth)
                }
            }
            ErpKind::S4hana => {
                let system = format!("S4{}", tenant.to_uppercase());
                let auth = self.basic("s4hana", &system, tenant);
                ErpTarget {
                    s4hana: Some(S4hanaMapping {
                        company_code: "1010".to_owned(),
                        document_type: "SA".to_owned(),
                    }),
                    ..target(kind, &system, format!("{base}/s4hana/{system}"), auth)
                }
            }
            ErpKind::OracleFusion => {
                let pod = format!("fa-{tenant}");
                let auth = self.basic("fusion", &pod, tenant);
                ErpTarget {
                    oracle_fusion: Some(OracleFusionMapping {
                        ledger: "1".to_owned(),
                        business_unit: "US1 Business Unit".to_owned(),
                        journal_source: "ledgerflow".to_owned(),
                        journal_category: "Sales".to_owned(),
                    }),
                    ..target(kind, &pod, format!("{base}/fusion/{pod}"), auth)
                }
            }
        };
        target.mode = ErpMode::Journal;
        Ok(target)
    }

    fn netsuite_m2m(&mut self, account: &str, tenant: &str) -> anyhow::Result<ErpAuth> {
        let (private, public) =
            ledgerflow_erp_receivables::auth::jwt::generate_es256().map_err(anyhow::Error::msg)?;
        let client_id = format!("lf-m2m-{tenant}");
        let certificate_id = format!("lf-cert-{tenant}");
        let key = self.secret(format!("netsuite-{tenant}-m2m.pem"), private);
        self.push_credential(
            "netsuite",
            account,
            "m2m",
            json!({ "client_id": client_id, "certificate_id": certificate_id,
                    "public_key_pem": public }),
        );
        Ok(ErpAuth::NetsuiteM2m {
            client_id,
            certificate_id,
            private_key: key,
            algorithm: JwtAlgorithm::Es256,
            token_url: None,
        })
    }

    fn netsuite_tba(&mut self, account: &str, tenant: &str) -> ErpAuth {
        let values: Vec<String> = ["ck_", "cs_", "tk_", "ts_"]
            .iter()
            .map(|p| self.token(p))
            .collect();
        self.push_credential(
            "netsuite",
            account,
            "tba",
            json!({ "consumer_key": values[0], "consumer_secret": values[1],
                    "token_id": values[2], "token_secret": values[3] }),
        );
        let [consumer_key, consumer_secret, token_id, token_secret] = [
            ("consumer-key", 0),
            ("consumer-secret", 1),
            ("token-id", 2),
            ("token-secret", 3),
        ]
        .map(|(name, i)| self.secret(format!("netsuite-{tenant}-tba-{name}"), values[i].clone()));
        ErpAuth::NetsuiteTba {
            consumer_key,
            consumer_secret,
            token_id,
            token_secret,
        }
    }

    fn basic(&mut self, erp: &str, account: &str, tenant: &str) -> ErpAuth {
        let user = format!("LF_{}", tenant.to_uppercase());
        let password = self.token("lf_pw_");
        let reference = self.secret(format!("{erp}-{tenant}.password"), password.clone());
        self.push_credential(
            erp,
            account,
            "users",
            json!({ "user": user, "password": password }),
        );
        ErpAuth::Basic {
            user,
            password: reference,
        }
    }
}

fn target(kind: ErpKind, account: &str, base_url: String, auth: ErpAuth) -> ErpTarget {
    ErpTarget {
        kind,
        account: account.to_owned(),
        base_url,
        mode: ErpMode::Journal,
        auth,
        netsuite: None,
        dynamics365: None,
        s4hana: None,
        oracle_fusion: None,
        limits: None,
        config_version: String::new(),
    }
}

/// Writes the tenants file (and its secrets) for `profiles`, then loads it back with
/// [`TenantRegistry::load`] and reads every secret through its reference, so a file that a
/// consumer could not use is an error here rather than there.
pub fn write(spec: &TenantsFileSpec<'_>, profiles: &[TenantProfile]) -> anyhow::Result<Written> {
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
    let mut builder = Builder {
        url: spec.erp_url.unwrap_or_default(),
        secrets_name: secrets_name.clone(),
        rng,
        secrets: Vec::new(),
        accounts: BTreeMap::new(),
    };
    let mut tenants = Vec::with_capacity(profiles.len());
    for (i, profile) in profiles.iter().enumerate() {
        let tenant = profile.tenant_id.as_str();
        let erp = match spec.erp_url {
            Some(_) => Some(builder.route(i, tenant)?),
            None => None,
        };
        let webhooks = match spec.webhook_url {
            Some(base) => {
                let secret = webhook_secret(&mut builder.rng);
                let reference = builder.secret(format!("whsec-{tenant}.txt"), secret);
                vec![WebhookEndpoint {
                    id: WEBHOOK_ID.to_owned(),
                    url: format!("{}/{tenant}", base.trim_end_matches('/')),
                    secret: reference,
                    events: Vec::new(),
                    templates: NotificationTemplates::default(),
                }]
            }
            None => Vec::new(),
        };
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
    let shared_used = tenants
        .iter()
        .filter_map(|t| t.erp.as_ref())
        .any(|e| e.account == SHARED_NETSUITE_ACCOUNT);
    let erp_accounts = if shared_used {
        vec![ErpAccountConfig {
            kind: ErpKind::Netsuite,
            account: SHARED_NETSUITE_ACCOUNT.to_owned(),
            concurrency: SHARED_NETSUITE_CONCURRENCY,
            rate_per_sec: None,
        }]
    } else {
        Vec::new()
    };
    let file = TenantsFile {
        erp_accounts,
        tenants,
    };

    // Validate before touching the disk: a bad --erp-url fails here, leaving nothing behind.
    TenantRegistry::from_config(file.clone()).context("the generated tenants are invalid")?;
    let toml = file.to_toml().context("rendering the tenants file")?;

    let secrets_dir = (!builder.secrets.is_empty()).then_some(secrets_dir);
    if let Some(secrets_dir) = &secrets_dir {
        create_private_dir(secrets_dir)?;
        for (name, value) in &builder.secrets {
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
        let erp = tenant
            .erp
            .iter()
            .flat_map(|e| e.auth.secrets())
            .map(|(_, s)| s);
        for secret in erp.chain(tenant.webhooks.iter().map(|w| &w.secret)) {
            read_secret(secret).with_context(|| format!("checking a secret of tenant {id}"))?;
        }
    }
    Ok(Written {
        tenants: loaded,
        secrets_dir,
        sim_accounts: builder.accounts.into_values().collect(),
    })
}

/// What [`provision`] achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Provisioned {
    /// The simulator took every account.
    Accounts(usize),
    /// Nothing answered at the URL (not a simulator, or not started): not an error, the
    /// tenants file is written either way.
    NoSimulator(String),
}

/// Registers the accounts with the simulator at `erp_url` (`POST /_sim/accounts`).
pub async fn provision(erp_url: &str, accounts: &[Value]) -> anyhow::Result<Provisioned> {
    if accounts.is_empty() {
        return Ok(Provisioned::Accounts(0));
    }
    let url = format!("{}/_sim/accounts", erp_url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the http client")?;
    let response = match client.post(&url).json(&accounts).send().await {
        Ok(r) => r,
        Err(e) => return Ok(Provisioned::NoSimulator(format!("{url}: {e}"))),
    };
    let status = response.status();
    if status.as_u16() == 404 {
        return Ok(Provisioned::NoSimulator(format!("{url} answered 404")));
    }
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(
        status.as_u16() == 201,
        "the simulator refused the accounts at {url}: {status} {body}"
    );
    Ok(Provisioned::Accounts(accounts.len()))
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
    fn spreads_tenants_over_the_four_erps_with_a_shared_netsuite_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        let profiles = profiles(7);
        let written = write(
            &spec(
                &path,
                Some("http://127.0.0.1:9000/"),
                Some("http://127.0.0.1:9100/hooks"),
            ),
            &profiles,
        )
        .unwrap();
        assert_eq!(written.tenants, 7);
        assert_eq!(
            written.secrets_dir,
            Some(dir.path().join("tenants.secrets"))
        );

        let registry = TenantRegistry::load(&path).unwrap();
        let route = |t: &str| registry.get(&id(t)).unwrap().erp.clone().unwrap();
        let kinds: Vec<(ErpKind, String)> =
            ["t001", "t002", "t003", "t004", "t005", "t006", "t007"]
                .iter()
                .map(|t| {
                    let r = route(t);
                    (r.kind, r.account)
                })
                .collect();
        assert_eq!(
            kinds,
            [
                (ErpKind::Netsuite, "LFNS01".to_owned()),
                (ErpKind::Netsuite, "LFNS01".to_owned()),
                (ErpKind::Dynamics365, "lf-d365-t003".to_owned()),
                (ErpKind::S4hana, "S4T004".to_owned()),
                (ErpKind::OracleFusion, "fa-t005".to_owned()),
                (ErpKind::Netsuite, "LFNST006".to_owned()),
                (ErpKind::Dynamics365, "lf-d365-t007".to_owned()),
            ]
        );
        // The shared account's limit is set once, for both tenants.
        assert_eq!(route("t001").account_limits().concurrency, 3);
        assert_eq!(route("t002").account_limits().concurrency, 3);
        assert_eq!(route("t001").auth.method(), "netsuite_m2m");
        assert_eq!(route("t002").auth.method(), "netsuite_tba");
        assert_eq!(
            route("t001").base_url,
            "http://127.0.0.1:9000/netsuite/LFNS01"
        );
        assert_eq!(
            route("t003").base_url,
            "http://127.0.0.1:9000/d365/lf-d365-t003"
        );

        for profile in &profiles {
            let tenant = registry.get(&profile.tenant_id).unwrap();
            assert_eq!(tenant.legal_entity, profile.legal_entity);
            assert_eq!(tenant.functional_currency, profile.currency);
            assert_eq!(tenant.accounts.revenue_for("usage"), "4010");
            for (_, secret) in tenant.erp.as_ref().unwrap().auth.secrets() {
                assert!(!read_secret(secret).unwrap().is_empty());
            }
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

        // One simulator account per ERP account; the shared one holds both credentials.
        assert_eq!(written.sim_accounts.len(), 6);
        let shared = written
            .sim_accounts
            .iter()
            .find(|a| a["account"] == "LFNS01")
            .unwrap();
        assert_eq!(shared["credentials"]["m2m"].as_array().unwrap().len(), 1);
        assert_eq!(shared["credentials"]["tba"].as_array().unwrap().len(), 1);
        let d365 = written
            .sim_accounts
            .iter()
            .find(|a| a["erp"] == "d365")
            .unwrap();
        assert_eq!(d365["credentials"]["tenant_id"], D365_DIRECTORY);
        let secret = read_secret(&SecretRef::File {
            file: dir.path().join("tenants.secrets/d365-t003.secret"),
        })
        .unwrap();
        assert_eq!(d365["credentials"]["clients"][0]["client_secret"], secret);
    }

    #[test]
    fn the_toml_references_secrets_relatively_and_never_contains_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        write(
            &spec(&path, Some("http://erp.test"), Some("http://hooks.test")),
            &profiles(5),
        )
        .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("run.secrets/netsuite-t001-m2m.pem"), "{text}");
        assert!(text.contains("run.secrets/whsec-t002.txt"), "{text}");
        assert!(text.contains("[[erp_accounts]]"), "{text}");
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
        // t001: M2M key and a webhook secret; t002: four TBA values and a webhook secret.
        assert_eq!(files, 7);
        assert_ne!(fs::read_to_string(&stale).unwrap(), "old");
    }

    #[test]
    fn without_urls_tenants_have_no_erp_no_webhooks_and_no_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        let written = write(&spec(&path, None, None), &profiles(3)).unwrap();
        assert_eq!(written.tenants, 3);
        assert_eq!(written.secrets_dir, None);
        assert!(written.sim_accounts.is_empty());
        assert!(!dir.path().join("tenants.secrets").exists());
        let registry = TenantRegistry::load(&path).unwrap();
        let tenant = registry.get(&id("t003")).unwrap();
        assert!(tenant.erp.is_none());
        assert!(tenant.webhooks.is_empty());
    }

    #[test]
    fn seeded_secrets_are_deterministic_per_seed() {
        let read_all = |seed: u64| {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("tenants.toml");
            let spec = TenantsFileSpec {
                seed,
                ..spec(&path, Some("http://erp.test"), Some("http://hooks.test"))
            };
            write(&spec, &profiles(4)).unwrap();
            [
                "whsec-t001.txt",
                "netsuite-t002-tba-token-secret",
                "d365-t003.secret",
                "s4hana-t004.password",
            ]
            .map(|name| fs::read_to_string(dir.path().join("tenants.secrets").join(name)).unwrap())
        };
        let first = read_all(7);
        assert_eq!(first, read_all(7));
        assert_ne!(first, read_all(8));
        assert_ne!(first[2], first[3], "accounts get different secrets");
    }

    #[test]
    fn a_bad_url_fails_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.toml");
        let err = write(&spec(&path, Some("erp.test"), None), &profiles(1)).unwrap_err();
        assert!(format!("{err:#}").contains("erp.base_url"), "{err:#}");
        assert!(!path.exists());
        assert!(!dir.path().join("tenants.secrets").exists());
    }

    #[tokio::test]
    async fn provisioning_without_a_simulator_is_not_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let outcome = provision(&format!("http://127.0.0.1:{port}"), &[json!({})])
            .await
            .unwrap();
        assert!(
            matches!(outcome, Provisioned::NoSimulator(_)),
            "{outcome:?}"
        );
        assert_eq!(
            provision("http://127.0.0.1:9", &[]).await.unwrap(),
            Provisioned::Accounts(0)
        );
    }
}
