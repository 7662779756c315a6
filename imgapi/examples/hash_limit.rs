//! The hashing ceiling of an upload, for `bench/run.sh`: reads a file in 1 MiB blocks and
//! hashes every block with sha1 and MD5 on two threads (one core each, as the server's upload
//! pipeline does). Prints the throughput in MB/s (10^6 bytes per second).
//!
//! Usage: `cargo run --release -p imgapi --example hash_limit -- FILE`

use std::io::Read;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Instant;

use md5::Md5;
use sha1::{Digest, Sha1};

fn main() -> std::io::Result<()> {
    let path = std::env::args().nth(1).expect("usage: hash_limit FILE");
    let mut file = std::fs::File::open(path)?;
    let (sha_tx, sha_rx) = sync_channel::<Arc<Vec<u8>>>(4);
    let (md5_tx, md5_rx) = sync_channel::<Arc<Vec<u8>>>(4);
    let started = Instant::now();
    let sha = std::thread::spawn(move || {
        let mut hasher = Sha1::new();
        for block in sha_rx {
            hasher.update(&block[..]);
        }
        hex::encode(hasher.finalize())
    });
    let md5 = std::thread::spawn(move || {
        let mut hasher = Md5::new();
        for block in md5_rx {
            hasher.update(&block[..]);
        }
        hex::encode(hasher.finalize())
    });
    let mut total = 0u64;
    loop {
        let mut block = vec![0u8; 1 << 20];
        let n = file.read(&mut block)?;
        if n == 0 {
            break;
        }
        block.truncate(n);
        total += n as u64;
        let block = Arc::new(block);
        sha_tx.send(block.clone()).expect("sha1 thread");
        md5_tx.send(block).expect("md5 thread");
    }
    drop((sha_tx, md5_tx));
    let (sha, md5) = (sha.join().expect("sha1"), md5.join().expect("md5"));
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("sha1 {sha} md5 {md5}");
    println!("{:.0}", total as f64 / seconds / 1e6);
    Ok(())
}
