//! Integration tests of cloudapi over real HTTP on 127.0.0.1, on SQLite (and PostgreSQL where
//! `CLOUDAPI_TEST_POSTGRES` names a database). One binary, a module per area.

mod common;

mod auth_table;
mod boot;
mod cli;
mod failure;
mod hosts;
mod membership;
mod metrics;
mod placement;
mod replicas;
