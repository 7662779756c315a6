//! Several cloudapi replicas on one PostgreSQL, as separate processes: concurrent creates on
//! both never over-commit a host, and a replica killed with `kill -9` in the middle of a
//! create leaves nothing stuck: another replica takes the create over and finishes it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::Method as M;
use serde_json::{json, Value};

use crate::common::*;

/// A `cloudapi serve` process.
struct Replica {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Replica {
    fn start(database: &str, extra: Value) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let mut config = json!({"listen": "127.0.0.1:0", "database": database, "auth": {"tokens": [TOKEN]},
                                "join_tokens": [JOIN], "log_level": "warn"});
        if let (Some(base), Value::Object(extra)) = (config.as_object_mut(), extra) {
            base.extend(extra);
        }
        let path = dir.path().join("cloudapi.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cloudapi"))
            .args(["serve", "-c"])
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url =
            line.trim().strip_prefix("cloudapi listening on ").expect("the replica says where it listens");
        Replica { url: url.to_string(), child, _dir: dir }
    }

    fn send(&self, method: M, path: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
        send_to(&Client::new(), &self.url, method, path, bearer, body)
    }

    /// `kill -9`.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn postgres() -> Option<String> {
    if !backends().contains(&Backend::Postgres) {
        eprintln!("skipping: CLOUDAPI_TEST_POSTGRES is not set");
        return None;
    }
    Some(new_postgres_database())
}

#[test]
fn fifty_creates_on_two_replicas_never_over_commit_a_host() {
    let Some(database) = postgres() else { return };
    let replicas = [Replica::start(&database, json!({})), Replica::start(&database, json!({}))];
    // The host: 4096 MiB for instances of 512 MiB, so 8 fit. Its API accepts connections and
    // never answers (a listener that never accepts), so creates stay in flight, reserving.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let image = uuid::Uuid::new_v4();
    let mut registration = registration("tight", &format!("http://{}", silent.local_addr().unwrap()));
    registration["capacity"] = json!({"vcpus": 64, "memory_mib": 4096, "disk_free_mib": 100000});
    let (status, joined) = replicas[0].send(M::POST, "/hosts", Some(JOIN), Some(registration));
    assert_eq!(status, 201, "{joined}");
    let beat = json!({"capacity": {"vcpus": 64, "memory_mib": 4096, "disk_free_mib": 100000},
                      "images": [{"uuid": image, "size": 1 << 20}]});
    let path = format!("/hosts/{}/heartbeat", joined["id"].as_str().unwrap());
    assert_eq!(replicas[1].send(M::PUT, &path, joined["credential"].as_str(), Some(beat)).0, 204);

    let outcomes: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let creates: Vec<_> = (0..50)
            .map(|n| {
                let replica = &replicas[n % 2];
                scope.spawn(move || {
                    let body = json!({"image": image, "alias": format!("race-{n}"), "memory_mib": 512, "start": false});
                    replica.send(M::POST, "/instances", Some(TOKEN), Some(body))
                })
            })
            .collect();
        creates.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let placed = outcomes.iter().filter(|(status, _)| *status == 202).count();
    let refused = outcomes.iter().filter(|(_, body)| body["code"] == "NoCapacity").count();
    assert_eq!((placed, refused), (8, 42), "{outcomes:#?}");
    let (_, listed) = replicas[1].send(M::GET, "/instances", None, None);
    let reserved: u64 = listed.as_array().unwrap().iter().map(|i| i["memory_mib"].as_u64().unwrap()).sum();
    assert_eq!(reserved, 4096, "{listed:#}");
    assert_reservations_match(&database);
}

#[test]
fn a_replica_killed_mid_create_leaves_the_create_to_another() {
    let Some(database) = postgres() else { return };
    let images = ImageServer::start();
    // Big enough that its import is still going when the replica dies.
    let image = images.publish("big", 192 << 20);
    let sources = json!({"sources": [images.server.url()]});
    let mut doomed = Replica::start(&database, sources.clone());
    let survivor = Replica::start(&database, sources);
    let _host = HostAgent::join_url(&survivor.url, "h", |config| {
        config["sources"] = json!([images.server.url()]);
    });
    wait_until("the host to join", Duration::from_secs(20), || {
        let (_, hosts) = survivor.send(M::GET, "/hosts", None, None);
        (hosts[0]["state"] == "running").then_some(()).ok_or_else(|| hosts.to_string())
    });

    let body = json!({"image": image, "alias": "orphan", "memory_mib": 128, "start": false});
    let (status, placed) = doomed.send(M::POST, "/instances", Some(TOKEN), Some(body));
    assert_eq!(status, 202, "{placed:#}");
    doomed.kill();
    let uuid = placed["uuid"].as_str().unwrap().to_string();
    let (_, seen) = survivor.send(M::GET, &format!("/instances/{uuid}"), None, None);
    assert_eq!(seen["phase"], "provisioning", "killed in the middle of the create: {seen:#}");

    // The survivor's sweep takes it over once the lease runs out (30 s), and finishes it.
    let done = wait_until("the create to be finished by the survivor", Duration::from_secs(90), || {
        let (_, instance) = survivor.send(M::GET, &format!("/instances/{uuid}"), None, None);
        (instance["phase"] != "provisioning").then(|| instance.clone()).ok_or_else(|| format!("{instance:#}"))
    });
    assert_eq!(done["phase"], "created", "{done:#}");
    let (_, listed) = survivor.send(M::GET, "/instances", None, None);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    assert_reservations_match(&database);
    wait_until("the host to report it once", Duration::from_secs(20), || {
        let (_, hosts) = survivor.send(M::GET, "/hosts", None, None);
        let reported = hosts[0]["instances"].as_array().map(Vec::len);
        (reported == Some(1)).then_some(()).ok_or_else(|| hosts.to_string())
    });
}
