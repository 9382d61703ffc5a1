//! Fixtures shared by several of these test files (each file is its own
//! crate, so they include this module).
#![allow(dead_code)]

pub mod confd;
pub mod felix_cluster;
