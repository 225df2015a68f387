//! The ERP simulator in-process, its admin API, and tenants routed to it. Everything the
//! tests count is counted on the simulator's side (`/_sim/report`, `/_sim/documents`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ledgerflow_erp_receivables::{Dispatcher, DispatcherConfig};
use ledgerflow_erp_sim::{RunningSim, SimConfig};
use ledgerflow_store::Backend;
use ledgerflow_tenants::{
    AccountLimits, Dynamics365Mapping, ErpAuth, ErpKind, ErpMode, ErpTarget, JwtAlgorithm,
    NetsuiteMapping, OracleFusionMapping, S4hanaMapping, SecretRef, TenantConfig,
};
use serde_json::{Value, json};
use sqlx::Row;

use super::{TestDb, tenant};

/// A simulator on a random loopback port with its own state directory.
pub struct Sim {
    pub running: RunningSim,
    pub url: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Sim {
    pub async fn start() -> Sim {
        Self::start_with(|_| {}).await
    }

    /// A simulator whose configuration `configure` adjusts first (job delay, limits).
    pub async fn start_with(configure: impl FnOnce(&mut SimConfig)) -> Sim {
        let dir = tempfile::tempdir().expect("sim state dir");
        let mut config = SimConfig::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            dir.path().to_path_buf(),
        );
        configure(&mut config);
        let running = ledgerflow_erp_sim::start(config).await.expect("simulator");
        Sim {
            url: running.url(),
            running,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: Value, expect: u16) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect(path);
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, expect, "{path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect(path)
            .json()
            .await
            .expect(path)
    }

    pub async fn provision(&self, account: Value) {
        self.post("/_sim/accounts", account, 201).await;
    }

    pub async fn faults(&self, faults: Value) {
        self.post("/_sim/faults", faults, 200).await;
    }

    pub async fn limits(&self, limits: Value) {
        self.post("/_sim/limits", limits, 200).await;
    }

    pub async fn report(&self) -> Value {
        self.get("/_sim/report").await
    }

    /// Top-level documents of one ERP (and account).
    pub async fn documents(&self, erp: &str, account: Option<&str>) -> Vec<Value> {
        let account = account.map(|a| format!("&account={a}")).unwrap_or_default();
        self.get(&format!("/_sim/documents?erp={erp}{account}"))
            .await["documents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The report's entry of one account.
    pub async fn account(&self, erp: &str, account: &str) -> Value {
        let report = self.report().await;
        report["accounts"]
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|a| a["erp"] == erp && a["account"] == account)
                    .cloned()
            })
            .unwrap_or(Value::Null)
    }
}

/// Secrets the dispatcher reads (its explicit environment map).
#[derive(Debug, Default, Clone)]
pub struct Secrets(pub BTreeMap<String, String>);

impl Secrets {
    /// Stores `value` under `name` and returns the reference to it.
    pub fn put(&mut self, name: &str, value: &str) -> SecretRef {
        self.0.insert(name.to_owned(), value.to_owned());
        SecretRef::Env {
            env: name.to_owned(),
        }
    }
}

/// A NetSuite M2M client: (simulator credential, tenant auth).
pub fn netsuite_m2m(secrets: &mut Secrets, name: &str) -> (Value, ErpAuth) {
    let (private, public) =
        ledgerflow_erp_receivables::auth::jwt::generate_es256().expect("key pair");
    let client_id = format!("client-{name}");
    let certificate_id = format!("cert-{name}");
    let key = secrets.put(&format!("NS_KEY_{name}"), &private);
    (
        json!({ "client_id": client_id, "certificate_id": certificate_id, "public_key_pem": public }),
        ErpAuth::NetsuiteM2m {
            client_id,
            certificate_id,
            private_key: key,
            algorithm: JwtAlgorithm::Es256,
            token_url: None,
        },
    )
}

/// A NetSuite TBA token set: (simulator credential, tenant auth).
pub fn netsuite_tba(secrets: &mut Secrets, name: &str) -> (Value, ErpAuth) {
    let value = |part: &str| format!("{part}-{name}-{}", uuid::Uuid::new_v4().simple());
    let (ck, cs, tk, ts) = (value("ck"), value("cs"), value("tk"), value("ts"));
    let auth = ErpAuth::NetsuiteTba {
        consumer_key: secrets.put(&format!("NS_CK_{name}"), &ck),
        consumer_secret: secrets.put(&format!("NS_CS_{name}"), &cs),
        token_id: secrets.put(&format!("NS_TK_{name}"), &tk),
        token_secret: secrets.put(&format!("NS_TS_{name}"), &ts),
    };
    (
        json!({ "consumer_key": ck, "consumer_secret": cs, "token_id": tk, "token_secret": ts }),
        auth,
    )
}

/// A tenant on the simulator's NetSuite account `account`.
pub fn netsuite_tenant(
    sim: &Sim,
    id: &str,
    account: &str,
    auth: ErpAuth,
    mode: ErpMode,
    limits: Option<AccountLimits>,
) -> TenantConfig {
    let mut t = tenant(id, None, None);
    t.erp = Some(ErpTarget {
        kind: ErpKind::Netsuite,
        account: account.to_owned(),
        base_url: format!("{}/netsuite/{account}", sim.url),
        mode,
        auth,
        netsuite: Some(NetsuiteMapping {
            subsidiary: "1".into(),
            default_item: Some("501".into()),
            items: BTreeMap::from([("4100".into(), "502".into())]),
        }),
        dynamics365: None,
        s4hana: None,
        oracle_fusion: None,
        limits,
        config_version: "cfg-sim".into(),
    });
    t
}

/// Provisions D365 environment `env` with one client and returns a tenant posting to it.
pub async fn d365_tenant(
    sim: &Sim,
    secrets: &mut Secrets,
    id: &str,
    env: &str,
    mode: ErpMode,
) -> TenantConfig {
    let client_id = format!("app-{id}");
    let secret = format!("secret-{id}-{}", uuid::Uuid::new_v4().simple());
    sim.provision(json!({
        "erp": "d365", "account": env, "default_company": "usmf",
        "credentials": { "tenant_id": "dir-1", "clients": [
            { "client_id": client_id, "client_secret": secret } ] }
    }))
    .await;
    let reference = secrets.put(&format!("D365_{id}"), &secret);
    let mut t = tenant(id, None, None);
    t.erp = Some(ErpTarget {
        kind: ErpKind::Dynamics365,
        account: env.to_owned(),
        base_url: format!("{}/d365/{env}", sim.url),
        mode,
        auth: ErpAuth::Oauth2ClientCredentials {
            token_url: format!("{}/d365/login/dir-1/oauth2/v2.0/token", sim.url),
            client_id,
            client_secret: reference,
            scope: Some(format!("https://{env}.operations.dynamics.com/.default")),
        },
        netsuite: None,
        // The tenant's company is not the integration's default one: lookups must say
        // cross-company=true to see it.
        dynamics365: Some(Dynamics365Mapping {
            data_area_id: "demf".into(),
            journal_name: "GenJrn".into(),
            payment_journal_name: Some("CustPay".into()),
        }),
        s4hana: None,
        oracle_fusion: None,
        limits: None,
        config_version: "cfg-sim".into(),
    });
    t
}

/// Dispatcher settings for the simulator: short backoffs and a 1 s request timeout.
pub fn config(secrets: &Secrets) -> DispatcherConfig {
    DispatcherConfig {
        concurrency: 16,
        request_timeout: Duration::from_millis(1000),
        max_attempts: 12,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        lease: Duration::from_secs(10),
        poll_interval: Duration::from_millis(20),
        exit_when_idle: true,
        env: Some(secrets.0.clone()),
        ..DispatcherConfig::default()
    }
}

/// Runs a dispatcher until nothing is pending (at most `limit`); returns how long it took.
pub async fn drain(
    db: &TestDb,
    backend: Backend,
    cfg: DispatcherConfig,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let dispatcher = Dispatcher::new(db.pool.clone(), backend, cfg).expect("dispatcher");
    tokio::time::timeout(limit, dispatcher.run(std::future::pending()))
        .await
        .expect("the outbox drains in time")
        .expect("dispatcher");
    started.elapsed()
}

/// Postings by status for a tenant.
pub async fn statuses(db: &TestDb, tenant: &str) -> BTreeMap<String, i64> {
    let rows = sqlx::query(
        "SELECT status, CAST(COUNT(*) AS BIGINT) FROM erp_outbox WHERE tenant_id = $1 GROUP BY status",
    )
    .bind(tenant.to_owned())
    .fetch_all(&db.pool)
    .await
    .expect("statuses");
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// (status, class, last error, history) of every posting of a tenant.
pub async fn postings(
    db: &TestDb,
    tenant: &str,
) -> Vec<(String, Option<String>, Option<String>, Value)> {
    let rows = sqlx::query(
        "SELECT status, last_error_class, last_error, history FROM erp_outbox WHERE tenant_id = $1
         ORDER BY id",
    )
    .bind(tenant.to_owned())
    .fetch_all(&db.pool)
    .await
    .expect("postings");
    rows.iter()
        .map(|r| {
            let history: Option<String> = r.get(3);
            (
                r.get(0),
                r.get(1),
                r.get(2),
                history
                    .and_then(|h| serde_json::from_str(&h).ok())
                    .unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// Invoice and payment events of `tenant`, numbered from `first` (event ids are global).
pub fn invoices_and_payments(tenant: &str, first: u64, pairs: u64) -> Vec<ledgerflow_core::Event> {
    let mut events = Vec::new();
    for i in 0..pairs {
        let n = first + 2 * i;
        let inv = format!("inv-{n}");
        events.push(super::invoice(tenant, n, &inv, 1_000 + i as i64, 70));
        events.push(super::payment(
            tenant,
            n + 1,
            &format!("pay-{n}"),
            &inv,
            1_070 + i as i64,
            30,
        ));
    }
    events
}

impl Sim {
    /// S/4 bulk messages, Fusion ESS jobs and NetSuite async jobs of one ERP (and account).
    pub async fn jobs(&self, erp: &str, account: Option<&str>) -> Vec<Value> {
        let account = account.map(|a| format!("&account={a}")).unwrap_or_default();
        self.get(&format!("/_sim/jobs?erp={erp}{account}")).await["jobs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A communication user for tenant `id`: (simulator credential, tenant auth).
pub fn s4_user(secrets: &mut Secrets, id: &str) -> (Value, ErpAuth) {
    let user = format!("COMM_{}", id.to_uppercase());
    let password = format!("pw-{id}-{}", uuid::Uuid::new_v4().simple());
    (
        json!({ "user": user, "password": password }),
        ErpAuth::Basic {
            user,
            password: secrets.put(&format!("S4_{id}"), &password),
        },
    )
}

/// Provisions S/4HANA system `system` with these communication users (replacing its users).
pub async fn provision_s4(sim: &Sim, system: &str, users: &[Value]) {
    sim.provision(json!({ "erp": "s4hana", "account": system,
        "credentials": { "users": users } }))
        .await;
}

/// A tenant posting to S/4HANA system `system`.
pub fn s4_tenant(sim: &Sim, id: &str, system: &str, auth: ErpAuth, mode: ErpMode) -> TenantConfig {
    let mut t = tenant(id, None, None);
    t.erp = Some(ErpTarget {
        kind: ErpKind::S4hana,
        account: system.to_owned(),
        base_url: format!("{}/s4hana/{system}", sim.url),
        mode,
        auth,
        netsuite: None,
        dynamics365: None,
        s4hana: Some(S4hanaMapping {
            company_code: "1010".into(),
            document_type: "SA".into(),
        }),
        oracle_fusion: None,
        limits: None,
        config_version: "cfg-sim".into(),
    });
    t
}

/// How a Fusion tenant signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusionAuth {
    /// The integration user (basic).
    Basic,
    /// OAuth 2.0 client credentials at the pod's token endpoint.
    Oauth,
}

/// A Fusion integration user or OAuth client for tenant `id` on pod `pod`: (simulator
/// credentials, tenant auth).
pub fn fusion_login(
    sim: &Sim,
    secrets: &mut Secrets,
    id: &str,
    pod: &str,
    auth: FusionAuth,
) -> (Value, ErpAuth) {
    let secret = format!("pw-{id}-{}", uuid::Uuid::new_v4().simple());
    let reference = secrets.put(&format!("FUSION_{id}"), &secret);
    match auth {
        FusionAuth::Basic => (
            json!({ "users": [{ "user": format!("int-{id}"), "password": secret }] }),
            ErpAuth::Basic {
                user: format!("int-{id}"),
                password: reference,
            },
        ),
        FusionAuth::Oauth => (
            json!({ "clients": [{ "client_id": format!("client-{id}"), "client_secret": secret }] }),
            ErpAuth::Oauth2ClientCredentials {
                token_url: format!("{}/fusion/{pod}/oauth2/v1/token", sim.url),
                client_id: format!("client-{id}"),
                client_secret: reference,
                scope: None,
            },
        ),
    }
}

/// Provisions Fusion pod `pod` with every user and client of `logins` (replacing its
/// credentials).
pub async fn provision_fusion(sim: &Sim, pod: &str, logins: &[&Value]) {
    let mut users = Vec::new();
    let mut clients = Vec::new();
    for login in logins {
        users.extend(login["users"].as_array().cloned().unwrap_or_default());
        clients.extend(login["clients"].as_array().cloned().unwrap_or_default());
    }
    sim.provision(json!({ "erp": "fusion", "account": pod,
        "credentials": { "users": users, "clients": clients } }))
        .await;
}

/// A tenant posting to Fusion pod `pod`; `concurrency` is the pod's `[[erp_accounts]]` limit
/// (the most postings one zip can gather).
pub fn fusion_tenant(
    sim: &Sim,
    id: &str,
    pod: &str,
    auth: ErpAuth,
    mode: ErpMode,
    concurrency: u32,
) -> TenantConfig {
    let mut t = tenant(id, None, None);
    t.erp = Some(ErpTarget {
        kind: ErpKind::OracleFusion,
        account: pod.to_owned(),
        base_url: format!("{}/fusion/{pod}", sim.url),
        mode,
        auth,
        netsuite: None,
        dynamics365: None,
        s4hana: None,
        oracle_fusion: Some(OracleFusionMapping {
            ledger: "300000046975971".into(),
            business_unit: "US1 Business Unit".into(),
            journal_source: "ledgerflow".into(),
            journal_category: "Sales".into(),
        }),
        limits: Some(AccountLimits {
            concurrency,
            rate_per_sec: None,
        }),
        config_version: "cfg-sim".into(),
    });
    t
}

/// [`config`] with asynchronous jobs polled every 200 ms.
pub fn async_config(secrets: &Secrets) -> DispatcherConfig {
    DispatcherConfig {
        job_poll_interval: Duration::from_millis(200),
        ..config(secrets)
    }
}

/// [`drain`] with exactly these adapters instead of the built-in ones.
pub async fn drain_with(
    db: &TestDb,
    backend: Backend,
    cfg: DispatcherConfig,
    adapters: Vec<std::sync::Arc<dyn ledgerflow_erp_receivables::ErpAdapter>>,
    limit: Duration,
) -> Duration {
    let started = Instant::now();
    let dispatcher =
        Dispatcher::with_adapters(db.pool.clone(), backend, cfg, adapters).expect("dispatcher");
    tokio::time::timeout(limit, dispatcher.run(std::future::pending()))
        .await
        .expect("the outbox drains in time")
        .expect("dispatcher");
    started.elapsed()
}

/// Postings of a tenant by external id: (status, class, last error, job reference).
pub async fn postings_by_ref(
    db: &TestDb,
    tenant: &str,
) -> BTreeMap<String, (String, Option<String>, Option<String>, Option<String>)> {
    let rows = sqlx::query(
        "SELECT external_id, status, last_error_class, last_error, job_ref FROM erp_outbox
         WHERE tenant_id = $1",
    )
    .bind(tenant.to_owned())
    .fetch_all(&db.pool)
    .await
    .expect("postings");
    rows.iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
        .collect()
}

/// Replaces the stored document of the posting `external_id` (a test's way to make the ERP
/// refuse one document).
pub async fn tamper(db: &TestDb, external_id: &str, edit: impl FnOnce(&mut Value)) {
    let row = sqlx::query("SELECT payload FROM erp_outbox WHERE external_id = $1")
        .bind(external_id.to_owned())
        .fetch_one(&db.pool)
        .await
        .expect("posting");
    let mut document: Value = serde_json::from_str(&row.get::<String, _>(0)).expect("json");
    edit(&mut document);
    sqlx::query("UPDATE erp_outbox SET payload = $1 WHERE external_id = $2")
        .bind(document.to_string())
        .bind(external_id.to_owned())
        .execute(&db.pool)
        .await
        .expect("tamper");
}

/// Every stored secret value absent from every text column of the outbox.
pub async fn assert_no_secret_stored(db: &TestDb, secrets: &Secrets) {
    let rows = sqlx::query(
        "SELECT last_error, last_request, last_response, route, credential, history
         FROM erp_outbox",
    )
    .fetch_all(&db.pool)
    .await
    .expect("outbox");
    for row in rows {
        for i in 0..6 {
            let text: Option<String> = row.get(i);
            let text = text.unwrap_or_default();
            for secret in secrets.0.values() {
                assert!(
                    !text.contains(secret.trim()),
                    "secret stored in column {i}: {text}"
                );
            }
        }
    }
}
