//! The fleet benchmark (`bench/fleet.sh` runs it): a release `cloudapi` on a PostgreSQL of its
//! own, 1,000 simulated hosts heartbeating every 5 s with 100 instances each (100,000 in the
//! database), and `dry_run` placements while they do; then, with the test guest, an
//! instance's create-to-`running` through cloudapi against the same create straight on the
//! agent. Prints a Markdown table. Bounded: every phase has a fixed count and duration, and
//! traffic stays on 127.0.0.1.
//!
//! Environment: `PG_ADMIN` (an admin URL, required), `CLOUDAPI_BIN` (default
//! `target/release/cloudapi`), `HOSTS` (1000), `PER_HOST` (100), `SECS` (30), `DRY_RUNS`
//! (300), `CREATES` (5), `AGENT_TEST_GUEST` (the create part is skipped without it).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

const TOKEN: &str = "a-bench-user-token-0123";
const JOIN: &str = "a-bench-join-token-0123";

/// A request's JSON answer (the bench stops at the first failure).
trait Answer {
    async fn value(self) -> Value;
}

impl Answer for reqwest::RequestBuilder {
    async fn value(self) -> Value {
        self.send().await.unwrap().json().await.unwrap()
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Quantile `q` (0..=1) of sorted durations, in milliseconds.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

/// CPU seconds (user + system) of process `pid` so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat(5): 11 and 12 after the state field.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of every `postgres` process (the bench's server is the machine's only one).
fn postgres_cpu_secs() -> f64 {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres") {
            total += cpu_secs(pid);
        }
    }
    total
}

struct Cloud {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Cloud {
    fn start(bin: &str, database: &str) -> Cloud {
        let dir = tempfile::tempdir().unwrap();
        let config = json!({"listen": "127.0.0.1:0", "database": database, "auth": {"tokens": [TOKEN]},
                            "join_tokens": [JOIN], "log_level": "warn", "host_timeout_secs": 30});
        let path = dir.path().join("cloudapi.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let mut child = Command::new(bin)
            .args(["serve", "-c"])
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("cloudapi starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url =
            line.trim().strip_prefix("cloudapi listening on ").expect("cloudapi says where").to_string();
        Cloud { child, url, _dir: dir }
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn new_database(admin: &str) -> String {
    use sqlx::Connection;
    let name = format!("fleet_bench_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin).await.expect("PG_ADMIN answers");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    let base = admin.rsplit_once('/').map(|(base, _)| base).unwrap_or(admin);
    format!("{base}/{name}")
}

struct SimHost {
    id: String,
    credential: String,
    beat: Value,
}

/// Registers `hosts` hosts and writes `per_host` instances of each straight into the table (a
/// seed: what the fleet would hold after months), with the heartbeats that report them.
async fn seed(
    client: &reqwest::Client,
    cloud: &Cloud,
    database: &str,
    hosts: usize,
    per_host: usize,
) -> Vec<SimHost> {
    let images: Vec<Value> = (0..5).map(|n| json!({"uuid": Uuid::new_v4(), "size": (n + 1) << 28})).collect();
    let mut sims = Vec::with_capacity(hosts);
    for n in 0..hosts {
        let registration = json!({"name": format!("sim-{n:04}"), "url": format!("http://127.0.0.1:9/{n}"),
            "hypervisor": if n % 4 == 0 { "bhyve" } else { "qemu" }, "tags": {"rack": format!("r{}", n % 20)},
            "capacity": {"vcpus": 64, "memory_mib": 512 * 1024, "disk_free_mib": 8 << 20}});
        let answer: Value = client
            .post(format!("{}/api/v1/hosts", cloud.url))
            .bearer_auth(JOIN)
            .json(&registration)
            .value()
            .await;
        let instances: Vec<Value> = (0..per_host)
            .map(|i| json!({"uuid": Uuid::new_v4(), "alias": format!("vm-{n}-{i}"), "state": "running",
                            "image": images[i % images.len()]["uuid"], "vcpus": 1 + (i % 4), "memory_mib": 1024, "disk_mib": 10240}))
            .collect();
        let held: Vec<Value> = images.iter().filter(|_| n % 3 != 0).cloned().collect();
        let beat = json!({"capacity": {"vcpus": 64, "memory_mib": 512 * 1024, "disk_free_mib": 8 << 20},
                          "allocated": {"vcpus": per_host * 2, "memory_mib": per_host * 1024, "disk_mib": per_host * 10240},
                          "images": held, "instances": instances});
        sims.push(SimHost {
            id: answer["id"].as_str().unwrap().to_string(),
            credential: answer["credential"].as_str().unwrap().to_string(),
            beat,
        });
    }
    let pool = sqlx::PgPool::connect(database).await.unwrap();
    let now = chrono_ms();
    for sim in &sims {
        let mut query = String::from("INSERT INTO instances (uuid, alias, host_id, phase, adopted, vcpus, memory_mib, disk_mib, image, request, placement, progress, error, lease_owner, lease_until_ms, created_ms, updated_ms) VALUES ");
        for (i, instance) in sim.beat["instances"].as_array().unwrap().iter().enumerate() {
            if i > 0 {
                query.push(',');
            }
            query.push_str(&format!(
                "('{}', '{}', '{}', 'created', 0, {}, 1024, 10240, '{}', '{{}}', 'null', '{{\"step\":\"done\"}}', NULL, NULL, NULL, {now}, {now})",
                instance["uuid"].as_str().unwrap(),
                instance["alias"].as_str().unwrap(),
                sim.id,
                instance["vcpus"],
                instance["image"].as_str().unwrap(),
            ));
        }
        sqlx::query(&query).execute(&pool).await.unwrap();
    }
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    // One heartbeat from each, so that every inventory is in place before anything is measured.
    for sim in &sims {
        let sent = client
            .put(format!("{}/api/v1/hosts/{}/heartbeat", cloud.url, sim.id))
            .bearer_auth(&sim.credential)
            .json(&sim.beat)
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status().as_u16(), 204);
    }
    sims
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The `n`th dry run: sizes, an image some hosts hold, an anti-affinity rule every 5th time,
/// a host tag every 7th.
fn dry_run_body(sims: &[SimHost], n: usize) -> Value {
    let image = sims[n % sims.len()].beat["images"]
        .get(0)
        .map(|i| i["uuid"].clone())
        .unwrap_or(json!(Uuid::new_v4()));
    json!({"image": image, "vcpus": 1 + n % 8, "memory_mib": 1024 * (1 + n % 16), "disk_mib": 20480, "dry_run": true,
           "affinity": if n % 5 == 0 { json!(["instance!=vm-1-*"]) } else { json!([]) },
           "host_tags": if n % 7 == 0 { json!({"rack": "r3"}) } else { json!({}) }})
}

struct Figures {
    rows: Vec<(String, String)>,
}

impl Figures {
    fn add(&mut self, what: &str, value: String) {
        println!("{what}: {value}");
        self.rows.push((what.to_string(), value));
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let admin = std::env::var("PG_ADMIN").expect("PG_ADMIN: a PostgreSQL admin URL");
    let bin = std::env::var("CLOUDAPI_BIN").unwrap_or_else(|_| "target/release/cloudapi".into());
    let hosts = env_or("HOSTS", 1000) as usize;
    let per_host = env_or("PER_HOST", 100) as usize;
    let secs = env_or("SECS", 30);
    let dry_runs = env_or("DRY_RUNS", 300) as usize;
    let mut figures = Figures { rows: Vec::new() };

    let database = new_database(&admin).await;
    let cloud = Cloud::start(&bin, &database);
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let started = Instant::now();
    let sims = seed(&client, &cloud, &database, hosts, per_host).await;
    figures.add(
        "seed",
        format!("{hosts} hosts, {} instances in {:.1} s", hosts * per_host, started.elapsed().as_secs_f64()),
    );

    let mut quiet = Vec::new();
    for n in 0..dry_runs.min(100) {
        let sent = Instant::now();
        client
            .post(format!("{}/api/v1/instances", cloud.url))
            .bearer_auth(TOKEN)
            .json(&dry_run_body(&sims, n))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        quiet.push(sent.elapsed());
    }
    quiet.sort();
    figures.add(
        "dry_run placements, no heartbeats",
        format!(
            "{}: p50 {:.1} ms, p99 {:.1} ms",
            quiet.len(),
            quantile_ms(&quiet, 0.5),
            quantile_ms(&quiet, 0.99)
        ),
    );

    // Heartbeats: each host every 5 s, spread evenly; dry runs alongside.
    let interval = Duration::from_secs(5) / hosts as u32;
    let (cloud_cpu, pg_cpu) = (cpu_secs(cloud.child.id()), postgres_cpu_secs());
    let window = Instant::now();
    let beats = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sims = std::sync::Arc::new(sims);
    let beating = {
        let (client, url, beats, sims) = (client.clone(), cloud.url.clone(), beats.clone(), sims.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            let mut tasks = tokio::task::JoinSet::new();
            let mut n = 0usize;
            while window.elapsed() < Duration::from_secs(secs) {
                ticker.tick().await;
                let (client, url, beats, sims) = (client.clone(), url.clone(), beats.clone(), sims.clone());
                let index = n % sims.len();
                tasks.spawn(async move {
                    let sim = &sims[index];
                    let sent = Instant::now();
                    let response = client
                        .put(format!("{url}/api/v1/hosts/{}/heartbeat", sim.id))
                        .bearer_auth(&sim.credential)
                        .json(&sim.beat)
                        .send()
                        .await;
                    let ok = response.is_ok_and(|r| r.status().as_u16() == 204);
                    beats.lock().unwrap().push((sent.elapsed(), ok));
                });
                n += 1;
            }
            while tasks.join_next().await.is_some() {}
        })
    };
    let mut placements = Vec::with_capacity(dry_runs);
    let mut chosen = 0;
    // Let a full round of heartbeats land first, then place while they go on.
    tokio::time::sleep(Duration::from_secs(5).min(Duration::from_secs(secs / 2))).await;
    for n in 0..dry_runs {
        let body = dry_run_body(&sims, n);
        let sent = Instant::now();
        let answer: Value = client
            .post(format!("{}/api/v1/instances", cloud.url))
            .bearer_auth(TOKEN)
            .json(&body)
            .value()
            .await;
        placements.push(sent.elapsed());
        if answer["host"].is_string() {
            chosen += 1;
        }
        if window.elapsed() > Duration::from_secs(secs) {
            break;
        }
    }
    beating.await.unwrap();
    let elapsed = window.elapsed().as_secs_f64();
    let (cloud_cpu, pg_cpu) = (cpu_secs(cloud.child.id()) - cloud_cpu, postgres_cpu_secs() - pg_cpu);
    let mut beats = std::mem::take(&mut *beats.lock().unwrap());
    let failed = beats.iter().filter(|(_, ok)| !ok).count();
    beats.sort();
    let latencies: Vec<Duration> = beats.iter().map(|(d, _)| *d).collect();
    placements.sort();
    let per_second = beats.len() as f64 / elapsed;
    figures.add(
        "heartbeats",
        format!(
            "{} in {elapsed:.1} s ({per_second:.0}/s, {failed} failed), p50 {:.1} ms, p99 {:.1} ms",
            beats.len(),
            quantile_ms(&latencies, 0.5),
            quantile_ms(&latencies, 0.99)
        ),
    );
    figures.add(
        "CPU per heartbeat (cloudapi + PostgreSQL)",
        format!(
            "{:.2} ms + {:.2} ms; {hosts} hosts every 5 s take {:.0}% + {:.0}% of one core",
            cloud_cpu * 1000.0 / beats.len() as f64,
            pg_cpu * 1000.0 / beats.len() as f64,
            cloud_cpu / elapsed * 100.0,
            pg_cpu / elapsed * 100.0
        ),
    );
    figures.add(
        "dry_run placements during the heartbeats",
        format!(
            "{} ({chosen} placed), p50 {:.1} ms, p99 {:.1} ms (target p99 < 20 ms)",
            placements.len(),
            quantile_ms(&placements, 0.5),
            quantile_ms(&placements, 0.99)
        ),
    );
    drop(cloud);

    match std::env::var_os("AGENT_TEST_GUEST") {
        Some(guest) => create_to_running(&admin, &bin, std::path::Path::new(&guest), &mut figures).await,
        None => eprintln!("create-to-running skipped: AGENT_TEST_GUEST is not set"),
    }

    println!();
    println!("| measure | figure |");
    println!("| --- | --- |");
    for (what, value) in &figures.rows {
        println!("| {what} | {value} |");
    }
}

/// Median of durations, in milliseconds.
fn median_ms(values: &mut [Duration]) -> f64 {
    values.sort();
    quantile_ms(values, 0.5)
}

/// An instance of the cached test guest, created and started: straight on the agent against
/// through cloudapi (202, then polled every 2 ms until cloudapi says `running`), alternated.
async fn create_to_running(admin: &str, bin: &str, guest: &std::path::Path, figures: &mut Figures) {
    let rounds = env_or("CREATES", 5) as usize;
    let database = new_database(admin).await;
    let cloud = Cloud::start(bin, &database);
    let dir = tempfile::tempdir().unwrap();
    let imgapi_config = json!({"datadir": dir.path().join("imgapi"), "port": 0, "host": "127.0.0.1", "log_level": "warn",
                               "userdb": [{"name": "admin", "password": "secret"}]});
    let imgapi_config = imgapi::config::Config::from_json(
        &imgapi_config.to_string(),
        std::path::Path::new("bench"),
        std::path::Path::new(""),
    )
    .unwrap();
    let imgapi = tokio::task::spawn_blocking(move || imgapi::start(imgapi_config).unwrap()).await.unwrap();
    let source = format!("http://admin:secret@{}", imgapi.addr);
    let disk = std::fs::read(guest.join("disk.raw")).expect("the test guest's disk.raw");
    let image = publish(&source, disk).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let agent_url = format!("http://127.0.0.1:{port}");
    let agent_bin = std::env::var("AGENT_BIN").unwrap_or_else(|_| "target/release/agent".into());
    let config = json!({
        "listen": format!("127.0.0.1:{port}"), "auth": {"tokens": [TOKEN]}, "sources": [source],
        "storage": {"backend": "files", "dir": dir.path().join("images")},
        "instances": {"hypervisor": "qemu", "dir": dir.path().join("instances"), "run_dir": dir.path().join("run"),
                      "qemu": {"accel": "tcg", "metadata_proxy": std::fs::canonicalize(agent_bin).expect("AGENT_BIN")}},
        "cluster": {"url": cloud.url, "join_token": JOIN, "advertise_url": agent_url, "name": "bench-host", "heartbeat_secs": 1},
        "log_level": "warn"});
    let config =
        agent::config::Config::from_json(&config.to_string(), std::path::Path::new("bench")).unwrap();
    let agent = tokio::task::spawn_blocking(move || agent::start(config).unwrap()).await.unwrap();
    let client = reqwest::Client::new();
    let imported = client
        .post(format!("{agent_url}/api/v1/images"))
        .bearer_auth(TOKEN)
        .json(&json!({"uuid": image}))
        .send()
        .await
        .unwrap();
    assert_eq!(imported.status().as_u16(), 200, "the agent imports the test guest");
    loop {
        let hosts: Value = client.get(format!("{}/api/v1/hosts", cloud.url)).value().await;
        if hosts[0]["state"] == "running" && hosts[0]["images"].as_array().is_some_and(|i| !i.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = json!({"image": image, "memory_mib": 128, "disk_mib": 64});
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for round in 0..rounds * 2 {
        let started = Instant::now();
        let (base, uuid) = if round % 2 == 0 {
            let created: Value = client
                .post(format!("{agent_url}/api/v1/instances"))
                .bearer_auth(TOKEN)
                .json(&body)
                .value()
                .await;
            assert_eq!(created["state"], "running", "{created}");
            direct.push(started.elapsed());
            (agent_url.clone(), created["uuid"].as_str().unwrap().to_string())
        } else {
            let mut pinned = body.clone();
            pinned["host"] = json!("bench-host");
            let placed: Value = client
                .post(format!("{}/api/v1/instances", cloud.url))
                .bearer_auth(TOKEN)
                .json(&pinned)
                .value()
                .await;
            let uuid = placed["uuid"].as_str().expect("placed").to_string();
            loop {
                let seen: Value = client.get(format!("{}/api/v1/instances/{uuid}", cloud.url)).value().await;
                if seen["state"] == "running" {
                    break;
                }
                assert_ne!(seen["phase"], "failed", "{seen}");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            through.push(started.elapsed());
            (cloud.url.clone(), uuid)
        };
        let stop = client
            .post(format!("{base}/api/v1/instances/{uuid}?action=stop&force=true"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(stop.status().is_success(), "stop: {}", stop.status());
        let deleted =
            client.delete(format!("{base}/api/v1/instances/{uuid}")).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(deleted.status().as_u16(), 204, "delete");
    }
    let (direct_ms, through_ms) = (median_ms(&mut direct), median_ms(&mut through));
    figures.add(
        "create to running, cached image (median of runs)",
        format!("agent {direct_ms:.0} ms, through cloudapi {through_ms:.0} ms: cloudapi adds {:.0} ms (target < 50 ms), ratio {:.2}",
            through_ms - direct_ms, through_ms / direct_ms),
    );
    drop(agent);
    drop(imgapi);
}

/// Publishes `file` as a zvol image on the IMGAPI at `source`; its uuid.
async fn publish(source: &str, file: Vec<u8>) -> String {
    use sha1::Digest as _;
    let client = imgapi_client::Client::new(imgapi_client::Source::parse(source).unwrap()).unwrap();
    let manifest = json!({"name": "test-guest", "version": "1.0", "type": "zvol", "os": "linux",
                          "image_size": (file.len() as u64).div_ceil(1 << 20),
                          "nic_driver": "virtio", "disk_driver": "virtio", "cpu_type": "host"});
    let created = client.create_image(&manifest).await.unwrap();
    let uuid = Uuid::parse_str(created["uuid"].as_str().unwrap()).unwrap();
    let upload = imgapi_client::FileUpload {
        compression: imgapi_client::Compression::None,
        sha1: Some(hex::encode(sha1::Sha1::digest(&file))),
        size: Some(file.len() as u64),
        dataset_guid: None,
    };
    client.add_file(uuid, &upload, file.into()).await.unwrap();
    client.activate_image(uuid).await.unwrap();
    uuid.to_string()
}
