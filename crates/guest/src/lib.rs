//! The deskfleet guest daemon: the process that runs in every desktop (the role
//! Workspace's HDA plays). It enrolls the desktop with the server, holds one outbound
//! OpAMP WebSocket to it (`docs/fleet-protocol.md`), downloads, verifies, installs and
//! supervises the `deskfleet-monitor` package, and forwards the monitor's health and
//! metrics to the server.
//!
//! Invariants:
//! - **Never runs unverified code.** A package is hashed and its ed25519 signature checked
//!   against the trusted key ([`install::verify_package`]) before a single byte of it is
//!   unpacked; a package that fails is deleted, never unpacked or run.
//! - **Only reports on its own desktop**: every message describes this machine, this
//!   process and the child it started, under the one instance uid kept in the state
//!   directory ([`state`]).
//! - **Identity survives restarts**: the instance uid and the desktop credential are
//!   written atomically (mode 0600) before they are used, so a restarted guest reconnects
//!   as the same desktop and never enrolls twice.
//! - **An upgrade is undone by itself when it fails**: a new version is installed beside
//!   the running one, switched to, and watched for a window ([`watch`]); if it exits, is
//!   unhealthy or reports another version, the previous version is started again and the
//!   reason reported. The switch, the kept previous version and the watch are in
//!   [`state`], so a restart never loses track of which version should run.
//! - **It never gives up**: a lost connection is retried forever with jittered
//!   exponential backoff ([`backoff`]), and a dying monitor is restarted the same way,
//!   until the shutdown token is cancelled.
//!
//! The pure parts (building [`deskfleet_proto::opamp::AgentToServer`] messages, reading a
//! [`deskfleet_proto::opamp::ServerToAgent`], verifying a package) are plain functions so
//! that a load generator can drive many simulated guests without the IO around them.
//!
//! - **Talks only to its server**: https and wss through one rustls configuration
//!   ([`tls`]); the server's CA comes from `--ca-cert`, from the state directory, or is
//!   pinned by the fingerprint the enrollment token carries; plain http only when asked.
//!
//! It reaches the server over the wire only: it must not depend on the server, store or
//! core crates. It links `deskfleet-monitor` for the `Report` line types alone. Tracing is
//! set up by the binary, never here.

pub mod backoff;
pub mod config;
pub mod connection;
pub mod host;
pub mod install;
pub mod protocol;
pub mod state;
pub mod supervise;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;
pub mod watch;

mod agent;

pub use agent::{GuestError, run};
pub use config::{Config, ConfigError};
pub use install::{InstallError, ReasonCode, verify_package};
