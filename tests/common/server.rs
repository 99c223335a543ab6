//! `ledger serve` as a real child process on 127.0.0.1 (port 0), and a
//! real HTTP client for it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub struct Server {
    pub child: Child,
    pub url: String,
    pub dir: PathBuf,
}

impl Server {
    // The child is reaped in `stop` or in `Drop`, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let _ = std::fs::remove_file(dir.join("serve.json"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .arg("--data-dir")
            .arg(dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--workers", "4"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(bytes) = std::fs::read(dir.join("serve.json")) {
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    return Server {
                        child,
                        url: v["url"].as_str().unwrap().to_owned(),
                        dir: dir.to_owned(),
                    };
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Serves `dir/data` with a keys file `dir/keys.json` of `keys`.
    pub fn with_keys(dir: &Path, keys: Value) -> Server {
        let file = dir.join("keys.json");
        std::fs::write(&file, serde_json::to_vec(&json!({ "keys": keys })).unwrap()).unwrap();
        let data = dir.join("data");
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
            !self.dir.join("serve.json").exists(),
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

pub fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

pub fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
