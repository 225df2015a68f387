//! Arguments several commands share, and how they become the service's settings.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ledgerflow_runtime::GroupProtocol;
use ledgerflow_service::config::{
    operator_name, parse_duration, parse_group_protocol, parse_property,
};
use ledgerflow_service::{ConsumerKind, Environment, Settings, SettingsLayer};

/// `--format`: human text or machine JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned text for people (also `table`).
    #[value(alias = "table")]
    Text,
    /// JSON (one document, or one object per line for streams).
    Json,
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A progress bar on stderr, drawn only on a terminal: scripts see the summary alone.
pub(crate) struct Bar(indicatif::ProgressBar);

impl Bar {
    /// A bar with an indicatif `template` and a message.
    pub(crate) fn new(template: &str, message: impl Into<String>) -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(template)
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(message.into());
        Self(bar)
    }

    /// Clears the bar.
    pub(crate) fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl ledgerflow_service::ops::Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn at(&self, done: u64) {
        self.0.set_position(done);
    }
}

/// `--database` for commands that only read or fix the store.
#[derive(Debug, Clone, Args)]
pub(crate) struct DatabaseArgs {
    /// Store: `sqlite://FILE` (created when missing) or `postgres://user@host/db`
    /// [env: LEDGERFLOW_DATABASE_URL].
    #[arg(long)]
    database: Option<String>,
    /// TOML config file (its `database_url` is used when `--database` is absent)
    /// [env: LEDGERFLOW_CONFIG].
    #[arg(long)]
    config: Option<PathBuf>,
}

impl DatabaseArgs {
    /// Opens the store these arguments name.
    pub(crate) async fn open(&self, env: &Environment) -> anyhow::Result<ledgerflow_store::Store> {
        let url = Settings::database_url(self.database.as_deref(), self.config.as_deref(), env)?;
        Ok(ledgerflow_service::open_store(&url).await?)
    }
}

/// Everything `ledgerflow run` (and the pipeline tools) can be told.
#[derive(Debug, Clone, Args)]
pub(crate) struct PipelineArgs {
    /// TOML config file (see deploy/ledgerflow.toml) [env: LEDGERFLOW_CONFIG].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Bootstrap brokers [env: LEDGERFLOW_BROKERS].
    #[arg(long)]
    brokers: Option<String>,
    /// Schema registry URL [env: LEDGERFLOW_SCHEMA_REGISTRY_URL].
    #[arg(long)]
    registry: Option<String>,
    /// Store URL: `sqlite://FILE` or `postgres://...` [env: LEDGERFLOW_DATABASE_URL].
    #[arg(long)]
    database: Option<String>,
    /// Topic to consume, repeatable; a value starting with `^` is a regex
    /// [env: LEDGERFLOW_TOPICS, comma separated].
    #[arg(long = "topic", value_delimiter = ',')]
    topics: Vec<String>,
    /// Tenants file (TOML, reloaded on SIGHUP and on change) [env: LEDGERFLOW_TENANTS_FILE].
    #[arg(long = "tenants")]
    tenants: Option<PathBuf>,
    /// Consumer group prefix; each consumer's group is `<prefix>.<consumer>`
    /// [env: LEDGERFLOW_GROUP_PREFIX].
    #[arg(long)]
    group_prefix: Option<String>,
    /// Records per batch at most [env: LEDGERFLOW_BATCH_MAX_RECORDS].
    #[arg(long)]
    batch_max_records: Option<usize>,
    /// Longest a record waits for its batch, e.g. `50ms` (the default)
    /// [env: LEDGERFLOW_BATCH_MAX_WAIT].
    #[arg(long, value_parser = parse_duration)]
    batch_max_wait: Option<Duration>,
    /// Exit once drained: nothing arrived for this long (e.g. `5s`), nothing is pending, and
    /// every partition of the subscribed topics has its position of record at its high
    /// watermark, whichever member holds it. While partitions wait for a joining member, a
    /// rebalance or a dead member's session, the run waits and says why
    /// [env: LEDGERFLOW_EXIT_WHEN_IDLE].
    #[arg(long, value_parser = parse_duration)]
    exit_when_idle: Option<Duration>,
    /// With --exit-when-idle: give up when the run has not drained this long after its start
    /// (exit code 3, with the reason), e.g. `10m`. Default: wait as long as it takes
    /// [env: LEDGERFLOW_MAX_WAIT].
    #[arg(long, value_parser = parse_duration)]
    max_wait: Option<Duration>,
    /// Graceful shutdown budget after SIGTERM/SIGINT (default `30s`; match Kubernetes'
    /// terminationGracePeriodSeconds): buffered batches commit, dispatchers finish their
    /// requests, the group is left. A second signal exits at once
    /// [env: LEDGERFLOW_SHUTDOWN_TIMEOUT].
    #[arg(long, value_parser = parse_duration)]
    shutdown_timeout: Option<Duration>,
    /// `/readyz` reports not ready when a consumer has been joining or rebalancing without
    /// partitions for longer than this (default `60s`) [env: LEDGERFLOW_NOT_READY_AFTER].
    #[arg(long, value_parser = parse_duration)]
    not_ready_after: Option<Duration>,
    /// Extra librdkafka property, repeatable: `--kafka-property security.protocol=SSL`; a
    /// value `${env:NAME}` or `${file:PATH}` is a secret reference, resolved when the client
    /// is built (`sasl.password=${file:/run/secrets/kafka}`).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = parse_property)]
    kafka_properties: Vec<(String, String)>,
    /// Serve /metrics, /healthz and /readyz on this address, e.g. `127.0.0.1:9464`
    /// [env: LEDGERFLOW_METRICS_LISTEN].
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Consumer-group protocol: `classic` (cooperative-sticky assignor; the default) or
    /// `consumer` (KIP-848, Kafka 4.0+ brokers) [env: LEDGERFLOW_GROUP_PROTOCOL].
    #[arg(long, value_parser = parse_group_protocol)]
    group_protocol: Option<GroupProtocol>,
    /// Static group membership (KIP-345): a stable id per instance, e.g. the pod name; each
    /// consumer's `group.instance.id` is `<ID>.<consumer>` [env: LEDGERFLOW_INSTANCE_ID].
    #[arg(long)]
    instance_id: Option<String>,
    /// Classic protocol: how long a silent member keeps its partitions, e.g. `45s` (the
    /// default). With `--group-protocol consumer` the broker sets it
    /// [env: LEDGERFLOW_SESSION_TIMEOUT].
    #[arg(long, value_parser = parse_duration)]
    session_timeout: Option<Duration>,
}

impl PipelineArgs {
    /// Flags over the environment over the file over the defaults; `consumers` are the
    /// command's own `--consumer` flags.
    pub(crate) fn resolve(
        &self,
        consumers: &[ConsumerKind],
        env: &Environment,
    ) -> anyhow::Result<Settings> {
        let flags = SettingsLayer {
            brokers: self.brokers.clone(),
            registry: self.registry.clone(),
            database: self.database.clone(),
            topics: self.topics.clone(),
            tenants: self.tenants.clone(),
            group_prefix: self.group_prefix.clone(),
            consumers: consumers.to_vec(),
            batch_max_records: self.batch_max_records,
            batch_max_wait: self.batch_max_wait,
            exit_when_idle: self.exit_when_idle,
            max_wait: self.max_wait,
            shutdown_timeout: self.shutdown_timeout,
            not_ready_after: self.not_ready_after,
            kafka_properties: self.kafka_properties.clone(),
            metrics_listen: self.metrics_listen.clone(),
            group_protocol: self.group_protocol,
            instance_id: self.instance_id.clone(),
            session_timeout: self.session_timeout,
        };
        Ok(Settings::resolve(flags, self.config.as_deref(), env)?)
    }

    /// The resolved settings with the store, registry client and tenants opened.
    pub(crate) async fn open(
        &self,
        env: &Environment,
    ) -> anyhow::Result<ledgerflow_service::Pipeline> {
        Ok(ledgerflow_service::Pipeline::open(self.resolve(&[], env)?).await?)
    }
}

/// `--operator` (default: `$USER`).
#[derive(Debug, Clone, Args)]
pub(crate) struct OperatorArgs {
    /// Who is acting, for the audit log (default: $USER) [env: LEDGERFLOW_OPERATOR].
    #[arg(long)]
    operator: Option<String>,
}

impl OperatorArgs {
    /// Who acts, and why.
    pub(crate) fn actor(&self, reason: &str, env: &Environment) -> ledgerflow_service::ops::Actor {
        ledgerflow_service::ops::Actor {
            operator: operator_name(self.operator.as_deref(), env),
            reason: reason.to_owned(),
        }
    }
}

/// `--consumer NAME`.
pub(crate) fn parse_consumer(raw: &str) -> Result<ConsumerKind, String> {
    ConsumerKind::parse(raw)
}

/// RFC 3339 or `YYYY-MM-DD` (midnight UTC), as micros since the epoch.
pub(crate) fn parse_time(raw: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    let parsed = time::OffsetDateTime::parse(raw, &Rfc3339).or_else(|_| {
        let date = time::Date::parse(
            raw,
            time::macros::format_description!("[year]-[month]-[day]"),
        )
        .map_err(|e| format!("{raw:?} is neither RFC 3339 nor YYYY-MM-DD: {e}"))?;
        Ok::<_, String>(date.midnight().assume_utc())
    })?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1000).map_err(|e| e.to_string())
}

/// `2026-12-07T01:02:03Z` for micros since the epoch (the micros themselves if out of range).
pub(crate) fn time(micros: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .ok()
        .and_then(|t| t.replace_nanosecond(0).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| micros.to_string())
}

/// The value, or `-` for none (text tables).
pub(crate) fn dash(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}
