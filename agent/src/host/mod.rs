//! The agent's boundary with the host OS: the command runner and one wrapper module per
//! host command.

pub mod bhyve;
pub mod iproute;
pub mod qemu;
pub mod qmp;
pub mod runner;
pub mod zfs;
