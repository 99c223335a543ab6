//! The HTTP API of `ledger serve` against its description: a real
//! `ledger serve` process on 127.0.0.1.

use serde_json::json;

mod common;
use common::server::{client, error_code, json_of, submit_id, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_wait_too_long_for_a_duration_is_refused_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let id = submit_id(
        &c,
        &server,
        json!({"tenantId": "acme", "callableName": "echo"}),
    )
    .await;
    for wait in ["1e300", "680329005991479E+45s", "1e20"] {
        let (status, err) = json_of(
            c.get(server.url(&format!("/v1/executions/{id}/result")))
                .query(&[("wait", wait)])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, error_code(&err)),
            (400, "invalid"),
            "{wait}: {err}"
        );
        assert_eq!(
            err["error"]["message"],
            format!("wait: at most 60s, not {wait:?}"),
            "{wait}"
        );
    }
    assert!(server.stop().success());
}
