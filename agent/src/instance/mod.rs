//! Instances (issue 4, in progress): the state machine so far; creation from images, the
//! hypervisor backends and their supervisor come next.

pub mod state;
