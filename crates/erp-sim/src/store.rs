//! Stored documents, asynchronous jobs and provisioned accounts, persisted as an append-only
//! JSON-lines log (`DIR/state.jsonl`) so a restarted simulator sees everything the previous run
//! committed. Every change is appended (and flushed) before the HTTP answer is produced: that is
//! what makes "commit, then drop the connection" faults honest.
//!
//! The store never deduplicates on its own: each ERP module decides, as the real ERP does, whether
//! a key must be unique. Duplicates are only *counted* here, for the report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::SimError;

/// The four simulated ERPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Erp {
    /// Oracle NetSuite, SuiteTalk REST web services.
    #[serde(rename = "netsuite")]
    NetSuite,
    /// Microsoft Dynamics 365 Finance & Operations, OData v4.
    #[serde(rename = "d365")]
    D365,
    /// SAP S/4HANA, SOAP journal entry services and OData read-back.
    #[serde(rename = "s4hana")]
    S4Hana,
    /// Oracle Fusion Cloud Financials, erpintegrations + FBDI.
    #[serde(rename = "fusion")]
    Fusion,
}

impl Erp {
    /// All ERPs, in report order.
    pub const ALL: [Erp; 4] = [Erp::NetSuite, Erp::D365, Erp::S4Hana, Erp::Fusion];

    /// The lowercase name used in paths, JSON and the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Erp::NetSuite => "netsuite",
            Erp::D365 => "d365",
            Erp::S4Hana => "s4hana",
            Erp::Fusion => "fusion",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(name: &str) -> Option<Erp> {
        Erp::ALL
            .into_iter()
            .find(|erp| erp.as_str().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for Erp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored record. Documents with `parent == None` are the business documents the report
/// counts (a journal, an invoice, a payment); child records (D365 journal lines) point at theirs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Document {
    /// Simulator-wide id, `{erp}-{seq}`.
    pub id: String,
    /// Monotonic sequence number, also the source of ERP-visible ids.
    pub seq: u64,
    /// The ERP that stored it.
    pub erp: Erp,
    /// The account (NetSuite account id, D365 environment, S/4 system, Fusion pod).
    pub account: String,
    /// Record type / entity set / document class, e.g. `journalEntry`, `LedgerJournalHeaders`.
    pub kind: String,
    /// The id the ERP handed back (internal id, JournalBatchNumber, AccountingDocument, ...).
    pub erp_id: String,
    /// The ERP's own natural key when the client supplied one (externalId, flexfield, ...).
    #[serde(default)]
    pub erp_key: Option<String>,
    /// ledgerflow's source reference as parsed from the field PROTOCOLS.md names for this ERP.
    #[serde(default)]
    pub source_ref: Option<String>,
    /// The owning document for child records.
    #[serde(default)]
    pub parent: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_ms: u64,
    /// Last update time, ms since the epoch.
    pub updated_ms: u64,
    /// 1 on create, +1 per update (NetSuite upsert, PATCH).
    pub version: u32,
    /// The record as the ERP would return it.
    pub body: Value,
}

/// An asynchronous unit of work: an S/4 bulk message, a Fusion ESS job, a NetSuite async job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// Simulator-wide id, `job-{seq}`.
    pub id: String,
    /// Sequence number (also the Fusion ESS request id and NetSuite job id).
    pub seq: u64,
    /// The ERP that owns the job.
    pub erp: Erp,
    /// The account that submitted it.
    pub account: String,
    /// `s4_bulk`, `fusion_import`, `netsuite_async`.
    pub kind: String,
    /// A client-visible key: the S/4 message id, the NetSuite idempotency key.
    #[serde(default)]
    pub key: Option<String>,
    /// Submission time, ms since the epoch.
    pub created_ms: u64,
    /// The job is processed at or after this time.
    pub ready_ms: u64,
    /// Whether it has been processed.
    pub done: bool,
    /// What was submitted, in a form the processor understands.
    pub input: Value,
    /// The outcome once `done`.
    #[serde(default)]
    pub result: Value,
}

/// A NetSuite OAuth 2.0 client-credentials (M2M) mapping: the integration's client id and the
/// public part of the certificate uploaded for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct M2mClient {
    /// The integration record's client id (the JWT `iss`).
    pub client_id: String,
    /// The certificate id NetSuite generated for the mapping (the JWT header `kid`).
    pub certificate_id: String,
    /// The public key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), P-256 or RSA.
    pub public_key_pem: String,
}

/// A NetSuite token-based-authentication (OAuth 1.0a) credential set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TbaToken {
    /// Integration record consumer key.
    pub consumer_key: String,
    /// Integration record consumer secret.
    pub consumer_secret: String,
    /// Access token id.
    pub token_id: String,
    /// Access token secret.
    pub token_secret: String,
}

/// An OAuth client id + secret (Entra ID app registration, Fusion/IAM confidential app).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSecret {
    /// Client (application) id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: String,
}

/// A basic-auth user (S/4 communication user, Fusion integration user).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicUser {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

/// Credentials of one account; which fields apply depends on the ERP (see PROTOCOLS.md).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// NetSuite M2M mappings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub m2m: Vec<M2mClient>,
    /// NetSuite TBA token sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tba: Vec<TbaToken>,
    /// D365: the Entra ID tenant (directory) id used in the token URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// D365: the environment URL the token is for; the scope must be `{resource}/.default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// D365 app registrations, Fusion OAuth clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<ClientSecret>,
    /// S/4 communication users, Fusion users.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<BasicUser>,
}

/// A provisioned account of one ERP.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The ERP.
    pub erp: Erp,
    /// Account name: NetSuite account id (realm), D365 environment, S/4 system, Fusion pod.
    pub account: String,
    /// Its credentials.
    #[serde(default)]
    pub credentials: Credentials,
    /// D365: the user's default company (dataAreaId); reads without `cross-company=true` see
    /// only this company, as in D365. Defaults to `usmf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_company: Option<String>,
    /// D365: the legal entities (companies, `dataAreaId`) the environment has; a write to any
    /// other is refused, as D365 refuses it. Without it: [`D365_DEMO_COMPANIES`], the Contoso
    /// demo data a sandbox environment comes with. The default company is always one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub companies: Option<Vec<String>>,
}

/// Legal entities of the Contoso demo data (a subset) that a D365 sandbox environment holds:
/// the companies of an environment provisioned without `companies`.
pub const D365_DEMO_COMPANIES: [&str; 16] = [
    "dat", "usmf", "uspi", "usrt", "ussi", "demf", "gbsi", "gbpm", "frsi", "frrt", "jpmf", "cnmf",
    "brmf", "mxmf", "itco", "inmf",
];

impl Account {
    /// Checks that the account carries the credentials its ERP needs.
    pub fn validate(&self) -> Result<(), SimError> {
        let fail = |reason: &str| SimError::InvalidAccount {
            erp: self.erp.to_string(),
            account: self.account.clone(),
            reason: reason.to_owned(),
        };
        if self.account.is_empty() || self.account.contains('/') {
            return Err(fail("account name must be non-empty and contain no '/'"));
        }
        let c = &self.credentials;
        match self.erp {
            Erp::NetSuite => {
                if c.m2m.is_empty() && c.tba.is_empty() {
                    return Err(fail("netsuite needs m2m and/or tba credentials"));
                }
                for client in &c.m2m {
                    crate::auth::PublicKey::from_pem(&client.public_key_pem)
                        .map_err(|e| fail(&format!("m2m {}: {e}", client.client_id)))?;
                }
            }
            Erp::D365 => {
                if c.tenant_id.as_deref().unwrap_or("").is_empty() || c.clients.is_empty() {
                    return Err(fail("d365 needs tenant_id and clients"));
                }
            }
            Erp::S4Hana => {
                if c.users.is_empty() {
                    return Err(fail("s4hana needs users"));
                }
            }
            Erp::Fusion => {
                if c.users.is_empty() && c.clients.is_empty() {
                    return Err(fail("fusion needs users and/or clients"));
                }
            }
        }
        Ok(())
    }

    /// The D365 resource (environment URL) tokens are issued for.
    pub fn d365_resource(&self) -> String {
        self.credentials
            .resource
            .clone()
            .unwrap_or_else(|| format!("https://{}.operations.dynamics.com", self.account))
    }

    /// The D365 default company, lowercase.
    pub fn company(&self) -> String {
        self.default_company
            .as_deref()
            .unwrap_or("usmf")
            .to_ascii_lowercase()
    }

    /// Whether the D365 environment has the legal entity `company` (`dataAreaId`, compared
    /// case-insensitively, as D365 does).
    pub fn has_company(&self, company: &str) -> bool {
        if company.eq_ignore_ascii_case(&self.company()) {
            return true;
        }
        match &self.companies {
            Some(companies) => companies.iter().any(|c| c.eq_ignore_ascii_case(company)),
            None => D365_DEMO_COMPANIES
                .iter()
                .any(|c| c.eq_ignore_ascii_case(company)),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum LogEntry {
    Docs {
        docs: Vec<Document>,
    },
    Job {
        job: Job,
    },
    Account {
        account: Account,
    },
    /// Documents removed through the admin API (`DELETE /_sim/documents/{id}`), children
    /// included; no ERP API deletes anything.
    Deleted {
        ids: Vec<String>,
    },
}

#[derive(Debug, Default)]
struct Inner {
    docs: Vec<Document>,
    doc_index: HashMap<String, usize>,
    jobs: Vec<Job>,
    job_index: HashMap<String, usize>,
    accounts: BTreeMap<(Erp, String), Account>,
    next_seq: u64,
    log: Option<File>,
    log_path: PathBuf,
}

/// Duplicate statistics of one (erp, account).
#[derive(Clone, Debug, Default, Serialize)]
pub struct DupStats {
    /// Top-level documents stored.
    pub documents: u64,
    /// Keys (ERP key or source reference) held by two or more documents.
    pub duplicates: u64,
    /// The duplicated keys and the documents holding each.
    pub keys: Vec<DuplicateKey>,
}

/// One duplicated key.
#[derive(Clone, Debug, Serialize)]
pub struct DuplicateKey {
    /// The normalised key (lowercase).
    pub key: String,
    /// Ids of the documents that carry it.
    pub documents: Vec<String>,
}

/// The document/job/account store.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
}

/// Normalises a key for duplicate detection: trimmed, lowercase (NetSuite external ids are
/// case-insensitive; the other keys are compared the same way so a case slip is still caught).
pub fn norm_key(key: &str) -> String {
    key.trim().to_lowercase()
}

pub(crate) fn now_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the state directory and replays its log.
    pub fn open(dir: &Path) -> Result<Store, SimError> {
        std::fs::create_dir_all(dir).map_err(|source| SimError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let log_path = dir.join("state.jsonl");
        let mut inner = Inner {
            next_seq: 1000,
            log_path: log_path.clone(),
            ..Inner::default()
        };
        if log_path.exists() {
            let file = File::open(&log_path).map_err(|source| SimError::Io {
                path: log_path.clone(),
                source,
            })?;
            for (n, line) in BufReader::new(file).lines().enumerate() {
                let line = line.map_err(|source| SimError::Io {
                    path: log_path.clone(),
                    source,
                })?;
                if line.trim().is_empty() {
                    continue;
                }
                // A crash can leave a half-written last line; everything before it is intact.
                let entry: LogEntry = match serde_json::from_str(&line) {
                    Ok(entry) => entry,
                    Err(source) => {
                        tracing::warn!(line = n + 1, error = %source, "skipping corrupt state line");
                        continue;
                    }
                };
                inner.apply(entry);
            }
        }
        let accounts_file = dir.join("accounts.json");
        if accounts_file.exists() {
            let text = std::fs::read_to_string(&accounts_file).map_err(|source| SimError::Io {
                path: accounts_file.clone(),
                source,
            })?;
            let accounts: Vec<Account> =
                serde_json::from_str(&text).map_err(|source| SimError::Corrupt {
                    path: accounts_file.clone(),
                    line: 1,
                    source,
                })?;
            for account in accounts {
                account.validate()?;
                inner
                    .accounts
                    .insert((account.erp, account.account.clone()), account);
            }
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|source| SimError::Io {
                path: log_path.clone(),
                source,
            })?;
        inner.log = Some(log);
        Ok(Store {
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the whole simulator, so poisoning is ignored.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves the next sequence number (ids are derived from it).
    pub fn next_seq(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_seq += 1;
        inner.next_seq
    }

    /// Stores new or updated documents atomically (one log line) and returns them.
    pub fn put_docs(&self, docs: Vec<Document>) -> Result<(), SimError> {
        if docs.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        inner.append(&LogEntry::Docs { docs: docs.clone() })?;
        inner.apply(LogEntry::Docs { docs });
        Ok(())
    }

    /// Stores a new or updated job.
    pub fn put_job(&self, job: Job) -> Result<(), SimError> {
        let mut inner = self.lock();
        inner.append(&LogEntry::Job { job: job.clone() })?;
        inner.apply(LogEntry::Job { job });
        Ok(())
    }

    /// Adds or replaces an account.
    pub fn put_account(&self, account: Account) -> Result<(), SimError> {
        account.validate()?;
        let mut inner = self.lock();
        inner.append(&LogEntry::Account {
            account: account.clone(),
        })?;
        inner.apply(LogEntry::Account { account });
        Ok(())
    }

    /// One account.
    pub fn account(&self, erp: Erp, account: &str) -> Option<Account> {
        self.lock()
            .accounts
            .get(&(erp, account.to_owned()))
            .cloned()
    }

    /// All accounts of an ERP (or of all ERPs).
    pub fn accounts(&self, erp: Option<Erp>) -> Vec<Account> {
        let inner = self.lock();
        inner
            .accounts
            .values()
            .filter(|a| erp.is_none_or(|e| a.erp == e))
            .cloned()
            .collect()
    }

    /// A document by simulator id.
    pub fn doc(&self, id: &str) -> Option<Document> {
        let inner = self.lock();
        inner
            .doc_index
            .get(id)
            .and_then(|&i| inner.docs.get(i))
            .cloned()
    }

    /// Documents matching a predicate, in creation order.
    pub fn find_docs(&self, mut pred: impl FnMut(&Document) -> bool) -> Vec<Document> {
        self.lock()
            .docs
            .iter()
            .filter(|d| pred(d))
            .cloned()
            .collect()
    }

    /// Removes a document and its child records (admin API only: tests that need the ERP to
    /// have lost a document). Returns the ids removed; empty when there was no such document.
    pub fn delete_doc(&self, id: &str) -> Result<Vec<String>, SimError> {
        let mut inner = self.lock();
        if !inner.doc_index.contains_key(id) {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = inner
            .docs
            .iter()
            .filter(|d| d.id == id || d.parent.as_deref() == Some(id))
            .map(|d| d.id.clone())
            .collect();
        let entry = LogEntry::Deleted { ids: ids.clone() };
        inner.append(&entry)?;
        inner.apply(entry);
        Ok(ids)
    }

    /// A job by id.
    pub fn job(&self, id: &str) -> Option<Job> {
        let inner = self.lock();
        inner
            .job_index
            .get(id)
            .and_then(|&i| inner.jobs.get(i))
            .cloned()
    }

    /// Jobs matching a predicate.
    pub fn find_jobs(&self, mut pred: impl FnMut(&Job) -> bool) -> Vec<Job> {
        self.lock()
            .jobs
            .iter()
            .filter(|j| pred(j))
            .cloned()
            .collect()
    }

    /// Document and duplicate statistics per (erp, account).
    pub fn dup_stats(&self) -> BTreeMap<(Erp, String), DupStats> {
        let inner = self.lock();
        let mut groups: BTreeMap<(Erp, String), BTreeMap<String, Vec<String>>> = BTreeMap::new();
        let mut stats: BTreeMap<(Erp, String), DupStats> = BTreeMap::new();
        for doc in inner.docs.iter().filter(|d| d.parent.is_none()) {
            let slot = (doc.erp, doc.account.clone());
            stats.entry(slot.clone()).or_default().documents += 1;
            // One document counts once per distinct key even when its ERP key and its source
            // reference are the same string.
            let keys: HashSet<String> = [&doc.erp_key, &doc.source_ref]
                .into_iter()
                .flatten()
                .map(|k| norm_key(k))
                .filter(|k| !k.is_empty())
                .collect();
            let by_key = groups.entry(slot).or_default();
            for key in keys {
                by_key.entry(key).or_default().push(doc.id.clone());
            }
        }
        for (slot, by_key) in groups {
            let entry = stats.entry(slot).or_default();
            for (key, documents) in by_key {
                if documents.len() >= 2 {
                    entry.duplicates += 1;
                    entry.keys.push(DuplicateKey { key, documents });
                }
            }
        }
        stats
    }
}

impl Inner {
    fn append(&mut self, entry: &LogEntry) -> Result<(), SimError> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        let path = self.log_path.clone();
        if let Some(log) = self.log.as_mut() {
            // Small appends to the page cache: cheap enough to do under the lock on the async
            // thread, and they must complete before the ERP answer is produced.
            log.write_all(&line)
                .and_then(|()| log.flush())
                .map_err(|source| SimError::Io { path, source })?;
        }
        Ok(())
    }

    fn apply(&mut self, entry: LogEntry) {
        match entry {
            LogEntry::Docs { docs } => {
                for doc in docs {
                    self.next_seq = self.next_seq.max(doc.seq);
                    match self.doc_index.get(&doc.id) {
                        Some(&i) => {
                            if let Some(slot) = self.docs.get_mut(i) {
                                *slot = doc;
                            }
                        }
                        None => {
                            self.doc_index.insert(doc.id.clone(), self.docs.len());
                            self.docs.push(doc);
                        }
                    }
                }
            }
            LogEntry::Job { job } => {
                self.next_seq = self.next_seq.max(job.seq);
                match self.job_index.get(&job.id) {
                    Some(&i) => {
                        if let Some(slot) = self.jobs.get_mut(i) {
                            *slot = job;
                        }
                    }
                    None => {
                        self.job_index.insert(job.id.clone(), self.jobs.len());
                        self.jobs.push(job);
                    }
                }
            }
            LogEntry::Account { account } => {
                self.accounts
                    .insert((account.erp, account.account.clone()), account);
            }
            LogEntry::Deleted { ids } => {
                let gone: HashSet<String> = ids.into_iter().collect();
                self.docs.retain(|d| !gone.contains(&d.id));
                self.doc_index = self
                    .docs
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (d.id.clone(), i))
                    .collect();
            }
        }
    }
}

/// Builds a new top-level document with a fresh sequence number.
pub(crate) struct NewDoc {
    pub(crate) erp: Erp,
    pub(crate) account: String,
    pub(crate) kind: String,
    pub(crate) erp_key: Option<String>,
    pub(crate) source_ref: Option<String>,
    pub(crate) parent: Option<String>,
    pub(crate) body: Value,
}

impl NewDoc {
    /// Turns the draft into a document; `erp_id` is derived from the sequence number.
    pub(crate) fn build(self, seq: u64, erp_id: String) -> Document {
        let now = now_ms();
        Document {
            id: format!("{}-{seq}", self.erp),
            seq,
            erp: self.erp,
            account: self.account,
            kind: self.kind,
            erp_id,
            erp_key: self.erp_key.filter(|k| !k.trim().is_empty()),
            source_ref: self.source_ref.filter(|k| !k.trim().is_empty()),
            parent: self.parent,
            created_ms: now,
            updated_ms: now,
            version: 1,
            body: self.body,
        }
    }
}
