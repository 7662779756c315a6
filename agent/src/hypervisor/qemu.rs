//! QEMU backend (Linux): being written.
