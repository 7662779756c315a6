//! The agent's boundary with the host OS: the command runner and one wrapper module per
//! host command.

pub mod bhyve;
pub mod ifconfig;
pub mod iproute;
pub mod qemu;
pub mod qemu_img;
pub mod qmp;
pub mod runner;
pub mod zfs;

/// Longest network interface name on Linux and FreeBSD (`IFNAMSIZ` 16, with the NUL).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;
