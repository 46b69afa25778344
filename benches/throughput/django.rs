//! The django-pyas2 baseline (django mode): django-pyas2 1.2.3 under gunicorn with 2 sync
//! workers and sqlite, receiving the same message from the same load generator as the node.
//! The venv comes from benches/django/setup.sh; each run gets a fresh directory whose database
//! benches/django/configure.py fills with the organization "edinode" (the station's key and
//! certificate) and the partner "bench" (the client's certificate).

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn django_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/django")
}

/// The venv (made or checked by setup.sh; about 30 s the first time, needs PyPI).
pub fn venv() -> Result<PathBuf, String> {
    let venv = match std::env::var_os("BENCH_DJANGO_VENV") {
        Some(v) => PathBuf::from(v),
        None => {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target")).join("bench-django-venv")
        }
    };
    let out = Command::new(django_dir().join("setup.sh")).arg(&venv).stdin(Stdio::null()).output().map_err(|e| format!("benches/django/setup.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("benches/django/setup.sh {} failed: {}", venv.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(venv)
}

/// A running gunicorn; stopped (master and workers) when dropped.
pub struct Gunicorn {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl Gunicorn {
    pub fn start(venv: &Path, dir: &Path, keys: &Keys) -> Result<Gunicorn, String> {
        let env = |c: &mut Command| {
            c.env("BENCH_DJANGO_DIR", dir).env("DJANGO_SETTINGS_MODULE", "benchsite").env("PYTHONPATH", django_dir()).current_dir(dir).stdin(Stdio::null());
        };
        let mut configure = Command::new(venv.join("bin/python"));
        configure.arg(django_dir().join("configure.py")).args(["edinode"]).arg(&keys.station.key_pem).arg(&keys.station.cert_pem).arg("bench").arg(&keys.client.cert_pem);
        env(&mut configure);
        let out = configure.output().map_err(|e| format!("configure.py: {e}"))?;
        if !String::from_utf8_lossy(&out.stdout).contains("configured") {
            return Err(format!("configure.py failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let log = dir.join("gunicorn.log");
        let logf = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(venv.join("bin/gunicorn"));
        cmd.args(["--workers", "2", "--no-control-socket", "--bind", "127.0.0.1:0", "--log-level", "info", "django.core.wsgi:get_wsgi_application()"])
            .stdout(Stdio::null())
            .stderr(logf);
        env(&mut cmd);
        let child = cmd.spawn().map_err(|e| format!("cannot start gunicorn: {e}"))?;
        let mut g = Gunicorn { child, url: String::new(), log };
        // Listening, and both workers have loaded the application.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&g.log).unwrap_or_default();
            if let Some(addr) = text.split("Listening at: ").nth(1).and_then(|r| r.split_whitespace().next()) {
                g.url = addr.to_string();
            }
            if !g.url.is_empty() && g.ready() {
                return Ok(g);
            }
            if let Some(how) = g.exit_description() {
                return Err(format!("gunicorn ended ({how}); log:\n{text}"));
            }
            if Instant::now() > deadline {
                return Err(format!("gunicorn not ready within 60 s; log:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Two GETs of the receiver answered (each worker takes its share of connections).
    fn ready(&self) -> bool {
        let url = format!("{}/pyas2/as2receive", self.url);
        let get = || reqwest::blocking::Client::new().get(&url).timeout(Duration::from_secs(5)).send().is_ok_and(|r| r.status().is_success());
        children_of(self.child.id()).len() >= 2 && get() && get()
    }

    /// (user, system) CPU ticks of the master, its live workers and the workers it reaped.
    pub fn cpu(&self) -> (u64, u64) {
        let master = self.child.id();
        let mut t = stat_fields(&master.to_string()).map(|s| (s.utime + s.cutime, s.stime + s.cstime)).unwrap_or((0, 0));
        for w in children_of(master) {
            if let Some((u, s)) = cpu_split(&w) {
                t.0 += u;
                t.1 += s;
            }
        }
        t
    }

    pub fn exit_description(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            _ => None,
        }
    }

    /// Error lines of gunicorn's log (first `n`), and how many there were.
    pub fn log_problems(&self, n: usize) -> (usize, Vec<String>) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let bad: Vec<&str> = text.lines().filter(|l| l.contains("[ERROR]") || l.contains("[CRITICAL]") || l.contains("[WARNING]") || l.starts_with("Traceback")).collect();
        (bad.len(), bad.iter().take(n).map(|s| s.chars().take(400).collect()).collect())
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then exits; SIGKILL would orphan them.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.exit_description().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
