//! [`EventsLog`]: where the embedded node puts what RabbitMQ mode publishes on `edinode.events`
//! (`s3.failed`, `outbound.delivered`, `outbound.failed`, ...), since there is no exchange: one
//! JSON object a line in `<data_dir>/events.jsonl`, as the event's body reads on the exchange.
//! At 64 MiB the file moves to `events.jsonl.1` (replacing the previous one) and a new one
//! starts. Notifications, not state: appended without fsync.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const ROTATE_BYTES: u64 = 64 * 1024 * 1024;

pub struct EventsLog {
    path: PathBuf,
    file: Mutex<Option<(std::fs::File, u64)>>,
}

impl EventsLog {
    pub fn new(path: &Path) -> EventsLog {
        EventsLog { path: path.to_path_buf(), file: Mutex::new(None) }
    }

    /// Append one event body (JSON) as a line.
    pub fn append(&self, body: &[u8]) -> std::io::Result<()> {
        // One line per event, whatever whitespace the body has.
        let v: serde_json::Value = serde_json::from_slice(body).map_err(std::io::Error::other)?;
        let mut line = serde_json::to_vec(&v).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut g = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if g.as_ref().is_some_and(|(_, size)| *size >= ROTATE_BYTES) {
            *g = None;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, old)?;
        }
        if g.is_none() {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
            let size = f.metadata()?.len();
            *g = Some((f, size));
        }
        if let Some((f, size)) = g.as_mut() {
            f.write_all(&line)?;
            *size += line.len() as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_one_json_object_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventsLog::new(&dir.path().join("events.jsonl"));
        log.append(b"{\"kind\": \"s3.failed\",\n \"detail\": \"a\\nb\"}").unwrap();
        log.append(br#"{"kind":"outbound.delivered"}"#).unwrap();
        assert!(log.append(b"not json").is_err());
        let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
        assert_eq!(text, "{\"detail\":\"a\\nb\",\"kind\":\"s3.failed\"}\n{\"kind\":\"outbound.delivered\"}\n");
    }
}
