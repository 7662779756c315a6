//! bhyve backend (FreeBSD): being written.
