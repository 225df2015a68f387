//! The registry's behaviour, independent of HTTP: Confluent's rules for ids, versions, soft and
//! permanent deletes, compatibility levels, written against the [`Store`].
//!
//! Writes (registrations, deletes, config changes) are rare and go through one async mutex, so a
//! registration's read-check-insert sequence cannot interleave with another in this process;
//! two identical concurrent registrations therefore get one id. Reads never take it.
//! `GET /schemas/ids/{id}`, the hot path of every consumer with a cold cache, is served from an
//! in-memory map that is safe to keep forever because ids are never reassigned.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use apache_avro::Schema;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::RegistryError;
use crate::compat::{self, CompatibilityLevel, EarlierVersion};
use crate::rejection::Rejection;
use crate::schema::{self, CanonicalSchema};
use crate::store::{GLOBAL, Store, VersionRow};

/// A running registry: the store, the id cache and the write lock. Cheap to clone; every clone
/// shares the same registry.
#[derive(Debug, Clone)]
pub struct RegistryState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    /// Schema id -> schema text. Filled on registration and on cache misses.
    schemas_by_id: RwLock<HashMap<i64, Arc<str>>>,
    /// Serializes writes (see the module docs).
    writes: Mutex<()>,
}

/// The body of register, lookup and compatibility requests. Unknown fields (`metadata`,
/// `ruleSet`, `id`, `version`...) are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SchemaRequest {
    #[serde(default)]
    schema: Option<String>,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<serde_json::Value>>,
}

impl SchemaRequest {
    fn canonical(&self) -> Result<CanonicalSchema, Rejection> {
        if let Some(kind) = self.schema_type.as_deref()
            && !kind.eq_ignore_ascii_case("AVRO")
        {
            return Err(Rejection::InvalidSchema(format!(
                "schema type {kind} is not supported, only AVRO"
            )));
        }
        if self
            .references
            .as_ref()
            .is_some_and(|refs| !refs.is_empty())
        {
            return Err(Rejection::InvalidSchema(
                "schema references are not supported".into(),
            ));
        }
        let text = self.schema.as_deref().unwrap_or_default();
        if text.trim().is_empty() {
            return Err(Rejection::InvalidSchema("empty schema".into()));
        }
        CanonicalSchema::parse(text).map_err(Rejection::InvalidSchema)
    }
}

/// A version path segment: a number in [1, 2^31-1], or `latest` / `-1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionSpec {
    Latest,
    Number(i64),
}

impl VersionSpec {
    pub(crate) fn parse(text: &str) -> Result<Self, Rejection> {
        let trimmed = text.trim();
        if trimmed.eq_ignore_ascii_case("latest") {
            return Ok(Self::Latest);
        }
        match trimmed.parse::<i64>() {
            Ok(-1) => Ok(Self::Latest),
            Ok(n) if (1..=i64::from(i32::MAX)).contains(&n) => Ok(Self::Number(n)),
            _ => Err(Rejection::InvalidVersion(text.to_owned())),
        }
    }
}

/// One version of a subject as Confluent returns it (GET version, lookup).
#[derive(Debug, Serialize)]
pub(crate) struct SubjectVersion {
    pub(crate) subject: String,
    pub(crate) version: i64,
    pub(crate) id: i64,
    pub(crate) schema: String,
}

/// The outcome of a compatibility test.
#[derive(Debug)]
pub(crate) struct CompatibilityVerdict {
    pub(crate) is_compatible: bool,
    pub(crate) messages: Vec<String>,
}

impl RegistryState {
    /// Opens the store and creates its tables.
    pub(crate) async fn open(database_url: &str) -> Result<Self, RegistryError> {
        let store = Store::open(database_url).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                schemas_by_id: RwLock::new(HashMap::new()),
                writes: Mutex::new(()),
            }),
        })
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    /// POST /subjects/{subject}/versions: the id of the schema under `subject`, registering a
    /// new version when the subject does not have it yet.
    pub(crate) async fn register(
        &self,
        subject: &str,
        request: &SchemaRequest,
    ) -> Result<i64, Rejection> {
        let candidate = request.canonical()?;
        let _write = self.inner.writes.lock().await;
        let history = self.store().subject_history(subject).await?;
        let known_id = self.store().schema_id(&candidate.fingerprint).await?;
        // Already a live version of this subject: same id, no new version. A soft-deleted
        // version with the same schema does not count; Confluent registers it again.
        if let Some(id) = known_id
            && history.iter().any(|v| !v.deleted && v.schema_id == id)
        {
            return Ok(id);
        }

        let level = self.effective_level(subject).await?;
        let live: Vec<&VersionRow> = history.iter().filter(|v| !v.deleted).collect();
        let against = parse_versions(level.versions_to_check(&live))?;
        let details = compat::check(level, &candidate.parsed, &earlier_versions(&against));
        if !details.is_empty() {
            return Err(Rejection::Incompatible {
                subject: subject.to_owned(),
                details,
            });
        }

        // Versions keep counting past soft-deleted ones.
        let version = history.last().map_or(1, |v| v.version + 1);
        let id = self
            .store()
            .insert_version(subject, version, &candidate.fingerprint, &candidate.text)
            .await?;
        self.cache(id, Arc::from(candidate.text));
        tracing::info!(subject, version, id, "registered schema version");
        Ok(id)
    }

    /// POST /subjects/{subject}: the version of `subject` that has this schema.
    pub(crate) async fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
        include_deleted: bool,
    ) -> Result<SubjectVersion, Rejection> {
        let candidate = request.canonical()?;
        let history = self.visible_history(subject, include_deleted).await?;
        let id = self
            .store()
            .schema_id(&candidate.fingerprint)
            .await?
            .ok_or(Rejection::SchemaNotFound(None))?;
        let row = history
            .iter()
            .rev()
            .find(|v| v.schema_id == id)
            .ok_or(Rejection::SchemaNotFound(None))?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version: row.version,
            id,
            schema: row.text.clone(),
        })
    }

    /// GET /schemas/ids/{id}: the schema text, from the cache when possible.
    pub(crate) async fn schema_by_id(&self, id: i64) -> Result<Arc<str>, Rejection> {
        let cached = self
            .inner
            .schemas_by_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned();
        if let Some(text) = cached {
            return Ok(text);
        }
        let text: Arc<str> = self
            .store()
            .schema_text(id)
            .await?
            .ok_or(Rejection::SchemaNotFound(Some(id)))?
            .into();
        self.cache(id, Arc::clone(&text));
        Ok(text)
    }

    fn cache(&self, id: i64, text: Arc<str>) {
        self.inner
            .schemas_by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, text);
    }

    /// GET /schemas/ids/{id}/versions: (subject, version) pairs that use schema `id`.
    pub(crate) async fn schema_usages(
        &self,
        id: i64,
        include_deleted: bool,
    ) -> Result<Vec<(String, i64)>, Rejection> {
        self.schema_by_id(id).await?;
        let usages = self.store().schema_usages(id).await?;
        Ok(usages
            .into_iter()
            .filter(|(_, _, deleted)| include_deleted || !deleted)
            .map(|(subject, version, _)| (subject, version))
            .collect())
    }

    /// GET /subjects.
    pub(crate) async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>, Rejection> {
        Ok(self.store().subjects(include_deleted).await?)
    }

    /// GET /subjects/{subject}/versions.
    pub(crate) async fn versions(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<Vec<i64>, Rejection> {
        let history = self.visible_history(subject, include_deleted).await?;
        Ok(history.iter().map(|v| v.version).collect())
    }

    /// GET /subjects/{subject}/versions/{version}.
    pub(crate) async fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        include_deleted: bool,
    ) -> Result<SubjectVersion, Rejection> {
        let history = self.visible_history(subject, include_deleted).await?;
        let row = match spec {
            VersionSpec::Latest => history.last(),
            VersionSpec::Number(n) => history.iter().find(|v| v.version == n),
        };
        let row = row.ok_or_else(|| Rejection::VersionNotFound(spec_number(spec)))?;
        Ok(SubjectVersion {
            subject: subject.to_owned(),
            version: row.version,
            id: row.schema_id,
            schema: row.text.clone(),
        })
    }

    /// DELETE /subjects/{subject}: soft deletes every live version, or with `permanent` removes
    /// a subject whose versions were all soft deleted first. Returns the versions affected.
    pub(crate) async fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<i64>, Rejection> {
        let _write = self.inner.writes.lock().await;
        let history = self.store().subject_history(subject).await?;
        if history.is_empty() {
            return Err(Rejection::SubjectNotFound(subject.to_owned()));
        }
        let live: Vec<i64> = history
            .iter()
            .filter(|v| !v.deleted)
            .map(|v| v.version)
            .collect();
        if permanent {
            if !live.is_empty() {
                return Err(Rejection::SubjectNotSoftDeleted(subject.to_owned()));
            }
            let all: Vec<i64> = history.iter().map(|v| v.version).collect();
            self.store().hard_delete(subject, &all).await?;
            // A permanently deleted subject starts from scratch, configuration included.
            self.store().delete_config(subject).await?;
            tracing::info!(subject, versions = ?all, "permanently deleted subject");
            Ok(all)
        } else {
            if live.is_empty() {
                return Err(Rejection::SubjectSoftDeleted(subject.to_owned()));
            }
            self.store().soft_delete(subject, &live).await?;
            tracing::info!(subject, versions = ?live, "soft deleted subject");
            Ok(live)
        }
    }

    /// DELETE /subjects/{subject}/versions/{version}: soft deletes a live version, or with
    /// `permanent` removes a version that was soft deleted first. Returns the version.
    pub(crate) async fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<i64, Rejection> {
        let _write = self.inner.writes.lock().await;
        let history = self.store().subject_history(subject).await?;
        let row = match spec {
            // A soft delete of `latest` means the latest live version; a permanent one the
            // latest version there is, which is normally the one just soft deleted.
            VersionSpec::Latest if permanent => history.last(),
            VersionSpec::Latest => history.iter().rev().find(|v| !v.deleted).or(history.last()),
            VersionSpec::Number(n) => history.iter().find(|v| v.version == n),
        };
        let Some(row) = row else {
            return Err(if history.is_empty() {
                Rejection::SubjectNotFound(subject.to_owned())
            } else {
                Rejection::VersionNotFound(spec_number(spec))
            });
        };
        let version = row.version;
        if permanent {
            if !row.deleted {
                return Err(Rejection::VersionNotSoftDeleted {
                    subject: subject.to_owned(),
                    version,
                });
            }
            self.store().hard_delete(subject, &[version]).await?;
            tracing::info!(subject, version, "permanently deleted schema version");
        } else {
            if row.deleted {
                return Err(Rejection::VersionSoftDeleted {
                    subject: subject.to_owned(),
                    version,
                });
            }
            self.store().soft_delete(subject, &[version]).await?;
            tracing::info!(subject, version, "soft deleted schema version");
        }
        Ok(version)
    }

    /// GET /config.
    pub(crate) async fn global_level(&self) -> Result<CompatibilityLevel, Rejection> {
        Ok(self
            .stored_level(GLOBAL)
            .await?
            .unwrap_or(CompatibilityLevel::DEFAULT))
    }

    /// GET /config/{subject}.
    pub(crate) async fn subject_level(
        &self,
        subject: &str,
        default_to_global: bool,
    ) -> Result<CompatibilityLevel, Rejection> {
        match self.stored_level(subject).await? {
            Some(level) => Ok(level),
            None if default_to_global => self.global_level().await,
            None => Err(Rejection::SubjectLevelCompatibilityNotConfigured(
                subject.to_owned(),
            )),
        }
    }

    /// PUT /config and PUT /config/{subject} (`subject` = None for the global level).
    pub(crate) async fn set_level(
        &self,
        subject: Option<&str>,
        name: Option<&str>,
    ) -> Result<CompatibilityLevel, Rejection> {
        let level = name
            .and_then(CompatibilityLevel::parse)
            .ok_or(Rejection::InvalidCompatibilityLevel)?;
        let _write = self.inner.writes.lock().await;
        self.store()
            .set_config(subject.unwrap_or(GLOBAL), level.as_str())
            .await?;
        tracing::info!(subject = subject.unwrap_or("(global)"), %level, "set compatibility level");
        Ok(level)
    }

    /// DELETE /config/{subject}: forgets the subject's level and returns it. Like Confluent,
    /// answers "subject not found" when the subject has no level of its own.
    pub(crate) async fn delete_subject_level(
        &self,
        subject: &str,
    ) -> Result<CompatibilityLevel, Rejection> {
        let _write = self.inner.writes.lock().await;
        let previous = self
            .stored_level(subject)
            .await?
            .ok_or_else(|| Rejection::SubjectNotFound(subject.to_owned()))?;
        self.store().delete_config(subject).await?;
        Ok(previous)
    }

    /// POST /compatibility/subjects/{subject}/versions[/{version}]: is the candidate compatible
    /// with one version (`Some`), or with the versions a registration would be checked against
    /// (`None`)?
    pub(crate) async fn test_compatibility(
        &self,
        subject: &str,
        spec: Option<VersionSpec>,
        request: &SchemaRequest,
    ) -> Result<CompatibilityVerdict, Rejection> {
        let candidate = request.canonical()?;
        let history = self.store().subject_history(subject).await?;
        let live: Vec<&VersionRow> = history.iter().filter(|v| !v.deleted).collect();
        let against: Vec<&VersionRow> = match spec {
            // Nothing to be incompatible with yet.
            Some(VersionSpec::Latest) | None if live.is_empty() => {
                return Ok(CompatibilityVerdict {
                    is_compatible: true,
                    messages: Vec::new(),
                });
            }
            Some(VersionSpec::Latest) => live.last().copied().into_iter().collect(),
            Some(VersionSpec::Number(n)) => {
                if live.is_empty() {
                    return Err(Rejection::SubjectNotFound(subject.to_owned()));
                }
                let row = live
                    .iter()
                    .find(|v| v.version == n)
                    .ok_or(Rejection::VersionNotFound(n))?;
                vec![*row]
            }
            None => live.clone(),
        };
        let level = self.effective_level(subject).await?;
        let against = match spec {
            Some(_) => parse_versions(&against)?,
            None => parse_versions(level.versions_to_check(&against))?,
        };
        let messages = compat::check(level, &candidate.parsed, &earlier_versions(&against));
        Ok(CompatibilityVerdict {
            is_compatible: messages.is_empty(),
            messages,
        })
    }

    /// The subject's own level, else the global one, else BACKWARD.
    async fn effective_level(&self, subject: &str) -> Result<CompatibilityLevel, Rejection> {
        match self.stored_level(subject).await? {
            Some(level) => Ok(level),
            None => self.global_level().await,
        }
    }

    async fn stored_level(&self, subject: &str) -> Result<Option<CompatibilityLevel>, Rejection> {
        let Some(name) = self.store().config(subject).await? else {
            return Ok(None);
        };
        // Only validated names are written; anything else means the row was edited by hand.
        let level = CompatibilityLevel::parse(&name).ok_or_else(|| {
            Rejection::Store(RegistryError::CorruptConfig {
                subject: subject.to_owned(),
                name,
            })
        })?;
        Ok(Some(level))
    }

    /// The subject's versions as a reader sees them: 40401 when there are none.
    async fn visible_history(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<Vec<VersionRow>, Rejection> {
        let mut history = self.store().subject_history(subject).await?;
        if !include_deleted {
            history.retain(|v| !v.deleted);
        }
        if history.is_empty() {
            return Err(Rejection::SubjectNotFound(subject.to_owned()));
        }
        Ok(history)
    }
}

/// The number to put in a 40402 message (Confluent prints -1 for `latest`).
fn spec_number(spec: VersionSpec) -> i64 {
    match spec {
        VersionSpec::Latest => -1,
        VersionSpec::Number(n) => n,
    }
}

/// Parses stored versions for a compatibility check.
fn parse_versions<'a>(
    rows: &[&'a VersionRow],
) -> Result<Vec<(&'a VersionRow, Schema)>, RegistryError> {
    rows.iter()
        .map(|row| {
            schema::parse_stored(&row.text)
                .map(|parsed| (*row, parsed))
                .map_err(|reason| RegistryError::CorruptSchema {
                    id: row.schema_id,
                    reason,
                })
        })
        .collect()
}

fn earlier_versions<'a>(parsed: &'a [(&'a VersionRow, Schema)]) -> Vec<EarlierVersion<'a>> {
    parsed
        .iter()
        .map(|(row, schema)| EarlierVersion {
            version: row.version,
            text: &row.text,
            schema,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_specs_follow_confluent() {
        assert_eq!(VersionSpec::parse("latest").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("LATEST").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("-1").unwrap(), VersionSpec::Latest);
        assert_eq!(VersionSpec::parse("7").unwrap(), VersionSpec::Number(7));
        assert_eq!(
            VersionSpec::parse("2147483647").unwrap(),
            VersionSpec::Number(2147483647)
        );
        for bad in ["0", "-2", "2147483648", "one", ""] {
            let err = VersionSpec::parse(bad).unwrap_err();
            assert_eq!(err.error_code(), 42202, "{bad}");
        }
    }

    #[test]
    fn requests_must_be_avro_without_references() {
        let json = |text: &str| serde_json::from_str::<SchemaRequest>(text).unwrap();
        let ok = json(r#"{"schema":"\"string\"","schemaType":"AVRO","references":[],"x":1}"#);
        assert!(ok.canonical().is_ok());
        for bad in [
            r#"{"schema":"{\"type\":\"object\"}","schemaType":"JSON"}"#,
            r#"{"schema":"\"string\"","references":[{"name":"a","subject":"b","version":1}]}"#,
            r#"{"schemaType":"AVRO"}"#,
            r#"{"schema":"  "}"#,
            r#"{"schema":"{\"type\":\"nope\"}"}"#,
        ] {
            let err = json(bad).canonical().unwrap_err();
            assert_eq!(err.error_code(), 42201, "{bad}");
        }
    }
}
