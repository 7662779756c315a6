//! The OpenAPI document against the running agent: it is served at `GET /api/v1/openapi.json`,
//! and every operation it declares has a route (no "does not exist" 404), so the document cannot
//! name what the agent does not serve.

use serde_json::Value;

use crate::common::{Agent, TOKEN};

#[test]
fn the_document_is_served_and_every_operation_has_a_route() {
    let agent = Agent::start(&[]);
    let (status, served) = agent.send(reqwest::Method::GET, "/openapi.json", None);
    assert_eq!(status, 200);
    let generated: Value = serde_json::from_str(agent::api::openapi::json()).unwrap();
    assert_eq!(served, generated);
    let mut checked = 0;
    for (path, methods) in generated["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            let concrete = path
                .replace("{uuid}", "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b")
                .replace("{id}", "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b")
                .replace("{name}", "absent");
            // A body that no create accepts: nothing is made, only the route answers.
            let body =
                matches!(method.as_str(), "post" | "put" | "patch").then(|| serde_json::json!({"x": 1}));
            // The whole path: not every route is under /api/v1 (`GET /metrics`).
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let url = format!("{}{concrete}", agent.base());
            let mut request = agent.client.request(method.clone(), url).bearer_auth(TOKEN);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().unwrap();
            let status = response.status().as_u16();
            let answer: Value = response.json().unwrap_or(Value::Null);
            let no_route = status == 404
                && answer["code"] == "ResourceNotFound"
                && answer["message"].as_str().is_some_and(|m| m.ends_with("does not exist"));
            assert!(!no_route, "{method} {path}: {status} {answer}");
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked} operations");
}
