//! Integration tests of the agent: the API, the CLI and the backends, against a real `imgapi`
//! on 127.0.0.1, a real ZFS (zfs-fuse), real QEMU guests under TCG and network namespaces
//! where this machine can run them, and recorded host commands where it cannot (bhyve). One
//! binary (for link time), a module per area, the harness in `common`.

mod common;

mod auth_table;
mod cli;
mod errors;
mod fuzz_parsers;
mod golden_image;
mod hostile;
mod import_files;
mod instances_bhyve;
mod instances_qemu;
mod limits;
mod metrics;
mod openapi;
#[path = "../../../imgapi/tests/integration/raw_http.rs"]
mod raw_http;
// The same statistical timing check as the imgapi suite: one file, shared by path.
#[path = "../../../imgapi/tests/integration/timing.rs"]
mod timing;
mod walkthrough;
mod zfs_fuse;
