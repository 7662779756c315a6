//! Integration tests of cloudapi over real HTTP on 127.0.0.1, on SQLite (and PostgreSQL where
//! `CLOUDAPI_TEST_POSTGRES` names a database). One binary, a module per area.

mod common;

mod boot;
mod failure;
mod hosts;
mod membership;
mod placement;
mod replicas;
