//! Integration tests against the real local control plane (`make test` brings it up).
//! A missing or unreachable cluster fails these tests; it never skips them.

#[path = "../kit/mod.rs"]
mod kit;

mod accounts;
mod ai;
mod bed;
mod dashboard;
mod faults;
mod gateway;
mod gateway_harness;
mod harness;
mod kstatus;
mod openapi;
mod operator;
mod operator_harness;
mod rbac;
mod real_node;
mod security;
mod sites;
mod soak;
