//! The agent's part of the reliability suite (issue 5): every mutating API route refuses
//! missing, wrong and malformed credentials, credential checks take the same time however much
//! of a secret matched, and the parsers of host command output never panic on any text. One
//! binary (for link time), a module per area.

mod auth;
mod fuzz_parsers;
// The same statistical timing check as the imgapi suite: one file, shared by path.
#[path = "../../../imgapi/tests/integration/timing.rs"]
mod timing;
