//! `ledger serve` as a real child process on 127.0.0.1 (port 0), and a
//! real HTTP client for it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub struct Server {
    pub child: Child,
    pub url: String,
    pub dir: PathBuf,
    /// Whether `dir` is a database URL.
    pub database: bool,
}

impl Server {
    // The child is reaped in `stop` or in `Drop`, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    /// Serves the ledger at `dir`: a data directory, or a database URL
    /// (see `postgres::TestStore::path`). The URL served is read from the
    /// server's first line on stderr ("serving … on URL").
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let database = dir
            .to_str()
            .filter(|s| s.starts_with("postgres://"))
            .is_some();
        if !database {
            let _ = std::fs::remove_file(dir.join("serve.json"));
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .arg(if database { "--database" } else { "--data-dir" })
            .arg(dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", "4"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && line.starts_with("serving ") {
                    if let Some(url) = line.rsplit(" on ").next() {
                        let _ = tx.send(url.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => Server {
                child,
                url,
                dir: dir.to_owned(),
                database,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not start");
            }
        }
    }

    /// Serves `dir/data` (or a fresh database, on the PostgreSQL backend)
    /// with a keys file `dir/keys.json` of `keys`.
    pub fn with_keys(dir: &Path, keys: Value) -> Server {
        let file = dir.join("keys.json");
        std::fs::write(&file, serde_json::to_vec(&json!({ "keys": keys })).unwrap()).unwrap();
        let data = match super::postgres::backend() {
            super::postgres::Backend::Sled => dir.join("data"),
            super::postgres::Backend::Postgres => super::postgres::server().database().into(),
        };
        Server::start(&data, &["--keys", file.to_str().unwrap()])
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// SIGTERM, and wait for a graceful exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            self.database || !self.dir.join("serve.json").exists(),
            "serve.json is removed on exit"
        );
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Submits `body` (which must be accepted); returns the new execution's id.
pub async fn submit_id(c: &reqwest::Client, server: &Server, body: Value) -> String {
    let (status, record) = json_of(
        c.post(server.url("/v1/executions"))
            .json(&body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(status == 200 || status == 201, "{status}: {record}");
    record["executionId"].as_str().unwrap().to_owned()
}

/// The result of execution `id`, long-polled up to 20 s: its status code
/// and body.
pub async fn result_of(c: &reqwest::Client, server: &Server, id: &str) -> (u16, Value) {
    json_of(
        c.get(server.url(&format!("/v1/executions/{id}/result?wait=20s")))
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// Execution `id` once its status is one of `statuses`, polled for up to
/// 30 s.
pub async fn once_status(
    c: &reqwest::Client,
    server: &Server,
    id: &str,
    statuses: &[&str],
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, e) = json_of(
            c.get(server.url(&format!("/v1/executions/{id}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
        if statuses.contains(&e["status"].as_str().unwrap_or("")) {
            return e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} is not {statuses:?}: {e}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

pub fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
