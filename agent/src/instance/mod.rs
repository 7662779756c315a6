//! Instances: VMs cloned from imported images. `state` is the transition table, `record` what
//! is persisted, `disks` where disks and records live, `console` the serial consoles, and
//! `manager` ties them to a hypervisor with one supervisor per running instance.

pub mod console;
pub mod disks;
pub mod manager;
pub mod record;
pub mod state;
