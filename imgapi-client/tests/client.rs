//! The client against a real `imgapi` on 127.0.0.1: the publish cycle, listings over several
//! pages, downloads from an offset, both kinds of credentials, and the errors a caller must be
//! able to tell apart.

use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use imgapi::RunningServer;
use imgapi_client::{
    Auth, Client, ClientError, ClientOptions, Compression, FileEntry, FileUpload, SigningKey, Source,
};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};
use uuid::Uuid;

struct Server {
    server: RunningServer,
    _dir: tempfile::TempDir,
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({
        "datadir": dir.path().join("data"), "port": 0, "host": "127.0.0.1", "log_level": "warn",
        "userdb": [{"name": "admin", "password": "secret"}],
        "auth_keys": {"tester": [include_str!("../../imgapi/tests/fixtures/keys/tester_rsa.pub")]},
    });
    let config =
        imgapi::config::Config::from_json(&config.to_string(), Path::new("t"), Path::new("")).unwrap();
    Server { server: imgapi::start(config).unwrap(), _dir: dir }
}

impl Server {
    fn client(&self, credentials: &str) -> Client {
        let url = self.server.url().replace("http://", &format!("http://{credentials}"));
        Client::new(Source::parse(&url).unwrap()).unwrap()
    }
}

fn manifest(name: &str) -> Value {
    json!({"name": name, "version": "1.0", "type": "zvol", "os": "linux", "image_size": 8,
           "nic_driver": "virtio", "disk_driver": "virtio", "cpu_type": "host"})
}

/// Incompressible bytes (image files are compressed), a few chunks' worth.
fn file_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

/// Creates, uploads (streamed, in 64 KiB chunks) and activates an image; returns its uuid.
async fn publish(client: &Client, name: &str, file: &[u8]) -> Uuid {
    let created = client.create_image(&manifest(name)).await.unwrap();
    let uuid: Uuid = created["uuid"].as_str().unwrap().parse().unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        file.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let upload = FileUpload {
        compression: Compression::None,
        sha1: Some(sha1_hex(file)),
        size: Some(file.len() as u64),
        dataset_guid: None,
    };
    let stored = client.add_file(uuid, &upload, body).await.unwrap();
    assert_eq!(stored["files"][0]["sha1"], json!(sha1_hex(file)));
    let active = client.activate_image(uuid).await.unwrap();
    assert_eq!(active["state"], "active");
    uuid
}

async fn download(client: &Client, uuid: Uuid, offset: u64) -> Vec<u8> {
    let download = client.get_file(uuid, offset).await.unwrap();
    let length = download.length;
    let mut stream = Box::pin(download.into_stream());
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(length, Some(bytes.len() as u64));
    bytes
}

#[tokio::test]
async fn publish_get_download_resume_and_delete() {
    let server = start();
    let admin = server.client("admin:secret@");
    let ping = admin.ping().await.unwrap();
    assert_eq!(ping["imgapi"], json!(true));

    let file = file_bytes(3 << 20);
    let uuid = publish(&admin, "cycle", &file).await;
    let manifest = admin.get_image(uuid).await.unwrap();
    let entry = FileEntry::of_manifest(&manifest).unwrap();
    assert_eq!(
        (entry.size, entry.sha1.as_str(), entry.compression),
        (file.len() as u64, sha1_hex(&file).as_str(), Compression::None)
    );

    // Reads need no credentials on this server.
    let anonymous = server.client("");
    assert_eq!(download(&anonymous, uuid, 0).await, file);
    let offset = 1_000_003;
    assert_eq!(download(&anonymous, uuid, offset).await, &file[offset as usize..]);

    admin.delete_image(uuid).await.unwrap();
    match admin.get_image(uuid).await {
        Err(ClientError::NotFound { uuid: missing, .. }) => assert_eq!(missing, uuid),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(admin.get_file(uuid, 0).await, Err(ClientError::NotFound { .. })));
}

#[tokio::test]
async fn listings_follow_every_page() {
    let server = start();
    let source = Source::parse(&server.server.url())
        .unwrap()
        .with_auth(Auth::Basic { user: "admin".into(), password: Some("secret".into()) });
    let paged =
        Client::with_options(source, ClientOptions { page_size: 2, ..ClientOptions::default() }).unwrap();
    let mut created = Vec::new();
    for n in 0..5 {
        let image = paged.create_image(&manifest(&format!("paged-{n}"))).await.unwrap();
        created.push(image["uuid"].as_str().unwrap().to_string());
    }
    // Unactivated images: listed with state=all (and credentials).
    let listed = paged.list_images(&[("state", "all")]).await.unwrap();
    let mut uuids: Vec<String> = listed.iter().map(|m| m["uuid"].as_str().unwrap().to_string()).collect();
    assert_eq!(uuids.len(), 5, "each image once: {uuids:?}");
    uuids.sort();
    created.sort();
    assert_eq!(uuids, created);
    let filtered = paged.list_images(&[("state", "all"), ("name", "paged-3")]).await.unwrap();
    assert_eq!(filtered.len(), 1);
    assert!(paged.list_images(&[]).await.unwrap().is_empty(), "none is active");
}

#[tokio::test]
async fn http_signatures_authenticate() {
    let server = start();
    let key = SigningKey::from_pem(include_str!("../../imgapi/tests/fixtures/keys/tester_rsa")).unwrap();
    let source = Source::parse(&server.server.url())
        .unwrap()
        .with_auth(Auth::Signature { user: "tester".into(), key: Arc::new(key) });
    let signed = Client::new(source).unwrap();
    let created = signed.create_image(&manifest("signed")).await.unwrap();
    assert_eq!(created["state"], "unactivated");

    // The same key as ssh-keygen writes it today (OpenSSH format).
    let key = SigningKey::from_file(Path::new("tests/fixtures/tester_rsa.openssh")).unwrap();
    let source = Source::parse(&server.server.url())
        .unwrap()
        .with_auth(Auth::Signature { user: "tester".into(), key: Arc::new(key) });
    Client::new(source).unwrap().create_image(&manifest("signed-openssh")).await.unwrap();

    // The same key under another user name is refused.
    let key = SigningKey::from_pem(include_str!("../../imgapi/tests/fixtures/keys/tester_rsa")).unwrap();
    let source = Source::parse(&server.server.url())
        .unwrap()
        .with_auth(Auth::Signature { user: "admin".into(), key: Arc::new(key) });
    let error = Client::new(source).unwrap().create_image(&manifest("x")).await.unwrap_err();
    assert_eq!(error.status(), Some(401), "{error}");
}

#[tokio::test]
async fn error_answers_carry_the_servers_code_and_message() {
    let server = start();
    let admin = server.client("admin:secret@");
    let created = admin.create_image(&manifest("no-file")).await.unwrap();
    let uuid: Uuid = created["uuid"].as_str().unwrap().parse().unwrap();
    let error = admin.activate_image(uuid).await.unwrap_err();
    match &error {
        ClientError::Status(answer) => {
            assert_eq!((answer.status, answer.code.as_deref()), (422, Some("NoActivationNoFile")));
            assert!(answer.message.contains(&uuid.to_string()), "{}", answer.message);
        }
        other => panic!("expected a 422, got {other:?}"),
    }
    assert!(!error.is_transient());

    let wrong = server.client("admin:wrong@");
    let error = wrong.create_image(&manifest("x")).await.unwrap_err();
    assert_eq!((error.status(), error.code()), (Some(401), Some("UnauthorizedError")));
    assert!(!error.to_string().contains("wrong"), "no password in messages: {error}");

    let bad = admin.create_image(&json!({"name": "x"})).await.unwrap_err();
    assert_eq!(bad.status(), Some(422), "{bad}");
}

#[tokio::test]
async fn an_unreachable_server_is_transient_and_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = Client::new(Source::parse(&format!("http://u:p@127.0.0.1:{port}/")).unwrap()).unwrap();
    let error = client.ping().await.unwrap_err();
    assert!(matches!(error, ClientError::Unreachable { .. }), "{error:?}");
    assert!(error.is_transient());
    assert_eq!(error.to_string(), format!("cannot reach http://127.0.0.1:{port}"));
}
