//! A real Apache Kafka cluster for tests, started through `scripts/kafka` (the launcher the demo
//! and the benchmark use) from the jars `make setup` puts in `.local/kafka/lib/`.
//!
//! [`KafkaCluster::shared`] is one single-node cluster per test binary, started on first use and
//! stopped by the launcher's owner watch when the binary exits (a static is never dropped);
//! tests on it use their own topics and groups. [`KafkaCluster::start`] is a cluster of a test's
//! own (the failover tests kill and restart its nodes), stopped when it is dropped.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::block_on;

/// The launcher script (`LEDGERFLOW_KAFKA_SCRIPT` overrides).
pub fn kafka_script() -> PathBuf {
    std::env::var_os("LEDGERFLOW_KAFKA_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka"))
}

/// A running KRaft cluster of combined broker+controller nodes on 127.0.0.1.
#[derive(Debug)]
pub struct KafkaCluster {
    /// `host:port,...` of every node.
    pub bootstrap: String,
    /// Number of nodes.
    pub nodes: u8,
    dir: PathBuf,
    owned: bool,
    /// With `start_tls`: the SSL (mTLS) and SASL_SSL listeners and their client material.
    pub tls: Option<TlsListeners>,
}

/// The secured listeners of a `--tls` cluster (see `scripts/kafka`).
#[derive(Debug, Clone)]
pub struct TlsListeners {
    /// `host:port` of the SSL listener; client certificates required.
    pub ssl: String,
    /// `host:port` of the SASL_SSL listener (SCRAM-SHA-512).
    pub sasl_ssl: String,
    /// The CA that signed the broker's and the client's certificates (PEM).
    pub ca: PathBuf,
    /// The client certificate (PEM).
    pub client_cert: PathBuf,
    /// The client key (PEM).
    pub client_key: PathBuf,
    /// A file holding the SCRAM password of user `ledgerflow`.
    pub scram_password_file: PathBuf,
}

/// Where a partition lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition id.
    pub partition: i32,
    /// Node id of the leader (-1 when it has none).
    pub leader: i32,
    /// Node ids of the in-sync replicas.
    pub isr: Vec<i32>,
}

impl KafkaCluster {
    /// The binary's shared single-node cluster.
    pub fn shared() -> &'static KafkaCluster {
        static SHARED: OnceLock<KafkaCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut cluster = Self::launch(1, true);
            cluster.owned = false;
            cluster
        })
    }

    /// A cluster of `nodes` (1 or 3) for one test, stopped on drop.
    pub fn start(nodes: u8) -> Self {
        Self::launch_with(nodes, false, false)
    }

    /// A single node with SSL (mTLS) and SASL_SSL/SCRAM listeners besides PLAINTEXT, for one
    /// test, stopped on drop.
    pub fn start_tls() -> Self {
        Self::launch_with(1, false, true)
    }

    fn launch(nodes: u8, remove_on_exit: bool) -> Self {
        Self::launch_with(nodes, remove_on_exit, false)
    }

    fn launch_with(nodes: u8, remove_on_exit: bool, tls: bool) -> Self {
        let root = std::env::temp_dir().join("ledgerflow-test-kafka");
        std::fs::create_dir_all(&root).expect("kafka test root");
        let dir = root.join(format!(
            "{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let base = free_port_block(u16::from(nodes) * 2 + if tls { 2 } else { 0 });
        let mut cmd = Command::new(kafka_script());
        cmd.arg("start")
            .arg("--dir")
            .arg(&dir)
            .args(["--nodes", &nodes.to_string()])
            .args(["--port", &base.to_string()])
            .args(["--heap", "384m"])
            .args(["--owner-pid", &std::process::id().to_string()]);
        if remove_on_exit {
            cmd.arg("--remove-on-exit");
        }
        if tls {
            cmd.arg("--tls");
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", kafka_script().display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "scripts/kafka start failed ({}; run `make setup` for the jars):\n{}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("BOOTSTRAP="))
            .unwrap_or_else(|| panic!("scripts/kafka printed no BOOTSTRAP line:\n{stdout}"))
            .to_owned();
        let line = |prefix: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(str::to_owned)
        };
        let tls = tls.then(|| {
            let material = dir.join("tls");
            TlsListeners {
                ssl: line("BOOTSTRAP_SSL=").expect("BOOTSTRAP_SSL line"),
                sasl_ssl: line("BOOTSTRAP_SASL_SSL=").expect("BOOTSTRAP_SASL_SSL line"),
                ca: material.join("ca.pem"),
                client_cert: material.join("client.pem"),
                client_key: material.join("client.key"),
                scram_password_file: material.join("scram-password"),
            }
        });
        Self {
            bootstrap,
            nodes,
            dir,
            owned: true,
            tls,
        }
    }

    fn script(&self, args: &[&str]) -> String {
        let out = Command::new(kafka_script())
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", kafka_script().display()));
        assert!(
            out.status.success(),
            "scripts/kafka {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kill -9 of node `node` (1-based).
    pub fn kill(&self, node: i32) {
        self.script(&["kill", "--node", &node.to_string()]);
    }

    /// Starts node `node` again and waits until the cluster answers with every node.
    pub fn restart(&self, node: i32) {
        self.script(&["restart", "--node", &node.to_string()]);
    }

    /// The cluster's directory (node logs under `node-N/`).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .expect("admin client")
    }

    fn metadata_consumer(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", "ledgerflow-testkit")
            .create()
            .expect("metadata consumer")
    }

    /// Creates a topic (replication factor = the number of nodes) and waits until every
    /// partition has a leader. Panics if the topic exists: tests on a shared cluster must use
    /// names of their own.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.create_topic_with(name, partitions, &[]);
    }

    /// [`KafkaCluster::create_topic`] with topic configs (e.g. `max.message.bytes`).
    pub fn create_topic_with(&self, name: &str, partitions: u32, configs: &[(&str, &str)]) {
        let replication = i32::from(self.nodes);
        let partitions = i32::try_from(partitions).expect("partition count");
        let admin = self.admin();
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        for (key, value) in configs {
            topic = topic.set(key, value);
        }
        let results = block_on(admin.create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        ))
        .expect("create_topics");
        for result in results {
            if let Err((topic, code)) = result {
                panic!("creating topic {topic}: {code} (topic names must be unique per test)");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self
                .partitions(name)
                .is_some_and(|p| p.len() == partitions as usize && p.iter().all(|i| i.leader >= 0));
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "topic {name} has no leader for every partition after 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Leader and in-sync replicas of every partition of `topic` (`None`: unknown topic).
    pub fn partitions(&self, topic: &str) -> Option<Vec<PartitionInfo>> {
        let consumer = self.metadata_consumer();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .ok()?;
        let t = metadata.topics().iter().find(|t| t.name() == topic)?;
        if t.error().is_some() {
            return None;
        }
        let mut out: Vec<PartitionInfo> = t
            .partitions()
            .iter()
            .map(|p| PartitionInfo {
                partition: p.id(),
                leader: p.leader(),
                isr: p.isr().to_vec(),
            })
            .collect();
        out.sort_by_key(|p| p.partition);
        Some(out)
    }

    /// High watermark of every partition of `topic`.
    pub fn high_watermarks(&self, topic: &str) -> BTreeMap<i32, i64> {
        let consumer = self.metadata_consumer();
        let partitions = self
            .partitions(topic)
            .unwrap_or_else(|| panic!("unknown topic {topic}"));
        partitions
            .iter()
            .map(|p| {
                let (_, high) = consumer
                    .fetch_watermarks(topic, p.partition, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("watermarks of {topic}/{}: {e}", p.partition));
                (p.partition, high)
            })
            .collect()
    }

    /// Offsets committed to Kafka by `group` for `topic` (partitions without a commit left out).
    pub fn committed(&self, group: &str, topic: &str) -> BTreeMap<i32, i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("group.id", group)
            .create()
            .expect("committed-offsets consumer");
        let partitions = self
            .partitions(topic)
            .unwrap_or_else(|| panic!("unknown topic {topic}"));
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(topic, p.partition);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        if self.owned {
            let _stopped = Command::new(kafka_script())
                .arg("stop")
                .arg("--dir")
                .arg(&self.dir)
                .arg("--kill")
                .output();
            let _removed = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The first port of `len` consecutive free ports, below Linux's ephemeral range (32768+) so
/// that outgoing connections do not take them between this check and the broker's bind.
fn free_port_block(len: u16) -> u16 {
    let seed = u32::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..4].try_into().expect("4"));
    for attempt in 0..200u32 {
        let base = 20_000 + ((seed.wrapping_add(attempt * 7919)) % 12_000) as u16;
        let free = (0..len).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no block of {len} free ports between 20000 and 32000");
}
