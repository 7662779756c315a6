//! Integration tests of the `imgapi` server over real HTTP on 127.0.0.1. One binary (for link
//! time), a module per area.

mod common;

mod auth;
mod auth_table;
mod binary;
mod crash;
mod disk_full;
mod docs;
mod errors;
mod files;
mod fuzz;
mod images;
mod limits;
mod listing;
mod load;
mod memory;
mod mirror;
mod misc;
mod openapi;
mod raw_http;
mod routes;
mod slow_readers;
mod timing;
mod visibility;
