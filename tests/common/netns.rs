//! Network namespaces for tests that run nodes as if on separate hosts: a hub namespace and one
//! namespace per node, each node joined to the hub by a veth pair (hub side 10.77.<n>.1, node
//! side 10.77.<n>.2). Every address lives inside the test's own namespaces. The hub forwards
//! chosen ports to services of the machine (RabbitMQ, Redis, an in-process S3 server on
//! 127.0.0.1): the test process opens the listening socket inside the hub (a socket belongs to
//! the namespace it was created in) and connects onwards from the machine's namespace. Dropping
//! the [`Lab`] deletes the namespaces (and with them the veth pairs).
//!
//! Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and `ip`; [`Lab::create`] says why it could not.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

pub struct Lab {
    pub hub: String,
    /// Namespace name of each node.
    pub nodes: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() { Ok(()) } else { Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())) }
}

impl Lab {
    /// A hub and `n` node namespaces, or why they could not be made (nothing is left behind).
    pub fn create(n: usize) -> Result<Lab, String> {
        let tag = format!("{:04x}", std::process::id() & 0xffff);
        let lab = Lab { hub: format!("edn{tag}h"), nodes: (1..=n).map(|i| format!("edn{tag}n{i}")).collect() };
        // On any failure `lab` drops here and removes what was made.
        ip(&["netns", "add", &lab.hub])?;
        ip(&["-n", &lab.hub, "link", "set", "lo", "up"])?;
        for (i, ns) in lab.nodes.iter().enumerate() {
            let n = i + 1;
            let (h, v) = (format!("ve{tag}h{n}"), format!("ve{tag}n{n}"));
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &lab.hub, "link", "add", &h, "type", "veth", "peer", "name", &v, "netns", ns])?;
            ip(&["-n", &lab.hub, "addr", "add", &format!("{}/24", lab.hub_addr(n)), "dev", &h])?;
            ip(&["-n", ns, "addr", "add", &format!("{}/24", lab.node_addr(n)), "dev", &v])?;
            ip(&["-n", &lab.hub, "link", "set", &h, "up"])?;
            ip(&["-n", ns, "link", "set", &v, "up"])?;
        }
        Ok(lab)
    }

    /// The hub's address as node `n` (1-based) sees it.
    pub fn hub_addr(&self, n: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, n as u8, 1)
    }

    /// Node `n`'s own address.
    pub fn node_addr(&self, n: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, n as u8, 2)
    }

    /// Run `f` on this thread inside namespace `ns`; threads it starts stay there.
    pub fn within<T>(ns: &str, f: impl FnOnce() -> T) -> T {
        let home = File::open("/proc/thread-self/ns/net").expect("own network namespace");
        let target = File::open(format!("/var/run/netns/{ns}")).expect("namespace file");
        // SAFETY: setns on this thread with descriptors we hold open.
        assert_eq!(unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns {ns}: {}", std::io::Error::last_os_error());
        let out = f();
        assert_eq!(unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns back: {}", std::io::Error::last_os_error());
        out
    }

    /// Listen on `port` of every hub address and forward each connection to `target` (an
    /// address of the machine, e.g. 127.0.0.1:5672).
    pub fn forward(&self, port: u16, target: SocketAddr) {
        let listener = Lab::within(&self.hub, || TcpListener::bind(("0.0.0.0", port)).expect("bind in the hub"));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(inside) = conn else { continue };
                let Ok(outside) = TcpStream::connect(target) else { continue };
                let _ = (inside.set_nodelay(true), outside.set_nodelay(true));
                pipe(inside, outside);
            }
        });
    }

    /// `program` to be run in namespace `ns` (`ip netns exec` execs it: the pid is the program's).
    pub fn command(ns: &str, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }
}

/// Copy both ways until either side ends, then close both (a killed peer's connection ends at
/// the other end too, as without the forwarder).
fn pipe(a: TcpStream, b: TcpStream) {
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    };
    let (a2, b2) = (a.try_clone().expect("clone"), b.try_clone().expect("clone"));
    copy(a, b);
    copy(b2, a2);
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.nodes.iter().chain([&self.hub]) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
