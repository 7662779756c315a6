//! HTTP/1.1 written by hand on a socket, for what client libraries will not do: announce a
//! body and not send it, or read the answer before the body is all sent. Shared by the imgapi
//! and agent suites (by path).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An answer: status, `Content-Type`, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// Sends `head` (request line and headers, without the blank line) and `body` to the server
/// of `url` (`http://127.0.0.1:PORT...`), then reads one answer (a write the server refused
/// because it answered early is not an error).
pub fn exchange(url: &str, head: &str, body: &[u8]) -> Answer {
    let authority = url.trim_start_matches("http://").split('/').next().unwrap();
    let mut stream = TcpStream::connect(authority).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(format!("{head}\r\nHost: {authority}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A reset after the answer arrived (the server closed with our body unread).
            Err(e) if !raw.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading the answer to {head:?}: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head_text, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer head: {text:?}"));
    let status = head_text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status");
    let content_type = head_text
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    Answer { status, content_type, body: body.to_string() }
}
