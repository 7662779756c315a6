//! What the HTTP metadata service answers, in the three layouts cloud-init and its peers ask
//! for: EC2 (`/latest/meta-data/...`, `/latest/user-data`), OpenStack
//! (`/openstack/latest/meta_data.json`, `user_data`) and NoCloud-net (`/nocloud/meta-data`,
//! `user-data`, `network-config`). A pure function of the path and one instance's data: which
//! instance is asking is settled by the listener the request came in on (one per instance),
//! never by anything in the request.

use serde_json::json;
use uuid::Uuid;

use super::nocloud;
use super::GuestConfig;

/// One instance, as its guest may see it.
pub struct GuestView<'a> {
    pub uuid: Uuid,
    pub hostname: &'a str,
    pub config: &'a GuestConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub content_type: &'static str,
    pub body: String,
}

fn text(body: impl Into<String>) -> Option<Answer> {
    Some(Answer { content_type: "text/plain", body: body.into() })
}

/// The answer to `GET path` (query string already removed), or `None` for a 404.
pub fn answer(path: &str, view: &GuestView<'_>) -> Option<Answer> {
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        return text("latest\n");
    }
    let (root, rest) = path.split_once('/').unwrap_or((path, ""));
    match root {
        "openstack" => openstack(rest, view),
        "nocloud" => nocloud_net(rest, view),
        // EC2 clients pin dated versions (cloud-init asks for 2021-03-23, 2018-09-24 ...):
        // every version gets the same answers.
        version if version == "latest" || is_dated_version(version) || version == "1.0" => ec2(rest, view),
        _ => None,
    }
}

fn is_dated_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

fn ec2(rest: &str, view: &GuestView<'_>) -> Option<Answer> {
    let config = view.config;
    match rest {
        "" => text(if config.user_data.is_some() { "meta-data\nuser-data" } else { "meta-data" }),
        "user-data" => config.user_data.as_deref().and_then(text),
        _ => {
            let meta = rest.strip_prefix("meta-data")?.trim_start_matches('/');
            ec2_meta(meta.trim_end_matches('/'), view)
        }
    }
}

fn ec2_meta(path: &str, view: &GuestView<'_>) -> Option<Answer> {
    let config = view.config;
    let parts: Vec<&str> = if path.is_empty() { vec![] } else { path.split('/').collect() };
    match parts.as_slice() {
        [] => {
            let mut listing = vec!["hostname", "instance-id", "local-hostname"];
            if !config.ssh_keys.is_empty() {
                listing.push("public-keys/");
            }
            if !config.metadata.is_empty() {
                listing.push("tags/");
            }
            text(listing.join("\n"))
        }
        ["instance-id"] => text(view.uuid.to_string()),
        ["hostname"] | ["local-hostname"] => text(view.hostname),
        ["public-keys"] if !config.ssh_keys.is_empty() => {
            text((0..config.ssh_keys.len()).map(|i| format!("{i}=key-{i}")).collect::<Vec<_>>().join("\n"))
        }
        ["public-keys", index] => key_at(config, index).map(|_| "openssh-key").and_then(text),
        ["public-keys", index, "openssh-key"] => key_at(config, index).and_then(|k| text(format!("{k}\n"))),
        ["tags"] if !config.metadata.is_empty() => text("instance"),
        ["tags", "instance"] if !config.metadata.is_empty() => {
            text(config.metadata.keys().cloned().collect::<Vec<_>>().join("\n"))
        }
        ["tags", "instance", key] => config.metadata.get(*key).and_then(|v| text(v.clone())),
        _ => None,
    }
}

fn key_at<'c>(config: &'c GuestConfig, index: &str) -> Option<&'c str> {
    // Only canonical indexes ("0", "1"): "00" or "+1" are not keys.
    let i: usize = index.parse().ok().filter(|i: &usize| i.to_string() == index)?;
    config.ssh_keys.get(i).map(String::as_str)
}

fn openstack(rest: &str, view: &GuestView<'_>) -> Option<Answer> {
    let config = view.config;
    let (version, file) = rest.split_once('/').unwrap_or((rest, ""));
    if version.is_empty() {
        return text("latest");
    }
    if version != "latest" && !is_dated_version(version) {
        return None;
    }
    match file.trim_end_matches('/') {
        "" => text(if config.user_data.is_some() {
            "meta_data.json\nuser_data\nvendor_data.json"
        } else {
            "meta_data.json\nvendor_data.json"
        }),
        "meta_data.json" => {
            let keys: serde_json::Map<String, serde_json::Value> =
                config.ssh_keys.iter().enumerate().map(|(i, k)| (format!("key-{i}"), json!(k))).collect();
            let body = json!({
                "uuid": view.uuid,
                "name": view.hostname,
                "hostname": view.hostname,
                "launch_index": 0,
                "public_keys": keys,
                "keys": config.ssh_keys.iter().enumerate()
                    .map(|(i, k)| json!({"name": format!("key-{i}"), "type": "ssh", "data": k}))
                    .collect::<Vec<_>>(),
                "meta": config.metadata,
            });
            Some(Answer { content_type: "application/json", body: body.to_string() })
        }
        "user_data" => config.user_data.as_deref().and_then(text),
        "vendor_data.json" => Some(Answer { content_type: "application/json", body: "{}".into() }),
        _ => None,
    }
}

fn nocloud_net(rest: &str, view: &GuestView<'_>) -> Option<Answer> {
    let files = nocloud::seed_files(&view.uuid, view.hostname, view.config);
    match rest {
        "meta-data" => text(files.meta_data),
        "user-data" => text(files.user_data),
        "vendor-data" => text(""),
        "network-config" => files.network_config.and_then(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GuestConfig {
        GuestConfig {
            hostname: Some("web-1".into()),
            ssh_keys: vec!["ssh-ed25519 AAAA one".into(), "ssh-rsa BBBB two".into()],
            user_data: Some("#cloud-config\n".into()),
            network_config: None,
            metadata: [("role".to_string(), "web".to_string())].into(),
        }
    }

    fn get(path: &str, config: &GuestConfig) -> Option<String> {
        let uuid = Uuid::parse_str("6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b").unwrap();
        answer(path, &GuestView { uuid, hostname: "web-1", config }).map(|a| a.body)
    }

    #[test]
    fn ec2_layout() {
        let c = config();
        let g = |p: &str| get(p, &c);
        assert_eq!(g("/latest/meta-data/instance-id").unwrap(), "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b");
        assert_eq!(g("/latest/meta-data/local-hostname").unwrap(), "web-1");
        assert_eq!(g("/2021-03-23/meta-data/hostname").unwrap(), "web-1", "dated versions");
        assert_eq!(
            g("/latest/meta-data/").unwrap(),
            "hostname\ninstance-id\nlocal-hostname\npublic-keys/\ntags/"
        );
        assert_eq!(g("/latest/meta-data/public-keys/").unwrap(), "0=key-0\n1=key-1");
        assert_eq!(g("/latest/meta-data/public-keys/1/").unwrap(), "openssh-key");
        assert_eq!(g("/latest/meta-data/public-keys/1/openssh-key").unwrap(), "ssh-rsa BBBB two\n");
        assert_eq!(g("/latest/meta-data/tags/instance/role").unwrap(), "web");
        assert_eq!(g("/latest/user-data").unwrap(), "#cloud-config\n");
        for missing in [
            "/latest/meta-data/public-keys/2/openssh-key",
            "/latest/meta-data/public-keys/01/openssh-key",
            "/latest/meta-data/tags/instance/nope",
            "/latest/meta-data/iam/security-credentials/",
            "/latest/dynamic/instance-identity/document",
            "/latest/../etc/passwd",
            "/2021-3-23/meta-data/hostname",
            "/whatever",
        ] {
            assert_eq!(g(missing), None, "{missing}");
        }
        let bare = GuestConfig::default();
        assert_eq!(get("/latest/user-data", &bare), None);
        assert_eq!(get("/latest/meta-data", &bare).unwrap(), "hostname\ninstance-id\nlocal-hostname");
        assert_eq!(get("/latest/meta-data/public-keys/", &bare), None);
    }

    #[test]
    fn openstack_layout() {
        let c = config();
        let meta: serde_json::Value =
            serde_json::from_str(&get("/openstack/latest/meta_data.json", &c).unwrap()).unwrap();
        assert_eq!(meta["uuid"], "6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b");
        assert_eq!(meta["hostname"], "web-1");
        assert_eq!(meta["public_keys"]["key-1"], "ssh-rsa BBBB two");
        assert_eq!(meta["keys"][0]["data"], "ssh-ed25519 AAAA one");
        assert_eq!(meta["meta"]["role"], "web");
        assert_eq!(get("/openstack/2018-08-27/user_data", &c).unwrap(), "#cloud-config\n");
        assert_eq!(get("/openstack", &c).unwrap(), "latest");
        assert_eq!(get("/openstack/latest/network_data.json", &c), None);
    }

    #[test]
    fn nocloud_net_layout_matches_the_seed() {
        let c = config();
        let uuid = Uuid::parse_str("6de01e97-d7ec-4906-bd8b-cb4eafdb7c8b").unwrap();
        let seed = nocloud::seed_files(&uuid, "web-1", &c);
        assert_eq!(get("/nocloud/meta-data", &c).unwrap(), seed.meta_data);
        assert_eq!(get("/nocloud/user-data", &c).unwrap(), seed.user_data);
        assert_eq!(get("/nocloud/network-config", &c), None);
        assert_eq!(get("/nocloud/vendor-data", &c).unwrap(), "");
    }
}
