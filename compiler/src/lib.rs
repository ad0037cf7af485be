//! `aigw`: compiles Envoy AI Gateway custom resources into the Gateway API, Envoy Gateway and
//! Kubernetes objects that make them work on a cluster with Envoy Gateway and no AI Gateway
//! controller, plus the configuration of `aigw-extproc`.
//!
//! The compiler is one pass through named stages, each a module whose docs say what goes in and
//! what comes out: [`load`] → [`validate`] → [`resolve`] → [`plan`] → [`emit`] → [`render`] →
//! [`write`]. Every stage is a pure function of its input: the same objects in any order and any
//! split into files give the same bytes. Errors are collected as [`diag::Diagnostic`]s naming the
//! file, line, object and field; when there is any, nothing is written.
//!
//! The CLI (`src/main.rs`) is a thin layer over [`build`], [`check`] and [`diff`]; `aigw run`
//! starts a standalone build with [`run`].

pub mod build;
pub mod diag;
pub mod diff;
pub mod emit;
pub mod load;
pub mod model;
pub mod parallel;
pub mod plan;
pub mod render;
pub mod resolve;
pub mod run;
pub mod schemas;
pub mod validate;
pub mod write;

pub use build::{BuildOptions, BuildOutput, Target, build, check};

/// Prepares this process for a build: no transparent huge pages. mimalloc asks the kernel for
/// them, and the kernel then zeroes 2 MiB at the first touch of each, which costs a build that
/// allocates and frees many small JSON nodes more than it saves: with them, 20,000 routes took
/// 1.8 times as long (most of it system time), and 2,000 routes 1.07 times (see the benchmark
/// table in README.md). Best effort: on other systems, or if the kernel refuses, nothing changes.
pub fn tune_process() {
    #[cfg(target_os = "linux")]
    {
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}
