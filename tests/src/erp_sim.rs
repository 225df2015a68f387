//! `ledgerflow-erp-sim` as a child process of a test: started on a free port with its state in
//! a scratch directory, its admin API (`/_sim/...`) called over plain HTTP, killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::ledgerflow_bin;

/// A running simulator.
#[derive(Debug)]
pub struct ErpSim {
    child: Child,
    url: String,
}

impl ErpSim {
    /// The binary: `LEDGERFLOW_ERP_SIM_BIN`, else beside the `ledgerflow` binary.
    pub fn binary() -> PathBuf {
        std::env::var_os("LEDGERFLOW_ERP_SIM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| ledgerflow_bin().with_file_name("ledgerflow-erp-sim"))
    }

    /// Starts the simulator on a free loopback port with its state in `state` and the extra
    /// `args` (faults, seed, job delay, ...); its log goes to `stderr`.
    pub fn start(state: &str, args: &[&str], stderr: Stdio) -> Self {
        let bin = Self::binary();
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--state", state])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} (cargo build -p ledgerflow-erp-sim): {e}",
                    bin.display()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("simulator stdout"))
            .read_line(&mut line)
            .expect("reading the simulator's address");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the simulator did not start: {line:?}"))
            .to_owned();
        Self { child, url }
    }

    /// `http://HOST:PORT`, the base of every ERP and of the admin API.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One request with an optional JSON body; the JSON answer (a non-200 answer panics).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let addr = self.url.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).expect("connect to the simulator");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("read timeout");
        let body = body.map(Value::to_string).unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("request to the simulator");
        let mut raw = String::new();
        stream
            .read_to_string(&mut raw)
            .expect("answer of the simulator");
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        assert!(head.starts_with("HTTP/1.1 200"), "{method} {path}: {head}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path} JSON ({e}): {body}"))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Value {
        self.call("GET", path, None)
    }

    /// `GET /_sim/report`: documents, duplicates, rejected_auth, throttled, ...
    pub fn report(&self) -> Value {
        self.get("/_sim/report")
    }
}

impl Drop for ErpSim {
    fn drop(&mut self) {
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}
