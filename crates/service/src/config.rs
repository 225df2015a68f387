//! Settings: raw layers in, one validated [`Settings`] out.
//!
//! Precedence: command-line flag, then `LEDGERFLOW_*` environment variable, then the TOML file
//! given with `--config` (or `LEDGERFLOW_CONFIG`), then the defaults named below. Each source
//! becomes a [`SettingsLayer`] (flags from the binary, the environment from an explicit
//! [`Environment`] map so tests can pass a fake one, the file through [`FileConfig`], which
//! rejects unknown keys); the layers merge field by field and every rule is checked once, in
//! [`Settings::resolve`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ledgerflow_runtime::{GroupProtocol, RuntimeConfig, TopicSelector};
use serde::Deserialize;

use crate::{ConsumerKind, ServiceError};

/// The names of every environment variable ledgerflow reads.
pub mod vars {
    /// TOML config file.
    pub const CONFIG: &str = "LEDGERFLOW_CONFIG";
    /// Kafka bootstrap servers.
    pub const BROKERS: &str = "LEDGERFLOW_BROKERS";
    /// Schema registry URL.
    pub const SCHEMA_REGISTRY_URL: &str = "LEDGERFLOW_SCHEMA_REGISTRY_URL";
    /// Store URL.
    pub const DATABASE_URL: &str = "LEDGERFLOW_DATABASE_URL";
    /// Subscriptions, comma separated.
    pub const TOPICS: &str = "LEDGERFLOW_TOPICS";
    /// Tenants file.
    pub const TENANTS_FILE: &str = "LEDGERFLOW_TENANTS_FILE";
    /// Consumer group prefix.
    pub const GROUP_PREFIX: &str = "LEDGERFLOW_GROUP_PREFIX";
    /// Records per batch.
    pub const BATCH_MAX_RECORDS: &str = "LEDGERFLOW_BATCH_MAX_RECORDS";
    /// Oldest record's wait before its batch commits.
    pub const BATCH_MAX_WAIT: &str = "LEDGERFLOW_BATCH_MAX_WAIT";
    /// Exit once drained and idle this long.
    pub const EXIT_WHEN_IDLE: &str = "LEDGERFLOW_EXIT_WHEN_IDLE";
    /// Bound of an exit-when-idle run.
    pub const MAX_WAIT: &str = "LEDGERFLOW_MAX_WAIT";
    /// Graceful shutdown budget.
    pub const SHUTDOWN_TIMEOUT: &str = "LEDGERFLOW_SHUTDOWN_TIMEOUT";
    /// Readiness grace for joining members.
    pub const NOT_READY_AFTER: &str = "LEDGERFLOW_NOT_READY_AFTER";
    /// Address of /metrics, /healthz, /readyz.
    pub const METRICS_LISTEN: &str = "LEDGERFLOW_METRICS_LISTEN";
    /// Consumer-group protocol.
    pub const GROUP_PROTOCOL: &str = "LEDGERFLOW_GROUP_PROTOCOL";
    /// Static membership id.
    pub const INSTANCE_ID: &str = "LEDGERFLOW_INSTANCE_ID";
    /// Classic protocol session timeout.
    pub const SESSION_TIMEOUT: &str = "LEDGERFLOW_SESSION_TIMEOUT";
    /// Who is acting, for operator audit entries.
    pub const OPERATOR: &str = "LEDGERFLOW_OPERATOR";
    /// Log filter.
    pub const LOG: &str = "LEDGERFLOW_LOG";
    /// Log line format.
    pub const LOG_FORMAT: &str = "LEDGERFLOW_LOG_FORMAT";
    /// Listen address of `registry serve`.
    pub const REGISTRY_LISTEN: &str = "LEDGERFLOW_REGISTRY_LISTEN";
    /// Storage of `registry serve`.
    pub const REGISTRY_DATABASE_URL: &str = "LEDGERFLOW_REGISTRY_DATABASE_URL";
    /// ERP dispatcher first retry delay.
    pub const ERP_BACKOFF_BASE_MS: &str = "LEDGERFLOW_ERP_BACKOFF_BASE_MS";
    /// ERP dispatcher idle poll.
    pub const ERP_POLL_MS: &str = "LEDGERFLOW_ERP_POLL_MS";
    /// ERP dispatcher attempts before a posting fails.
    pub const ERP_MAX_ATTEMPTS: &str = "LEDGERFLOW_ERP_MAX_ATTEMPTS";
    /// ERP dispatcher per-request timeout.
    pub const ERP_REQUEST_TIMEOUT_MS: &str = "LEDGERFLOW_ERP_REQUEST_TIMEOUT_MS";
    /// ERP dispatcher claim lease: how long a row claimed by a process that died stays
    /// untouched (must exceed the request timeout).
    pub const ERP_LEASE_MS: &str = "LEDGERFLOW_ERP_LEASE_MS";
    /// Metrics sampler period.
    pub const LAG_INTERVAL_MS: &str = "LEDGERFLOW_LAG_INTERVAL_MS";
    /// Tenants with their own metric label.
    pub const METRICS_TENANTS: &str = ledgerflow_telemetry::TENANTS_ENV;
    /// How many tenants, those with the most delivery lag, get their own lag series.
    pub const METRICS_LAG_TENANTS: &str = "LEDGERFLOW_METRICS_LAG_TENANTS";

    /// The variables that name a setting of a command-line flag, each listed in that flag's
    /// `--help` (the dispatcher, sampler and metrics tuning variables have no flag).
    pub const WITH_FLAGS: &[&str] = &[
        CONFIG,
        BROKERS,
        SCHEMA_REGISTRY_URL,
        DATABASE_URL,
        TOPICS,
        TENANTS_FILE,
        GROUP_PREFIX,
        BATCH_MAX_RECORDS,
        BATCH_MAX_WAIT,
        EXIT_WHEN_IDLE,
        MAX_WAIT,
        SHUTDOWN_TIMEOUT,
        NOT_READY_AFTER,
        METRICS_LISTEN,
        GROUP_PROTOCOL,
        INSTANCE_ID,
        SESSION_TIMEOUT,
        OPERATOR,
        LOG,
        LOG_FORMAT,
        REGISTRY_LISTEN,
        REGISTRY_DATABASE_URL,
    ];
}

/// The process environment as an explicit map: the binary builds it from `std::env`, tests
/// from a literal list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Environment {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl Environment {
    /// The value of a variable, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// A variable parsed with `parse`; a value it refuses is an [`ServiceError::Environment`].
    pub fn parsed<T>(
        &self,
        name: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ServiceError> {
        self.get(name)
            .map(|value| {
                parse(value).map_err(|reason| ServiceError::Environment {
                    name,
                    value: value.to_owned(),
                    reason,
                })
            })
            .transpose()
    }

    /// A numeric tuning variable: a value that is not a number is ignored with a warning.
    pub fn number(&self, name: &str) -> Option<u64> {
        let raw = self.get(name)?;
        match raw.trim().parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                tracing::warn!(variable = name, value = %raw, "not a number; ignored");
                None
            }
        }
    }
}

/// One source of settings, every field optional: the flags, the environment or the file.
#[derive(Debug, Clone, Default)]
pub struct SettingsLayer {
    /// Bootstrap brokers.
    pub brokers: Option<String>,
    /// Schema registry URL.
    pub registry: Option<String>,
    /// Store URL.
    pub database: Option<String>,
    /// Subscriptions (`^` = regex); empty = not given.
    pub topics: Vec<String>,
    /// Tenants file.
    pub tenants: Option<PathBuf>,
    /// Consumer group prefix.
    pub group_prefix: Option<String>,
    /// Consumers to run; empty = not given.
    pub consumers: Vec<ConsumerKind>,
    /// Records per batch.
    pub batch_max_records: Option<usize>,
    /// Oldest record's wait before its batch commits.
    pub batch_max_wait: Option<Duration>,
    /// Exit once drained and idle this long.
    pub exit_when_idle: Option<Duration>,
    /// Bound of an exit-when-idle run.
    pub max_wait: Option<Duration>,
    /// Graceful shutdown budget.
    pub shutdown_timeout: Option<Duration>,
    /// Readiness grace for joining members.
    pub not_ready_after: Option<Duration>,
    /// Extra librdkafka properties (applied in order, later wins).
    pub kafka_properties: Vec<(String, String)>,
    /// Address of /metrics, /healthz, /readyz.
    pub metrics_listen: Option<String>,
    /// Consumer-group protocol.
    pub group_protocol: Option<GroupProtocol>,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Classic protocol session timeout.
    pub session_timeout: Option<Duration>,
}

impl SettingsLayer {
    /// The settings the environment gives.
    pub fn from_env(env: &Environment) -> Result<Self, ServiceError> {
        let text = |name| env.get(name).map(str::to_owned);
        Ok(Self {
            brokers: text(vars::BROKERS),
            registry: text(vars::SCHEMA_REGISTRY_URL),
            database: text(vars::DATABASE_URL),
            topics: env
                .get(vars::TOPICS)
                .map(|t| t.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            tenants: env.get(vars::TENANTS_FILE).map(PathBuf::from),
            group_prefix: text(vars::GROUP_PREFIX),
            consumers: Vec::new(),
            batch_max_records: env.parsed(vars::BATCH_MAX_RECORDS, |v| {
                v.parse::<usize>().map_err(|e| e.to_string())
            })?,
            batch_max_wait: env.parsed(vars::BATCH_MAX_WAIT, parse_duration)?,
            exit_when_idle: env.parsed(vars::EXIT_WHEN_IDLE, parse_duration)?,
            max_wait: env.parsed(vars::MAX_WAIT, parse_duration)?,
            shutdown_timeout: env.parsed(vars::SHUTDOWN_TIMEOUT, parse_duration)?,
            not_ready_after: env.parsed(vars::NOT_READY_AFTER, parse_duration)?,
            kafka_properties: Vec::new(),
            metrics_listen: text(vars::METRICS_LISTEN),
            group_protocol: env.parsed(vars::GROUP_PROTOCOL, parse_group_protocol)?,
            instance_id: text(vars::INSTANCE_ID),
            session_timeout: env.parsed(vars::SESSION_TIMEOUT, parse_duration)?,
        })
    }

    /// `self` where it has a value, else `lower`. Lists count as given when not empty; Kafka
    /// properties add up, `self`'s last so they win.
    fn over(self, lower: Self) -> Self {
        fn list<T>(upper: Vec<T>, lower: Vec<T>) -> Vec<T> {
            if upper.is_empty() { lower } else { upper }
        }
        let mut kafka_properties = lower.kafka_properties;
        kafka_properties.extend(self.kafka_properties);
        Self {
            brokers: self.brokers.or(lower.brokers),
            registry: self.registry.or(lower.registry),
            database: self.database.or(lower.database),
            topics: list(self.topics, lower.topics),
            tenants: self.tenants.or(lower.tenants),
            group_prefix: self.group_prefix.or(lower.group_prefix),
            consumers: list(self.consumers, lower.consumers),
            batch_max_records: self.batch_max_records.or(lower.batch_max_records),
            batch_max_wait: self.batch_max_wait.or(lower.batch_max_wait),
            exit_when_idle: self.exit_when_idle.or(lower.exit_when_idle),
            max_wait: self.max_wait.or(lower.max_wait),
            shutdown_timeout: self.shutdown_timeout.or(lower.shutdown_timeout),
            not_ready_after: self.not_ready_after.or(lower.not_ready_after),
            kafka_properties,
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            group_protocol: self.group_protocol.or(lower.group_protocol),
            instance_id: self.instance_id.or(lower.instance_id),
            session_timeout: self.session_timeout.or(lower.session_timeout),
        }
    }
}

/// The TOML file (see deploy/ledgerflow.toml). Unknown keys are an error, so a typo is not a
/// silently ignored setting.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    brokers: Option<String>,
    schema_registry_url: Option<String>,
    database_url: Option<String>,
    #[serde(default)]
    topics: Vec<String>,
    tenants_file: Option<PathBuf>,
    group_prefix: Option<String>,
    #[serde(default)]
    consumers: Vec<String>,
    #[serde(default)]
    batch: BatchFile,
    exit_when_idle: Option<String>,
    max_wait: Option<String>,
    shutdown_timeout: Option<String>,
    not_ready_after: Option<String>,
    #[serde(default)]
    kafka: BTreeMap<String, String>,
    metrics_listen: Option<String>,
    group_protocol: Option<String>,
    instance_id: Option<String>,
    session_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchFile {
    max_records: Option<usize>,
    max_wait: Option<String>,
}

impl FileConfig {
    /// Reads the file; none given is an empty file. Relative paths in the file are relative
    /// to the file.
    pub fn load(path: Option<&Path>) -> Result<Self, ServiceError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ServiceError::ConfigRead {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg: Self = toml::from_str(&text).map_err(|source| ServiceError::ConfigParse {
            path: path.to_owned(),
            source,
        })?;
        if let (Some(t), Some(dir)) = (&cfg.tenants_file, path.parent())
            && t.is_relative()
        {
            cfg.tenants_file = Some(dir.join(t));
        }
        Ok(cfg)
    }

    fn into_layer(self) -> Result<SettingsLayer, ServiceError> {
        fn key<T>(
            raw: Option<&str>,
            key: &str,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Result<Option<T>, ServiceError> {
            raw.map(parse)
                .transpose()
                .map_err(|e| ServiceError::Config(format!("{key} in the config file: {e}")))
        }
        let consumers = self
            .consumers
            .iter()
            .map(|name| ConsumerKind::parse(name))
            .collect::<Result<_, _>>()
            .map_err(|e| ServiceError::Config(format!("consumers in the config file: {e}")))?;
        Ok(SettingsLayer {
            brokers: self.brokers,
            registry: self.schema_registry_url,
            database: self.database_url,
            topics: self.topics,
            tenants: self.tenants_file,
            group_prefix: self.group_prefix,
            consumers,
            batch_max_records: self.batch.max_records,
            batch_max_wait: key(
                self.batch.max_wait.as_deref(),
                "batch.max_wait",
                parse_duration,
            )?,
            exit_when_idle: key(
                self.exit_when_idle.as_deref(),
                "exit_when_idle",
                parse_duration,
            )?,
            max_wait: key(self.max_wait.as_deref(), "max_wait", parse_duration)?,
            shutdown_timeout: key(
                self.shutdown_timeout.as_deref(),
                "shutdown_timeout",
                parse_duration,
            )?,
            not_ready_after: key(
                self.not_ready_after.as_deref(),
                "not_ready_after",
                parse_duration,
            )?,
            kafka_properties: self.kafka.into_iter().collect(),
            metrics_listen: self.metrics_listen,
            group_protocol: key(
                self.group_protocol.as_deref(),
                "group_protocol",
                parse_group_protocol,
            )?,
            instance_id: self.instance_id,
            session_timeout: key(
                self.session_timeout.as_deref(),
                "session_timeout",
                parse_duration,
            )?,
        })
    }
}

/// Merged, validated settings of every command that runs consumers or pushes records through
/// the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Bootstrap brokers.
    pub brokers: String,
    /// Schema registry URL.
    pub registry: String,
    /// Store URL.
    pub database: String,
    /// Subscriptions (`^` = regex).
    pub topics: Vec<String>,
    /// Tenants file (none: every event is `unknown_tenant`).
    pub tenants: Option<PathBuf>,
    /// Consumer group prefix.
    pub group_prefix: String,
    /// Consumers to run.
    pub consumers: Vec<ConsumerKind>,
    /// Records per batch, 1..=10000.
    pub batch_max_records: usize,
    /// Oldest record's wait before its batch commits.
    pub batch_max_wait: Duration,
    /// Exit once drained and idle this long.
    pub exit_when_idle: Option<Duration>,
    /// Bound of an exit-when-idle run.
    pub max_wait: Option<Duration>,
    /// Graceful shutdown budget.
    pub shutdown_timeout: Duration,
    /// Readiness grace for joining members.
    pub not_ready_after: Duration,
    /// Extra librdkafka properties.
    pub kafka_properties: Vec<(String, String)>,
    /// Address of /metrics, /healthz, /readyz.
    pub metrics_listen: Option<String>,
    /// Consumer-group protocol.
    pub group_protocol: GroupProtocol,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Classic protocol session timeout.
    pub session_timeout: Duration,
    /// Registry credentials (`LEDGERFLOW_SCHEMA_REGISTRY_USER_INFO[_FILE]` or
    /// `..._BEARER_TOKEN[_FILE]`); `Debug` shows no secret.
    pub registry_auth: Option<ledgerflow_codec::RegistryAuth>,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}
fn default_registry() -> String {
    "http://127.0.0.1:8081".to_owned()
}
/// The store when nothing names one.
pub fn default_database_url() -> String {
    "sqlite://ledgerflow.db".to_owned()
}
fn default_topics() -> Vec<String> {
    vec!["billing.events".to_owned()]
}
fn default_group_prefix() -> String {
    "ledgerflow".to_owned()
}
fn default_session_timeout() -> Duration {
    // Kafka's own default. A crashed member's partitions wait this long (a graceful shutdown
    // leaves the group at once, unless the member is static); shorter risks taking partitions
    // from a member that is only slow to heartbeat.
    Duration::from_secs(45)
}
fn default_shutdown_timeout() -> Duration {
    // Kubernetes' default terminationGracePeriodSeconds.
    Duration::from_secs(30)
}
fn default_not_ready_after() -> Duration {
    Duration::from_secs(60)
}
fn default_batch_max_records() -> usize {
    500
}
fn default_batch_max_wait() -> Duration {
    // Flushes no longer hold up polling (each partition commits while the loop reads on), so a
    // short wait costs little throughput and bounds latency.
    Duration::from_millis(50)
}
/// Largest batch the store's statements are sized for.
const MAX_BATCH_RECORDS: usize = 10_000;

impl Settings {
    /// Flags over the environment over the file (`config`, else `LEDGERFLOW_CONFIG`) over
    /// the defaults, then every rule.
    pub fn resolve(
        flags: SettingsLayer,
        config: Option<&Path>,
        env: &Environment,
    ) -> Result<Self, ServiceError> {
        let config = config_path(config, env);
        let file = FileConfig::load(config.as_deref())?.into_layer()?;
        let raw = flags.over(SettingsLayer::from_env(env)?).over(file);
        let group_protocol = raw.group_protocol.unwrap_or_default();
        if group_protocol == GroupProtocol::Consumer && raw.session_timeout.is_some() {
            return Err(ServiceError::Config(
                "the session timeout is a broker setting with group protocol `consumer` \
                 (group.consumer.session.timeout.ms); drop --session-timeout"
                    .to_owned(),
            ));
        }
        if let Some(id) = &raw.instance_id
            && (id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(ServiceError::Config(format!(
                "instance id {id:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"
            )));
        }
        if raw.max_wait.is_some() && raw.exit_when_idle.is_none() {
            return Err(ServiceError::Config(
                "--max-wait bounds an --exit-when-idle run; give --exit-when-idle too".to_owned(),
            ));
        }
        let batch_max_records = raw
            .batch_max_records
            .unwrap_or_else(default_batch_max_records);
        if batch_max_records == 0 || batch_max_records > MAX_BATCH_RECORDS {
            return Err(ServiceError::Config(format!(
                "batch max records must be 1..={MAX_BATCH_RECORDS}, got {batch_max_records}"
            )));
        }
        let topics = if raw.topics.is_empty() {
            default_topics()
        } else {
            raw.topics
        };
        // Secrets by reference (`${env:NAME}`, `${file:PATH}`) must resolve now, so a typo is a
        // startup error; they are resolved again where clients are built and never stored.
        for (key, value) in &raw.kafka_properties {
            if ledgerflow_core::secret::is_reference(value) {
                ledgerflow_core::secret::resolve_with(value, |n| env.get(n).map(str::to_owned))
                    .map_err(|e| ServiceError::Config(format!("kafka property {key}: {e}")))?;
            }
        }
        let registry_auth =
            ledgerflow_codec::RegistryAuth::from_env(|n| env.get(n).map(str::to_owned))
                .map_err(ServiceError::Config)?;
        let consumers = if raw.consumers.is_empty() {
            ConsumerKind::ALL.to_vec()
        } else {
            raw.consumers
        };
        Ok(Self {
            brokers: raw.brokers.unwrap_or_else(default_brokers),
            registry: raw.registry.unwrap_or_else(default_registry),
            database: raw.database.unwrap_or_else(default_database_url),
            topics,
            tenants: raw.tenants,
            group_prefix: raw.group_prefix.unwrap_or_else(default_group_prefix),
            consumers,
            batch_max_records,
            batch_max_wait: raw.batch_max_wait.unwrap_or_else(default_batch_max_wait),
            exit_when_idle: raw.exit_when_idle,
            max_wait: raw.max_wait,
            shutdown_timeout: raw
                .shutdown_timeout
                .unwrap_or_else(default_shutdown_timeout),
            not_ready_after: raw.not_ready_after.unwrap_or_else(default_not_ready_after),
            kafka_properties: raw.kafka_properties,
            metrics_listen: raw.metrics_listen,
            group_protocol,
            instance_id: raw.instance_id,
            session_timeout: raw.session_timeout.unwrap_or_else(default_session_timeout),
            registry_auth,
        })
    }

    /// The store URL of a command that only reads or fixes the store: `--database`, then
    /// `LEDGERFLOW_DATABASE_URL`, then the file's `database_url`, then the default.
    pub fn database_url(
        flag: Option<&str>,
        config: Option<&Path>,
        env: &Environment,
    ) -> Result<String, ServiceError> {
        if let Some(url) = flag.or(env.get(vars::DATABASE_URL)) {
            return Ok(url.to_owned());
        }
        let file = FileConfig::load(config_path(config, env).as_deref())?;
        Ok(file.database_url.unwrap_or_else(default_database_url))
    }

    /// The settings of one consumer loop.
    pub fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            brokers: self.brokers.clone(),
            group_prefix: self.group_prefix.clone(),
            topics: self
                .topics
                .iter()
                .map(|t| TopicSelector::parse(t))
                .collect(),
            batch_max_records: self.batch_max_records,
            batch_max_wait: self.batch_max_wait,
            exit_when_idle: self.exit_when_idle,
            max_wait: self.max_wait,
            shutdown_timeout: self.shutdown_timeout,
            kafka_properties: self.kafka_properties.clone(),
            group_protocol: self.group_protocol,
            instance_id: self.instance_id.clone(),
            session_timeout: self.session_timeout,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            status: None,
        }
    }

    /// The base of every Kafka client outside the consumer loops.
    pub fn kafka(&self) -> crate::KafkaClient {
        crate::KafkaClient {
            brokers: self.brokers.clone(),
            properties: self.kafka_properties.clone(),
        }
    }
}

fn config_path(flag: Option<&Path>, env: &Environment) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| env.get(vars::CONFIG).map(PathBuf::from))
}

/// Who is acting, for the audit log: `--operator`, else `LEDGERFLOW_OPERATOR`, else `$USER`,
/// else `unknown`.
pub fn operator_name(flag: Option<&str>, env: &Environment) -> String {
    flag.or(env.get(vars::OPERATOR))
        .or(env.get("USER"))
        .filter(|s| !s.trim().is_empty())
        .map_or_else(|| "unknown".to_owned(), str::to_owned)
}

/// `250ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (num, unit) = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((raw, "s"), |i| (&raw[..i], &raw[i..]));
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 500ms, 5s, 2m"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{raw:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{raw:?} is not a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `classic` or `consumer`.
pub fn parse_group_protocol(raw: &str) -> Result<GroupProtocol, String> {
    GroupProtocol::parse(raw)
        .ok_or_else(|| format!("{raw:?} is not a group protocol (classic or consumer)"))
}

/// `KEY=VALUE`.
pub fn parse_property(raw: &str) -> Result<(String, String), String> {
    let (k, v) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not KEY=VALUE"))?;
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        pairs.iter().copied().collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn parses_durations_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn the_shipped_example_config_parses_and_rejects_unknown_keys() {
        let text = include_str!("../../../deploy/ledgerflow.toml");
        let cfg: FileConfig = toml::from_str(text).expect("deploy/ledgerflow.toml parses");
        assert!(cfg.brokers.is_some());
        assert!(cfg.into_layer().is_ok());
        assert!(toml::from_str::<FileConfig>("brokerz = \"x\"").is_err());
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let s = Settings::resolve(SettingsLayer::default(), None, &env(&[])).unwrap();
        assert_eq!(s.brokers, "127.0.0.1:9092");
        assert_eq!(s.database, "sqlite://ledgerflow.db");
        assert_eq!(s.topics, vec!["billing.events"]);
        assert_eq!(s.batch_max_records, 500);
        assert_eq!(s.batch_max_wait, Duration::from_millis(50));
        assert_eq!(s.consumers, ConsumerKind::ALL.to_vec());
        assert_eq!(s.session_timeout, Duration::from_secs(45));
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let cfg = file(
            "brokers = \"file:9092\"\nschema_registry_url = \"http://file\"\n\
             database_url = \"sqlite://file.db\"\ngroup_prefix = \"file\"\n\
             consumers = [\"warehouse\"]\n[batch]\nmax_records = 7\nmax_wait = \"7ms\"\n\
             [kafka]\n\"socket.timeout.ms\" = \"1\"\n",
        );
        let environment = env(&[
            (vars::BROKERS, "env:9092"),
            (vars::SCHEMA_REGISTRY_URL, "http://env"),
            (vars::BATCH_MAX_RECORDS, "8"),
            (vars::TOPICS, "a,b"),
        ]);
        let flags = SettingsLayer {
            brokers: Some("flag:9092".into()),
            kafka_properties: vec![("socket.timeout.ms".into(), "2".into())],
            ..SettingsLayer::default()
        };
        let s = Settings::resolve(flags, Some(cfg.path()), &environment).unwrap();
        assert_eq!(s.brokers, "flag:9092", "flag over env");
        assert_eq!(s.registry, "http://env", "env over file");
        assert_eq!(s.batch_max_records, 8, "env over file");
        assert_eq!(s.topics, vec!["a", "b"], "env lists split on commas");
        assert_eq!(s.database, "sqlite://file.db", "file over default");
        assert_eq!(s.group_prefix, "file");
        assert_eq!(s.batch_max_wait, Duration::from_millis(7));
        assert_eq!(s.consumers, vec![ConsumerKind::Warehouse]);
        assert_eq!(s.shutdown_timeout, Duration::from_secs(30), "default");
        assert_eq!(
            s.kafka_properties.last(),
            Some(&("socket.timeout.ms".to_owned(), "2".to_owned())),
            "a flag's property is applied after the file's"
        );
        // The config file may come from the environment too.
        let via_env = env(&[(vars::CONFIG, cfg.path().to_str().unwrap())]);
        let s = Settings::resolve(SettingsLayer::default(), None, &via_env).unwrap();
        assert_eq!(s.brokers, "file:9092");
        assert_eq!(
            Settings::database_url(None, None, &via_env).unwrap(),
            "sqlite://file.db"
        );
        assert_eq!(
            Settings::database_url(Some("sqlite://flag.db"), None, &via_env).unwrap(),
            "sqlite://flag.db"
        );
    }

    #[test]
    fn every_rule_is_checked_once_here() {
        let refused = |flags: SettingsLayer, environment: &[(&str, &str)]| {
            Settings::resolve(flags, None, &env(environment)).unwrap_err()
        };
        let zero = SettingsLayer {
            batch_max_records: Some(0),
            ..SettingsLayer::default()
        };
        assert!(refused(zero, &[]).to_string().contains("1..=10000"));
        assert!(
            refused(SettingsLayer::default(), &[(vars::BATCH_MAX_RECORDS, "0")])
                .to_string()
                .contains("got 0")
        );
        let bad_env = refused(SettingsLayer::default(), &[(vars::BATCH_MAX_WAIT, "soon")]);
        assert!(bad_env.is_usage(), "{bad_env}");
        assert!(
            bad_env
                .to_string()
                .starts_with("LEDGERFLOW_BATCH_MAX_WAIT=")
        );
        let max_wait_alone = SettingsLayer {
            max_wait: Some(Duration::from_secs(1)),
            ..SettingsLayer::default()
        };
        assert!(
            refused(max_wait_alone, &[])
                .to_string()
                .contains("--exit-when-idle")
        );
        let kip848_with_timeout = SettingsLayer {
            group_protocol: Some(GroupProtocol::Consumer),
            session_timeout: Some(Duration::from_secs(10)),
            ..SettingsLayer::default()
        };
        assert!(
            refused(kip848_with_timeout, &[])
                .to_string()
                .contains("broker setting")
        );
        assert!(
            refused(SettingsLayer::default(), &[(vars::INSTANCE_ID, "pod 1")])
                .to_string()
                .contains("instance id")
        );
        let unknown_consumer = file("consumers = [\"ledger\"]\n");
        let err = Settings::resolve(
            SettingsLayer::default(),
            Some(unknown_consumer.path()),
            &env(&[]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown consumer"), "{err}");
    }

    #[test]
    fn the_operator_comes_from_flag_env_or_user() {
        let e = env(&[(vars::OPERATOR, "ops"), ("USER", "me")]);
        assert_eq!(operator_name(Some("flag"), &e), "flag");
        assert_eq!(operator_name(None, &e), "ops");
        assert_eq!(operator_name(None, &env(&[("USER", "me")])), "me");
        assert_eq!(operator_name(None, &env(&[("USER", " ")])), "unknown");
    }
}
