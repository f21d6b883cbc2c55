//! TCP connect check: succeeds when a connection to the address is established in time.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use super::{Check, Outcome};
use crate::spec::TcpCheck;

pub struct TcpProbe {
    address: String,
    timeout: Duration,
}

impl TcpProbe {
    pub fn new(spec: &TcpCheck) -> Self {
        TcpProbe {
            address: spec.address.trim().to_string(),
            timeout: spec.timeout.0,
        }
    }
}

impl Check for TcpProbe {
    fn sample(&mut self, _stop: &AtomicBool) -> Outcome {
        let deadline = Instant::now() + self.timeout;
        // Name resolution uses the system resolver and is not bounded by the timeout.
        let addrs: Vec<_> = match self.address.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => return Outcome::fail(format!("cannot resolve `{}`: {e}", self.address)),
        };
        let mut last = format!("`{}` resolved to no address", self.address);
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = format!("connect to {addr} timed out after {:?}", self.timeout);
                break;
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(_) => return Outcome::pass(None),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    last = format!("connect to {addr} timed out after {:?}", self.timeout)
                }
                Err(e) => last = format!("connect to {addr} failed: {e}"),
            }
        }
        Outcome::fail(last)
    }
}
