//! `podswitch run`: the switch's lifetime. Start the controller (worker + host port), open
//! the control socket, wait for SIGINT/SIGTERM, then take everything down again.
//!
//! Start-up is all-or-nothing: if any step fails, what the earlier steps created is removed
//! (the host port vanishes with its fd) and the error names the step. On shutdown the
//! socket file is removed and every port's device is closed, so the pods' interfaces, the
//! host port and its routes disappear with the switch. A switch killed with SIGKILL loses
//! its devices the same way (the kernel closes the fds); only the socket file stays, and the
//! next start replaces it.

use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::Config;
use crate::control::controller::{Controller, StartError};
use crate::control::server::{Bound, ServeError, Server};

/// Why `run` failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The controller could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The control socket could not be opened.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// Signal handlers could not be installed.
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
    /// Capabilities could not be dropped.
    #[error("dropping capabilities: {0}")]
    Capabilities(std::io::Error),
}

/// A running switch: controller plus control socket.
#[derive(Debug)]
pub struct Daemon {
    controller: Arc<Controller>,
    server: Server,
}

impl Daemon {
    /// Starts a switch in the calling thread's network namespace.
    pub fn start(config: Config) -> Result<Daemon, DaemonError> {
        let bound = Server::bind(&config.control.socket, config.control.group)?;
        Daemon::start_bound(config, bound)
    }

    /// [`Daemon::start`] on a control socket already bound.
    pub fn start_bound(config: Config, bound: Bound) -> Result<Daemon, DaemonError> {
        let controller = Arc::new(Controller::start(config)?);
        let server = match bound.serve(controller.clone()) {
            Ok(s) => s,
            Err(e) => {
                controller.shutdown();
                return Err(e.into());
            }
        };
        Ok(Daemon { controller, server })
    }

    /// Stops serving and removes every device the switch created.
    pub fn stop(mut self) {
        self.server.stop();
        self.controller.shutdown();
    }
}

/// Runs the switch until SIGINT or SIGTERM. Once the control socket exists, and before any
/// thread is started, the process keeps only the capabilities the running switch uses
/// (`sys::caps::RUNNING`, see docs/security.md).
pub fn run(config: Config) -> Result<(), DaemonError> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(DaemonError::Signals)?;
    let summary = format!(
        "node {} pod CIDR {} gateway {} ({}) host port {} control socket {}",
        config.node.name,
        config.node.pod_cidr,
        config.node.gateway,
        config.node.gateway_mac,
        config.host_port.as_ref().map(|h| h.name.as_str()).unwrap_or("(none)"),
        config.control.socket.display()
    );
    let bound = Server::bind(&config.control.socket, config.control.group)?;
    crate::sys::caps::drop_all_but(crate::sys::caps::RUNNING).map_err(DaemonError::Capabilities)?;
    let daemon = Daemon::start_bound(config, bound)?;
    eprintln!("podswitch: running: {summary}");
    if let Some(sig) = signals.forever().next() {
        eprintln!("podswitch: signal {sig}: shutting down");
    }
    daemon.stop();
    eprintln!("podswitch: stopped");
    Ok(())
}
