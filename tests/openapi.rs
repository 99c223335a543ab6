//! The OpenAPI document of `ledger serve` (src/bin/ledger/openapi.json)
//! against the server itself: it is what `GET /v1/openapi.json` serves,
//! it names every route of the router and no other, and real responses of
//! a real `ledger serve` process validate against its schemas (every field
//! the server sends documented).

use std::collections::{BTreeSet, HashSet};

use serde_json::{json, Value};

mod common;
use common::server::{client, error_code, json_of, sha256_hex, submit_id, Server};

fn document_text() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/bin/ledger/openapi.json"
    ))
    .unwrap()
}

fn document() -> Value {
    serde_json::from_str(&document_text()).unwrap()
}

/// The schema a `$ref` (`#/components/…`) names.
fn resolve<'d>(doc: &'d Value, reference: &str) -> &'d Value {
    let pointer = reference
        .strip_prefix('#')
        .unwrap_or_else(|| panic!("only local refs: {reference}"));
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("{reference} names nothing"))
}

/// A small JSON Schema (2020-12) validator for the keywords the document
/// uses: `$ref`, `type`, `const`, `enum`, `required`, `properties`,
/// `additionalProperties`, `items`, `prefixItems`, `minItems`, `maxItems`,
/// `minimum`, `maximum`, `minLength`, `maxLength`, `allOf`, `anyOf`,
/// `oneOf`. Stricter than JSON Schema in one way: an object schema that
/// does not say `additionalProperties` allows only the properties it (and
/// its `allOf`) names, so a field the server sends that the document does
/// not describe fails. Returns what is wrong, by path.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    check(doc, schema, value, at, true, &mut wrong);
    wrong
}

fn check(doc: &Value, schema: &Value, v: &Value, at: &str, strict: bool, wrong: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            wrong.push(format!("{at}: nothing is allowed here"));
        }
        return;
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        check(doc, resolve(doc, r), v, at, strict, wrong);
    }
    if let Some(types) = s.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => panic!("{at}: a type is a string or strings"),
        };
        let is = |t: &str| match t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "number" => v.is_number(),
            "integer" => v.is_i64() || v.is_u64(),
            other => panic!("unknown type {other}"),
        };
        if !types.iter().any(|t| is(t)) {
            wrong.push(format!("{at}: {v} is not of type {types:?}"));
            return;
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            wrong.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array) {
        if !options.contains(v) {
            wrong.push(format!("{at}: {v} is not one of {options:?}"));
        }
    }
    if let Some(n) = v.as_f64() {
        if s.get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            wrong.push(format!("{at}: {v} is below the minimum"));
        }
        if s.get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            wrong.push(format!("{at}: {v} is above the maximum"));
        }
    }
    if let Some(text) = v.as_str() {
        let chars = text.chars().count() as u64;
        if s.get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| chars < m)
            || s.get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| chars > m)
        {
            wrong.push(format!("{at}: {v} is not of the length allowed"));
        }
    }
    if let Some(items) = v.as_array() {
        let len = items.len() as u64;
        if s.get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
            || s.get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| len > m)
        {
            wrong.push(format!("{at}: {len} items is not a count allowed"));
        }
        let prefix = s
            .get("prefixItems")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (i, item) in items.iter().enumerate() {
            let here = format!("{at}[{i}]");
            match (prefix.get(i), s.get("items")) {
                (Some(p), _) => check(doc, p, item, &here, strict, wrong),
                (None, Some(each)) => check(doc, each, item, &here, strict, wrong),
                (None, None) => {}
            }
        }
    }
    if let Some(fields) = v.as_object() {
        if let Some(required) = s.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !fields.contains_key(name) {
                    wrong.push(format!("{at}: {name} is missing"));
                }
            }
        }
        let properties = s.get("properties").and_then(Value::as_object);
        for (name, field) in fields {
            let here = format!("{at}.{name}");
            match (
                properties.and_then(|p| p.get(name)),
                s.get("additionalProperties"),
            ) {
                (Some(p), _) => check(doc, p, field, &here, true, wrong),
                (None, Some(extra)) => check(doc, extra, field, &here, true, wrong),
                (None, None) => {}
            }
        }
        if strict && !s.contains_key("additionalProperties") {
            if let Some(known) = known_properties(doc, schema) {
                for name in fields.keys().filter(|n| !known.contains(n.as_str())) {
                    wrong.push(format!("{at}.{name}: not in the document"));
                }
            }
        }
    }
    // The branches of allOf are checked together: the fields that one
    // names are known to all.
    for branch in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check(doc, branch, v, at, false, wrong);
    }
    for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
        let Some(branches) = s.get(keyword).and_then(Value::as_array) else {
            continue;
        };
        let results: Vec<Vec<String>> = branches.iter().map(|b| validate(doc, b, v, at)).collect();
        let matching = results.iter().filter(|r| r.is_empty()).count();
        if matching == 0 || (exactly_one && matching > 1) {
            wrong.push(format!(
                "{at}: {matching} of the {keyword} branches match: {results:?}"
            ));
        }
    }
}

/// The properties an object schema names (its `allOf` and `$ref`s
/// followed); `None` when it lets any through.
fn known_properties<'d>(doc: &'d Value, schema: &'d Value) -> Option<HashSet<&'d str>> {
    let s = schema.as_object()?;
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return known_properties(doc, resolve(doc, r));
    }
    if s.get("additionalProperties")
        .is_some_and(|a| a != &Value::Bool(false))
    {
        return None;
    }
    let mut known: HashSet<&str> = s
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let branches = s.get("allOf").and_then(Value::as_array);
    if s.get("properties").is_none() && branches.is_none() {
        return None;
    }
    for branch in branches.into_iter().flatten() {
        known.extend(known_properties(doc, branch)?);
    }
    Some(known)
}

/// The schema the document gives the response of `method path` (the
/// path as the document writes it) with `status` and `content_type`.
fn response_schema<'d>(
    doc: &'d Value,
    method: &str,
    path: &str,
    status: u16,
    content_type: &str,
) -> &'d Value {
    let operation = &doc["paths"][path][method];
    assert!(
        operation.is_object(),
        "{method} {path} is not in the document"
    );
    let response = &operation["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path}: the document has no {status} response"
    );
    let media = content_type.split(';').next().unwrap().trim();
    let content = &response["content"][media];
    assert!(
        content.is_object(),
        "{method} {path} {status}: the document has no {media} content"
    );
    &content["schema"]
}

/// A real response, checked against the document: its status and content
/// type are documented and its JSON body validates. Returns the body.
async fn checked(
    doc: &Value,
    method: &str,
    path: &str,
    response: reqwest::Response,
) -> (u16, Value) {
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let (status, body) = json_of(response).await;
    let schema = response_schema(doc, method, path, status, &content_type);
    let wrong = validate(doc, schema, &body, "$");
    assert!(
        wrong.is_empty(),
        "{method} {path} {status}: {body}\ndoes not validate:\n{}",
        wrong.join("\n")
    );
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_the_file_and_takes_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_keys(
        dir.path(),
        json!([{"tenant": "acme", "sha256": sha256_hex("acme-key")}]),
    );
    let c = client();
    // No key: the document is public, the rest is not.
    let r = c.get(server.url("/v1/openapi.json")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), document_text());
    let (status, err) = json_of(c.get(server.url("/v1/queue")).send().await.unwrap()).await;
    assert_eq!((status, error_code(&err)), (401, "unauthorized"));
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["paths"]["/v1/openapi.json"]["get"]["security"],
        json!([])
    );
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    assert!(server.stop().success());
}

/// Every `(METHOD, path)` of `fn router` in serve.rs: each
/// `.route("PATH", get(…).post(…))`.
fn router_routes() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/bin/ledger/serve.rs"
    ))
    .unwrap();
    let start = source.find("fn router(").expect("serve.rs has fn router");
    let body = &source[start..];
    let body = &body[..body.find("\n}\n").expect("fn router ends")];
    let mut routes = BTreeSet::new();
    for (at, _) in body.match_indices(".route(") {
        let rest = &body[at + ".route(".len()..];
        // The route's arguments run to the parenthesis that closes it.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .expect("a route closes")
            .0;
        let args = &rest[..end];
        let path = args.split('"').nth(1).expect("a route's path is a literal");
        let handlers = &args[args.find(',').expect("a route has handlers")..];
        let mut methods = 0;
        for method in ["get", "post", "put", "patch", "delete"] {
            let named = handlers.match_indices(&format!("{method}(")).any(|(i, _)| {
                i == 0
                    || !handlers.as_bytes()[i - 1].is_ascii_alphanumeric()
                        && handlers.as_bytes()[i - 1] != b'_'
                        && handlers.as_bytes()[i - 1] != b':'
            });
            if named {
                routes.insert((method.to_uppercase(), path.to_owned()));
                methods += 1;
            }
        }
        assert!(methods > 0, "no method found for the route {path}: {args}");
    }
    assert!(
        routes.len() > 20,
        "the router's routes were read: {routes:?}"
    );
    routes
}

#[test]
fn the_document_names_every_route_of_the_router_and_no_other() {
    let doc = document();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            assert!(
                ["get", "post", "put", "patch", "delete"].contains(&method.as_str()),
                "{path}: {method}"
            );
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let routes = router_routes();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "routes without a document entry: {undocumented:?}; document entries without a route: {unrouted:?}"
    );
    // Every reference resolves, every path parameter is declared.
    let text = document_text();
    for (at, _) in text.match_indices("\"$ref\": \"") {
        let rest = &text[at + 9..];
        resolve(&doc, &rest[..rest.find('"').unwrap()]);
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        let named: BTreeSet<&str> = path
            .split('{')
            .skip(1)
            .map(|p| &p[..p.find('}').unwrap()])
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| match p.get("$ref").and_then(Value::as_str) {
                    Some(r) => resolve(&doc, r),
                    None => p,
                })
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            assert_eq!(named, declared, "{method} {path}");
        }
    }
    // Every link names an operation, and the path parameters it takes.
    let operations: Vec<(&str, &str)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .values()
                .map(move |op| (op["operationId"].as_str().unwrap(), path.as_str()))
        })
        .collect();
    let ids: BTreeSet<&str> = operations.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), operations.len(), "operationIds are unique");
    let mut links = 0;
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            for response in op["responses"].as_object().unwrap().values() {
                for link in response["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    let target = link["operationId"].as_str().unwrap();
                    let (_, path) = operations
                        .iter()
                        .find(|(id, _)| *id == target)
                        .unwrap_or_else(|| panic!("a link to {target}, which is not an operation"));
                    let given: BTreeSet<&str> = link["parameters"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .map(String::as_str)
                        .collect();
                    let named: BTreeSet<&str> = path
                        .split('{')
                        .skip(1)
                        .map(|p| &p[..p.find('}').unwrap()])
                        .collect();
                    assert_eq!(given, named, "the link to {target}");
                    links += 1;
                }
            }
        }
    }
    assert!(links > 0);
}

#[test]
fn the_validator_refuses_what_the_document_does_not_describe() {
    let doc = document();
    let execution = json!({"$ref": "#/components/schemas/Execution"});
    let record = json!({"executionId": "01a2172a-eeb5-704e-a9e1-5a6d17479093", "tenantId": "acme",
        "callableName": "echo", "config": {"mode": "silent", "priority": 50, "timeoutMs": 1},
        "status": "queued", "queuedAt": "2026-01-01T00:00:00Z", "targetBindingApplied": false});
    assert_eq!(
        validate(&doc, &execution, &record, "$"),
        Vec::<String>::new()
    );
    for (field, value) in [
        ("status", json!("sleeping")),
        ("colour", json!("red")),
        ("attempt", json!(-1)),
        ("config", json!({"mode": "silent"})),
    ] {
        let mut bad = record.clone();
        bad[field] = value;
        assert!(!validate(&doc, &execution, &bad, "$").is_empty(), "{field}");
    }
    let mut no_id = record.clone();
    no_id.as_object_mut().unwrap().remove("executionId");
    assert!(!validate(&doc, &execution, &no_id, "$").is_empty());
    // A claimed attempt is a record and its lease; the record alone is not.
    let attempt = json!({"$ref": "#/components/schemas/ClaimedAttempt"});
    assert!(!validate(&doc, &attempt, &record, "$").is_empty());
    let mut leased = record.clone();
    leased["leaseUntil"] = json!("2026-01-01T00:00:30Z");
    assert_eq!(validate(&doc, &attempt, &leased, "$"), Vec::<String>::new());
    leased["leaseUntl"] = json!(1);
    assert!(!validate(&doc, &attempt, &leased, "$").is_empty());
    // An event is exactly one kind, by its type.
    let event = json!({"$ref": "#/components/schemas/Event"});
    let started = json!({"seq": 2, "at": "2026-01-01T00:00:00Z", "executionId": record["executionId"],
        "tenantId": "acme", "type": "started", "attempt": 1, "leaseMs": 100});
    assert_eq!(validate(&doc, &event, &started, "$"), Vec::<String>::new());
    let mut odd = started.clone();
    odd["type"] = json!("completed");
    assert!(!validate(&doc, &event, &odd, "$").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_responses_validate_against_the_document() {
    let doc = document();
    let dir = common::store();
    let server = Server::start(dir.path(), &[]);
    let c = client();
    let post = |path: &str, body: Value| c.post(server.url(path)).json(&body).send();
    let get = |path: &str| c.get(server.url(path)).send();

    // Submit: created, then an idempotency hit.
    let submission = json!({"tenantId": "acme", "callableName": "resize", "input": "cat.png",
        "context": {"size": "64"}, "idempotencyKey": "k1", "metadata": {"by": ["me", 1]},
        "config": {"priority": 70, "timeoutMs": 60000,
                   "retry": {"maxAttempts": 2, "initialDelayMs": 0},
                   "targetBinding": {"target": "var:thumb"}}});
    let (status, record) = checked(
        &doc,
        "post",
        "/v1/executions",
        post("/v1/executions", submission.clone()).await.unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{record}");
    let id = record["executionId"].as_str().unwrap().to_owned();
    let (status, _) = checked(
        &doc,
        "post",
        "/v1/executions",
        post("/v1/executions", submission).await.unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, batch) = checked(
        &doc,
        "post",
        "/v1/executions/batch",
        post(
            "/v1/executions/batch",
            json!({"tenantId": "acme", "executions": [
                {"callableName": "echo", "input": "x", "config": {"mode": "silent"}},
                {"callableName": "later", "config": {"mode": "deferred", "callbackUrl": "http://127.0.0.1:9/hook"}},
            ]}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    let echo = batch["executions"][0]["executionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let held = batch["executions"][1]["executionId"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, _) = checked(
        &doc,
        "get",
        "/v1/executions/{id}",
        get(&format!("/v1/executions/{id}")).await.unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = checked(&doc, "get", "/v1/queue", get("/v1/queue").await.unwrap()).await;
    assert_eq!(status, 200);
    let (status, workers) = checked(
        &doc,
        "get",
        "/v1/workers",
        get("/v1/workers").await.unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        workers["callablesWithoutWorker"]
            .as_array()
            .unwrap()
            .contains(&json!("resize")),
        "{workers}"
    );

    // The worker protocol: claim, heartbeat, complete; a stale answer.
    let (status, claimed) = checked(
        &doc,
        "post",
        "/v1/workers/claim",
        post(
            "/v1/workers/claim",
            json!({"worker": "w-1", "callables": ["resize"], "leaseMs": 10000}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        claimed["attempts"][0]["executionId"],
        id.as_str(),
        "{claimed}"
    );
    let attempt = format!("/v1/executions/{id}/attempts/1");
    let (status, beat) = checked(
        &doc,
        "post",
        "/v1/executions/{id}/attempts/{n}/heartbeat",
        post(
            &format!("{attempt}/heartbeat"),
            json!({"progress": {"done": 0.5}}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, &beat["cancelRequested"]), (200, &json!(false)));
    let (status, done) = checked(
        &doc,
        "post",
        "/v1/executions/{id}/attempts/{n}/complete",
        post(
            &format!("{attempt}/complete"),
            json!({"output": {"url": "s3://t/cat.png"}}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, &done["status"]), (200, &json!("completed")));
    let (status, stale) = checked(
        &doc,
        "post",
        "/v1/executions/{id}/attempts/{n}/fail",
        post(
            &format!("{attempt}/fail"),
            json!({"error": {"code": "x", "message": "y"}}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&stale)), (409, "stale_attempt"));

    // Results, events, cancel and release.
    let (status, _) = checked(
        &doc,
        "get",
        "/v1/executions/{id}/result",
        get(&format!("/v1/executions/{echo}/result?wait=20s"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = checked(
        &doc,
        "get",
        "/v1/executions/{id}/result",
        get(&format!("/v1/executions/{held}/result?wait=10ms"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202);
    let (status, history) = checked(
        &doc,
        "get",
        "/v1/executions/{id}/events",
        get(&format!("/v1/executions/{id}/events")).await.unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(&kinds[..3], ["queued", "started", "completed"], "{history}");
    let (status, _) = checked(
        &doc,
        "post",
        "/v1/executions/{id}/release",
        c.post(server.url(&format!("/v1/executions/{held}/release")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, err) = checked(
        &doc,
        "post",
        "/v1/executions/{id}/cancel",
        post(
            &format!("/v1/executions/{id}/cancel"),
            json!({"reason": "late"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&err)), (409, "conflict"));

    // Retry by hand: a completed one is refused; a cancelled one runs
    // again, and its history ends with `retried`; the bulk form counts.
    let (status, err) = checked(
        &doc,
        "post",
        "/v1/executions/{id}/retry",
        c.post(server.url(&format!("/v1/executions/{id}/retry")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, error_code(&err)), (409, "conflict"));
    let (_, later) = json_of(
        post(
            "/v1/executions",
            json!({"tenantId": "acme", "callableName": "later", "config": {"mode": "deferred"}}),
        )
        .await
        .unwrap(),
    )
    .await;
    let later = later["executionId"].as_str().unwrap().to_owned();
    let (status, _) = json_of(
        post(&format!("/v1/executions/{later}/cancel"), json!({}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, rerun) = checked(
        &doc,
        "post",
        "/v1/executions/{id}/retry",
        post(
            &format!("/v1/executions/{later}/retry"),
            json!({"reason": "released by hand", "by": "ops", "attempts": 2}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!((status, &rerun["retryOf"]), (201, &json!(later)), "{rerun}");
    let (_, history) = checked(
        &doc,
        "get",
        "/v1/executions/{id}/events",
        get(&format!("/v1/executions/{later}/events"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        history.as_array().unwrap().last().unwrap()["type"],
        "retried"
    );
    let (status, report) = checked(
        &doc,
        "post",
        "/v1/executions/retry",
        post("/v1/executions/retry", json!({"dryRun": true}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &report["dryRun"]), (200, &json!(true)), "{report}");

    // Schedules: added (a per-second one, which fires), listed, refused,
    // paused, resumed, removed; a firing's record carries its slot.
    let (status, added) = checked(
        &doc,
        "post",
        "/v1/schedules",
        post(
            "/v1/schedules",
            json!({"tenantId": "acme", "name": "tick", "cron": "* * * * * *", "timezone": "UTC",
                   "missed": "once", "by": "ops", "submission": {"callableName": "echo", "input": "t"}}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    for (body, code) in [
        (
            json!({"tenantId": "acme", "name": "tick", "cron": "* * * * *", "submission": {"callableName": "echo"}}),
            409,
        ),
        (
            json!({"tenantId": "acme", "name": "bad", "cron": "nope", "submission": {"callableName": "echo"}}),
            400,
        ),
    ] {
        let (status, _) = checked(
            &doc,
            "post",
            "/v1/schedules",
            post("/v1/schedules", body).await.unwrap(),
        )
        .await;
        assert_eq!(status, code);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let fired = loop {
        let (status, listed) = checked(
            &doc,
            "get",
            "/v1/schedules",
            get("/v1/schedules?tenantId=acme").await.unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        if let Some(id) = listed["schedules"][0]["lastFired"]["executionId"].as_str() {
            break id.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the schedule did not fire: {listed}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let (_, record) = checked(
        &doc,
        "get",
        "/v1/executions/{id}",
        get(&format!("/v1/executions/{fired}")).await.unwrap(),
    )
    .await;
    assert_eq!(record["schedule"]["name"], "tick");
    let (_, history) = checked(
        &doc,
        "get",
        "/v1/executions/{id}/events",
        get(&format!("/v1/executions/{fired}/events"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(history[0]["schedule"]["name"], "tick");
    for (path, template, code) in [
        (
            "/v1/schedules/tick/pause?tenantId=acme",
            "/v1/schedules/{name}/pause",
            200,
        ),
        (
            "/v1/schedules/tick/pause?tenantId=acme",
            "/v1/schedules/{name}/pause",
            409,
        ),
        (
            "/v1/schedules/tick/resume?tenantId=acme",
            "/v1/schedules/{name}/resume",
            200,
        ),
        (
            "/v1/schedules/nope/resume?tenantId=acme",
            "/v1/schedules/{name}/resume",
            404,
        ),
    ] {
        let (status, _) = checked(
            &doc,
            "post",
            template,
            c.post(server.url(path)).send().await.unwrap(),
        )
        .await;
        assert_eq!(status, code, "{path}");
    }
    let (status, _) = checked(
        &doc,
        "delete",
        "/v1/schedules/{name}",
        c.delete(server.url("/v1/schedules/tick?tenantId=acme"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);

    // Fair shares: set, refused (a weight out of range, an unknown
    // field), listed, put back.
    let put = |path: &str, body: Value| c.put(server.url(path)).json(&body).send();
    let (status, share) = checked(
        &doc,
        "put",
        "/v1/tenants/{tenant}/share",
        put("/v1/tenants/acme/share", json!({"weight": 3, "limit": 2}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{share}");
    assert_eq!(share["weight"], 3);
    for body in [json!({"weight": 0}), json!({"weight": 2, "burst": 1})] {
        let (status, refused) = checked(
            &doc,
            "put",
            "/v1/tenants/{tenant}/share",
            put("/v1/tenants/acme/share", body).await.unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{refused}");
    }
    let (status, listed) =
        checked(&doc, "get", "/v1/shares", get("/v1/shares").await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(listed["shares"][0]["limit"], 2, "{listed}");
    let (status, share) = checked(
        &doc,
        "delete",
        "/v1/tenants/{tenant}/share",
        c.delete(server.url("/v1/tenants/acme/share"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, &share["weight"]), (200, &json!(1)), "{share}");

    // The ledger-wide reads.
    for (method, path) in [
        ("get", "/v1/head"),
        ("get", "/v1/stats"),
        ("post", "/v1/verify"),
        ("post", "/v1/reindex"),
        ("get", "/healthz"),
    ] {
        let req = c.request(method.to_uppercase().parse().unwrap(), server.url(path));
        let (status, _) = checked(&doc, method, path, req.send().await.unwrap()).await;
        assert_eq!(status, 200, "{path}");
    }
    let (status, _) = checked(
        &doc,
        "get",
        "/v1/diff",
        get("/v1/diff?fromSeq=0&toSeq=3").await.unwrap(),
    )
    .await;
    assert_eq!(status, 200);

    // Refusals: 400 (both kinds), 404, a bad path parameter.
    for (req, path, method, code) in [
        (
            post(
                "/v1/executions",
                json!({"tenantId": "acme", "callableName": "echo", "colour": 1}),
            ),
            "/v1/executions",
            "post",
            "invalid",
        ),
        (
            post("/v1/executions", json!({"tenantId": "acme"})),
            "/v1/executions",
            "post",
            "malformed_json",
        ),
        (
            get("/v1/executions/01a2172a-eeb5-704e-a9e1-5a6d17479093"),
            "/v1/executions/{id}",
            "get",
            "not_found",
        ),
        (
            get("/v1/executions/nope"),
            "/v1/executions/{id}",
            "get",
            "invalid",
        ),
        (
            post(
                &format!("/v1/executions/{id}/attempts/0/complete"),
                json!({"output": 1}),
            ),
            "/v1/executions/{id}/attempts/{n}/complete",
            "post",
            "invalid",
        ),
    ] {
        let (_, err) = checked(&doc, method, path, req.await.unwrap()).await;
        assert_eq!(error_code(&err), code, "{err}");
    }

    // The streams: SSE and JSON lines, each event an Event; metrics as text.
    let event = json!({"$ref": "#/components/schemas/Event"});
    let r = get("/v1/events?fromSeq=1&toSeq=4").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let media = r.headers()["content-type"].to_str().unwrap().to_owned();
    response_schema(&doc, "get", "/v1/events", 200, &media);
    let text = r.text().await.unwrap();
    let data: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(data.len(), 5, "four events and the end: {text}");
    for e in &data[..4] {
        assert_eq!(validate(&doc, &event, e, "$"), Vec::<String>::new(), "{e}");
    }
    assert_eq!(data[4], json!({"lastSeq": 4}));
    let r = get("/v1/events?fromSeq=5&toSeq=4").await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = c
        .get(server.url("/v1/events?toSeq=4"))
        .header("Last-Event-ID", "4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(doc["paths"]["/v1/events"]["get"]["responses"]["204"].is_object());
    let r = get("/v1/export").await.unwrap();
    let media = r.headers()["content-type"].to_str().unwrap().to_owned();
    response_schema(&doc, "get", "/v1/export", 200, &media);
    let lines = r.text().await.unwrap();
    let mut types = HashSet::new();
    for line in lines.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        assert_eq!(validate(&doc, &event, &e, "$"), Vec::<String>::new(), "{e}");
        for field in ["record", "prev", "hash"] {
            assert!(e[field].is_string(), "{field} in {e}");
        }
        types.insert(e["type"].as_str().unwrap().to_owned());
    }
    for kind in ["queued", "started", "completed", "released"] {
        assert!(types.contains(kind), "{kind} in {types:?}");
    }
    let r = get("/metrics").await.unwrap();
    let media = r.headers()["content-type"].to_str().unwrap().to_owned();
    response_schema(&doc, "get", "/metrics", 200, &media);
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_refusals_validate_against_the_document() {
    let doc = document();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::with_keys(
        dir.path(),
        json!([{"tenant": "acme", "sha256": sha256_hex("acme-key")}]),
    );
    let c = client();
    let (status, _) = checked(
        &doc,
        "get",
        "/v1/queue",
        c.get(server.url("/v1/queue")).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    let r = c
        .get(server.url("/v1/head"))
        .bearer_auth("acme-key")
        .send()
        .await
        .unwrap();
    let (status, _) = checked(&doc, "get", "/v1/head", r).await;
    assert_eq!(status, 403);
    let id = {
        let r = c
            .post(server.url("/v1/executions"))
            .bearer_auth("acme-key")
            .json(&json!({"callableName": "echo"}))
            .send()
            .await
            .unwrap();
        checked(&doc, "post", "/v1/executions", r).await.1["executionId"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let r = c
        .get(server.url(&format!("/v1/executions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(checked(&doc, "get", "/v1/executions/{id}", r).await.0, 401);
    assert!(server.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_wait_too_long_for_a_duration_is_refused_like_any_other() {
    let dir = common::store();
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
