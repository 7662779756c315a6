//! What a client without credentials, or two clients racing each other, must not get: secrets
//! in reads, an ISO destroyed or left without its record by concurrent renames and uploads.

use serde_json::{json, Value};

use crate::common::{compress, Agent, Imgapi};

#[test]
fn reads_without_credentials_show_no_metadata_value_and_no_ssh_key() {
    let imgapi = Imgapi::start();
    let disk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let image = imgapi.publish("hostile", &compress(&disk, "gzip"), "gzip", None);
    let agent = Agent::start(&[imgapi.server.url()]);
    assert_eq!(agent.import(&image).status(), 200);
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example";
    let (status, created) = agent.send(
        reqwest::Method::POST,
        "/instances",
        Some(json!({"image": image, "start": false, "ssh_keys": [key],
                    "metadata": {"db_password": "hunter2-SECRET", "role": "db"}})),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["uuid"].as_str().unwrap().to_string();
    for path in
        ["/instances".to_string(), format!("/instances/{id}"), "/instances?destroyed=true".to_string()]
    {
        let response = agent.client.get(agent.url(&path)).send().unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let text = response.text().unwrap();
        assert!(!text.contains("hunter2-SECRET"), "{path} shows a metadata value: {text}");
        assert!(
            !text.contains("AAAAC3NzaC1lZDI1NTE5") && !text.contains("ops@example"),
            "{path} shows an SSH key: {text}"
        );
    }
    let view: Value =
        agent.client.get(agent.url(&format!("/instances/{id}"))).send().unwrap().json().unwrap();
    assert_eq!(view["guest"]["metadata_keys"], json!(["db_password", "role"]), "{view}");
    assert_eq!(view["guest"]["ssh_key_count"], 1, "{view}");
    // With credentials, the guest route has the values; without, nothing.
    let anonymous = agent.client.get(agent.url(&format!("/instances/{id}/guest"))).send().unwrap();
    assert_eq!(anonymous.status(), 401);
    let (status, guest) = agent.send(reqwest::Method::GET, &format!("/instances/{id}/guest"), None);
    assert_eq!((status, guest["metadata"]["db_password"].as_str()), (200, Some("hunter2-SECRET")));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Runs `requests` at the same instant, each on its own thread; their statuses, in order.
fn at_once(agent: &Agent, requests: Vec<(reqwest::Method, String, Vec<u8>)>) -> Vec<u16> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(requests.len()));
    let threads: Vec<_> = requests
        .into_iter()
        .map(|(method, path, body)| {
            let (client, url, barrier) = (agent.client.clone(), agent.url(&path), barrier.clone());
            std::thread::spawn(move || {
                let request = client.request(method, url).bearer_auth(crate::common::TOKEN).body(body);
                barrier.wait();
                request.send().unwrap().status().as_u16()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn upload(agent: &Agent, name: &str, bytes: &[u8]) {
    let response = agent
        .client
        .put(agent.url(&format!("/isos/{name}")))
        .bearer_auth(crate::common::TOKEN)
        .body(bytes.to_vec())
        .send()
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().unwrap());
}

/// The ISOs listed, by name, with their sha256; each listed one's bytes hash to its record's.
fn isos(agent: &Agent) -> Vec<(String, String)> {
    let (status, list) = agent.send(reqwest::Method::GET, "/isos", None);
    assert_eq!(status, 200, "{list}");
    let listed: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].as_str().unwrap().to_string(), i["sha256"].as_str().unwrap().to_string()))
        .collect();
    for (name, sha256) in &listed {
        let bytes = std::fs::read(agent.dir().join("instances").join("isos").join(name)).unwrap();
        assert_eq!(&sha256_hex(&bytes), sha256, "{name}: the record is not of this file");
    }
    listed
}

#[test]
fn concurrent_renames_onto_one_name_keep_both_isos() {
    let agent = Agent::start(&[]);
    for round in 0..20 {
        let (a, b) = (format!("a{round}.iso"), format!("b{round}.iso"));
        upload(&agent, &a, format!("iso a {round}").as_bytes());
        upload(&agent, &b, format!("iso b {round}").as_bytes());
        let target = format!("c{round}.iso");
        let statuses = at_once(
            &agent,
            vec![
                (reqwest::Method::POST, format!("/isos/{a}?action=rename&to={target}"), Vec::new()),
                (reqwest::Method::POST, format!("/isos/{b}?action=rename&to={target}"), Vec::new()),
            ],
        );
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, [200, 409], "round {round}: {statuses:?}");
        let names: Vec<String> = isos(&agent).into_iter().map(|(n, _)| n).collect();
        let kept = if statuses[0] == 200 { &b } else { &a };
        assert!(names.contains(&target) && names.contains(kept), "round {round}: an ISO was lost: {names:?}");
    }
}

#[test]
fn concurrent_uploads_of_one_name_keep_the_winner_whole_and_listed() {
    let agent = Agent::start(&[]);
    for round in 0..10 {
        let name = format!("x{round}.iso");
        let bodies: Vec<Vec<u8>> = (0..2u8).map(|i| vec![i + 1; 2 << 20]).collect();
        let statuses = at_once(
            &agent,
            bodies.iter().map(|b| (reqwest::Method::PUT, format!("/isos/{name}"), b.clone())).collect(),
        );
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, [201, 409], "round {round}: {statuses:?}");
        let winner = &bodies[statuses.iter().position(|s| *s == 201).unwrap()];
        let listed = isos(&agent);
        assert!(listed.contains(&(name.clone(), sha256_hex(winner))), "round {round}: {listed:?}");
        let (status, got) = agent.send(reqwest::Method::GET, &format!("/isos/{name}"), None);
        assert_eq!(status, 200, "round {round}: {got}");

        // An upload racing a rename onto its name, and a delete of it.
        let other = format!("y{round}.iso");
        upload(&agent, &other, b"the other one");
        let racing = format!("z{round}.iso");
        let statuses = at_once(
            &agent,
            vec![
                (reqwest::Method::PUT, format!("/isos/{racing}"), vec![9u8; 1 << 20]),
                (reqwest::Method::POST, format!("/isos/{other}?action=rename&to={racing}"), Vec::new()),
                (reqwest::Method::DELETE, format!("/isos/{racing}"), Vec::new()),
            ],
        );
        assert!(statuses[..2].contains(&409) || statuses[2] == 204, "round {round}: {statuses:?}");
        let listed = isos(&agent);
        let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
        // Unless the delete took it, the other ISO is under one of its names.
        assert!(
            statuses[2] == 204 || names.contains(&other.as_str()) || names.contains(&racing.as_str()),
            "round {round}: the other ISO was lost: {statuses:?} {listed:?}"
        );
        for leftover in std::fs::read_dir(agent.dir().join("instances").join("isos")).unwrap() {
            let file = leftover.unwrap().file_name().into_string().unwrap();
            let iso = file.strip_suffix(".json").unwrap_or(&file);
            assert!(names.contains(&iso), "round {round}: {file} is on disk but not listed: {listed:?}");
        }
    }
}
