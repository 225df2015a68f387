//! Settings shared by every command that runs consumers or reads the database.
//!
//! Precedence: command-line flag, then `LEDGERFLOW_*` environment variable (clap reads both),
//! then the TOML file given with `--config`, then the defaults named below. The file rejects
//! unknown keys so a typo is an error, not a silently ignored setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ledgerflow_runtime::GroupProtocol;
use serde::Deserialize;

/// `--database` for commands that only read or fix the store.
#[derive(Debug, Clone, Args)]
pub(crate) struct DatabaseArgs {
    /// Store: `sqlite://FILE` (created when missing) or `postgres://user@host/db`.
    #[arg(long, env = "LEDGERFLOW_DATABASE_URL")]
    pub(crate) database: Option<String>,
    /// TOML config file (its `database_url` is used when `--database` is absent).
    #[arg(long, env = "LEDGERFLOW_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

/// Opens the store at `url` (its own schema applied), naming the URL, password redacted, on
/// failure.
pub(crate) async fn open_store(url: &str) -> anyhow::Result<ledgerflow_store::Store> {
    ledgerflow_store::Store::open(url)
        .await
        .with_context(|| format!("opening the store {}", ledgerflow_store::redact(url)))
}

impl DatabaseArgs {
    /// Opens the store these arguments name.
    pub(crate) async fn open(&self) -> anyhow::Result<ledgerflow_store::Store> {
        open_store(&self.url()?).await
    }

    /// The database URL from flag, environment, file or the default.
    pub(crate) fn url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.database {
            return Ok(url.clone());
        }
        let file = FileConfig::load(self.config.as_deref())?;
        Ok(file.database_url.unwrap_or_else(default_database_url))
    }
}

/// Everything `ledgerflow run` (and the pipeline tools) can be told.
#[derive(Debug, Clone, Args)]
pub(crate) struct PipelineArgs {
    /// TOML config file (see deploy/ledgerflow.toml).
    #[arg(long, env = "LEDGERFLOW_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Bootstrap brokers.
    #[arg(long, env = "LEDGERFLOW_BROKERS")]
    pub(crate) brokers: Option<String>,
    /// Schema registry URL.
    #[arg(long, env = "LEDGERFLOW_SCHEMA_REGISTRY_URL")]
    pub(crate) registry: Option<String>,
    /// Store URL: `sqlite://FILE` or `postgres://...`.
    #[arg(long, env = "LEDGERFLOW_DATABASE_URL")]
    pub(crate) database: Option<String>,
    /// Topic to consume, repeatable; a value starting with `^` is a regex.
    #[arg(long = "topic", env = "LEDGERFLOW_TOPICS", value_delimiter = ',')]
    pub(crate) topics: Vec<String>,
    /// Tenants file (TOML, reloaded on SIGHUP and on change).
    #[arg(long = "tenants", env = "LEDGERFLOW_TENANTS_FILE")]
    pub(crate) tenants: Option<PathBuf>,
    /// Consumer group prefix; each consumer's group is `<prefix>.<consumer>`.
    #[arg(long, env = "LEDGERFLOW_GROUP_PREFIX")]
    pub(crate) group_prefix: Option<String>,
    /// Records per batch at most.
    #[arg(long, env = "LEDGERFLOW_BATCH_MAX_RECORDS")]
    pub(crate) batch_max_records: Option<usize>,
    /// Longest a record waits for its batch, e.g. `50ms` (the default).
    #[arg(long, env = "LEDGERFLOW_BATCH_MAX_WAIT", value_parser = parse_duration)]
    pub(crate) batch_max_wait: Option<Duration>,
    /// Exit once drained: nothing arrived for this long (e.g. `5s`), nothing is pending, and
    /// every partition of the subscribed topics has its position of record at its high
    /// watermark, whichever member holds it. While partitions wait for a joining member, a
    /// rebalance or a dead member's session, the run waits and says why.
    #[arg(long, env = "LEDGERFLOW_EXIT_WHEN_IDLE", value_parser = parse_duration)]
    pub(crate) exit_when_idle: Option<Duration>,
    /// With --exit-when-idle: give up when the run has not drained this long after its start
    /// (exit code 3, with the reason), e.g. `10m`. Default: wait as long as it takes.
    #[arg(long, env = "LEDGERFLOW_MAX_WAIT", value_parser = parse_duration)]
    pub(crate) max_wait: Option<Duration>,
    /// Graceful shutdown budget after SIGTERM/SIGINT (default `30s`; match Kubernetes'
    /// terminationGracePeriodSeconds): buffered batches commit, dispatchers finish their
    /// requests, the group is left. A second signal exits at once.
    #[arg(long, env = "LEDGERFLOW_SHUTDOWN_TIMEOUT", value_parser = parse_duration)]
    pub(crate) shutdown_timeout: Option<Duration>,
    /// `/readyz` reports not ready when a consumer has been joining or rebalancing without
    /// partitions for longer than this (default `60s`).
    #[arg(long, env = "LEDGERFLOW_NOT_READY_AFTER", value_parser = parse_duration)]
    pub(crate) not_ready_after: Option<Duration>,
    /// Extra librdkafka property, repeatable: `--kafka-property security.protocol=SSL`.
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub(crate) kafka_properties: Vec<(String, String)>,
    /// Serve /metrics, /healthz and /readyz on this address, e.g. `127.0.0.1:9464`.
    #[arg(long, env = "LEDGERFLOW_METRICS_LISTEN")]
    pub(crate) metrics_listen: Option<String>,
    /// Consumer-group protocol: `classic` (cooperative-sticky assignor; the default) or
    /// `consumer` (KIP-848, Kafka 4.0+ brokers).
    #[arg(long, env = "LEDGERFLOW_GROUP_PROTOCOL", value_parser = parse_group_protocol)]
    pub(crate) group_protocol: Option<GroupProtocol>,
    /// Static group membership (KIP-345): a stable id per instance, e.g. the pod name; each
    /// consumer's `group.instance.id` is `<ID>.<consumer>`.
    #[arg(long, env = "LEDGERFLOW_INSTANCE_ID")]
    pub(crate) instance_id: Option<String>,
    /// Classic protocol: how long a silent member keeps its partitions, e.g. `45s` (the
    /// default). With `--group-protocol consumer` the broker sets it.
    #[arg(long, env = "LEDGERFLOW_SESSION_TIMEOUT", value_parser = parse_duration)]
    pub(crate) session_timeout: Option<Duration>,
}

/// The TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
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
    fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut cfg: Self =
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        // Relative paths in the file are relative to the file.
        if let (Some(t), Some(dir)) = (&cfg.tenants_file, path.parent())
            && t.is_relative()
        {
            cfg.tenants_file = Some(dir.join(t));
        }
        Ok(cfg)
    }
}

/// Merged, validated settings.
#[derive(Debug, Clone)]
pub(crate) struct PipelineSettings {
    pub(crate) brokers: String,
    pub(crate) registry: String,
    pub(crate) database: String,
    pub(crate) topics: Vec<String>,
    pub(crate) tenants: Option<PathBuf>,
    pub(crate) group_prefix: String,
    pub(crate) consumers_from_file: Vec<String>,
    pub(crate) batch_max_records: usize,
    pub(crate) batch_max_wait: Duration,
    pub(crate) exit_when_idle: Option<Duration>,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) not_ready_after: Duration,
    pub(crate) kafka_properties: Vec<(String, String)>,
    pub(crate) metrics_listen: Option<String>,
    pub(crate) group_protocol: GroupProtocol,
    pub(crate) instance_id: Option<String>,
    pub(crate) session_timeout: Duration,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}
fn default_registry() -> String {
    "http://127.0.0.1:8081".to_owned()
}
pub(crate) fn default_database_url() -> String {
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

impl PipelineArgs {
    /// Flags and environment over the file over the defaults.
    pub(crate) fn resolve(&self) -> anyhow::Result<PipelineSettings> {
        let file = FileConfig::load(self.config.as_deref())?;
        let file_wait = file
            .batch
            .max_wait
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(anyhow::Error::msg)
            .context("batch.max_wait in the config file")?;
        let file_idle = file
            .exit_when_idle
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(anyhow::Error::msg)
            .context("exit_when_idle in the config file")?;
        let file_duration = |raw: &Option<String>, key: &str| {
            raw.as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("{key} in the config file"))
        };
        let file_max_wait = file_duration(&file.max_wait, "max_wait")?;
        let file_shutdown = file_duration(&file.shutdown_timeout, "shutdown_timeout")?;
        let file_not_ready = file_duration(&file.not_ready_after, "not_ready_after")?;
        let file_session = file
            .session_timeout
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(anyhow::Error::msg)
            .context("session_timeout in the config file")?;
        let file_protocol = file
            .group_protocol
            .as_deref()
            .map(parse_group_protocol)
            .transpose()
            .map_err(anyhow::Error::msg)
            .context("group_protocol in the config file")?;
        let group_protocol = self.group_protocol.or(file_protocol).unwrap_or_default();
        let session_timeout = self.session_timeout.or(file_session);
        if group_protocol == GroupProtocol::Consumer && session_timeout.is_some() {
            anyhow::bail!(
                "the session timeout is a broker setting with group protocol `consumer` \
                 (group.consumer.session.timeout.ms); drop --session-timeout"
            );
        }
        let instance_id = self.instance_id.clone().or(file.instance_id);
        if let Some(id) = &instance_id
            && (id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            anyhow::bail!(
                "instance id {id:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"
            );
        }
        let topics = if !self.topics.is_empty() {
            self.topics.clone()
        } else if !file.topics.is_empty() {
            file.topics.clone()
        } else {
            default_topics()
        };
        let mut kafka_properties: Vec<(String, String)> = file.kafka.into_iter().collect();
        kafka_properties.extend(self.kafka_properties.iter().cloned());
        let settings = PipelineSettings {
            brokers: self
                .brokers
                .clone()
                .or(file.brokers)
                .unwrap_or_else(default_brokers),
            registry: self
                .registry
                .clone()
                .or(file.schema_registry_url)
                .unwrap_or_else(default_registry),
            database: self
                .database
                .clone()
                .or(file.database_url)
                .unwrap_or_else(default_database_url),
            topics,
            tenants: self.tenants.clone().or(file.tenants_file),
            group_prefix: self
                .group_prefix
                .clone()
                .or(file.group_prefix)
                .unwrap_or_else(default_group_prefix),
            consumers_from_file: file.consumers,
            batch_max_records: self
                .batch_max_records
                .or(file.batch.max_records)
                .unwrap_or_else(default_batch_max_records),
            batch_max_wait: self
                .batch_max_wait
                .or(file_wait)
                .unwrap_or_else(default_batch_max_wait),
            exit_when_idle: self.exit_when_idle.or(file_idle),
            max_wait: self.max_wait.or(file_max_wait),
            shutdown_timeout: self
                .shutdown_timeout
                .or(file_shutdown)
                .unwrap_or_else(default_shutdown_timeout),
            not_ready_after: self
                .not_ready_after
                .or(file_not_ready)
                .unwrap_or_else(default_not_ready_after),
            kafka_properties,
            metrics_listen: self.metrics_listen.clone().or(file.metrics_listen),
            group_protocol,
            instance_id,
            session_timeout: session_timeout.unwrap_or_else(default_session_timeout),
        };
        if settings.max_wait.is_some() && settings.exit_when_idle.is_none() {
            anyhow::bail!("--max-wait bounds an --exit-when-idle run; give --exit-when-idle too");
        }
        if settings.batch_max_records == 0 || settings.batch_max_records > 10_000 {
            anyhow::bail!(
                "batch max records must be 1..=10000, got {}",
                settings.batch_max_records
            );
        }
        Ok(settings)
    }
}

/// `250ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
pub(crate) fn parse_duration(raw: &str) -> Result<Duration, String> {
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

fn parse_group_protocol(raw: &str) -> Result<GroupProtocol, String> {
    GroupProtocol::parse(raw)
        .ok_or_else(|| format!("{raw:?} is not a group protocol (classic or consumer)"))
}

fn parse_property(raw: &str) -> Result<(String, String), String> {
    let (k, v) = raw
        .split_once('=')
        .ok_or_else(|| format!("{raw:?} is not KEY=VALUE"))?;
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(toml::from_str::<FileConfig>("brokerz = \"x\"").is_err());
    }
}
