//! File-system steps shared by the stages that write files (the blob directory, the inbox):
//! durable writes and names claimed without ever replacing someone else's file.

use std::io::Write;
use std::path::{Path, PathBuf};

/// fsync a directory, so a file created or renamed in it survives power loss.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// A temporary file name beside nothing: unique across processes and hosts.
pub fn temp_name(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Write `parts` to a new file at `tmp` (which must not exist), syncing it when `fsync`.
pub fn write_new(tmp: &Path, parts: &[&[u8]], fsync: bool) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(tmp)?;
    let r = (|| {
        for p in parts {
            f.write_all(p)?;
        }
        if fsync {
            f.sync_data()?;
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    r
}

/// Give the finished file `tmp` the name `path` only if nothing has that name yet (a hard link
/// fails with AlreadyExists otherwise, atomically, also across hosts on NFS), then drop `tmp`.
/// Ok(false): the name is taken.
pub fn link_no_clobber(tmp: &Path, path: &Path, fsync: bool) -> std::io::Result<bool> {
    match std::fs::hard_link(tmp, path) {
        Ok(()) => {
            let _ = std::fs::remove_file(tmp);
            if fsync && let Some(d) = path.parent() {
                sync_dir(d)?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the file at `path` holds exactly `data` (to recognise our own earlier write).
pub fn same_content(path: &Path, data: &[u8]) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() == data.len() as u64) && std::fs::read(path).is_ok_and(|d| d == data)
}

/// Remove temporary files older than `older_than` from `dir` (left by a process killed while
/// writing); younger ones may belong to another node writing right now.
pub fn sweep_temp(dir: &Path, older_than: std::time::Duration) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in rd.flatten() {
        let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age >= older_than);
        if old && std::fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// Remove the files under `dir` (recursively) last modified before `before`, and the folders
/// left empty; returns how many files. A missing `dir` is empty.
pub fn remove_older(dir: &Path, before: std::time::SystemTime) -> std::io::Result<usize> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for e in rd.flatten() {
        let meta = e.metadata()?;
        if meta.is_dir() {
            n += remove_older(&e.path(), before)?;
            // Only when empty: a blob may be written into it right now.
            let _ = std::fs::remove_dir(e.path());
        } else if meta.modified().is_ok_and(|m| m < before) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => n += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(n)
}

/// The identity of the inbox at `inbox` (a random id kept in `<inbox>/.edinode-inbox-id`, made
/// on first use): equal for every node that shares the directory, different for nodes with
/// inboxes of their own, whatever the paths are called.
pub fn inbox_id(inbox: &Path) -> std::io::Result<String> {
    let path = inbox.join(".edinode-inbox-id");
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    std::fs::create_dir_all(inbox)?;
    let tmp = inbox_temp_dir(inbox);
    std::fs::create_dir_all(&tmp)?;
    let tmp = tmp.join(temp_name("inbox-id-"));
    write_new(&tmp, &[uuid::Uuid::new_v4().simple().to_string().as_bytes()], true)?;
    // Whoever links first names the inbox; everyone reads that.
    link_no_clobber(&tmp, &path, true)?;
    let _ = std::fs::remove_file(&tmp);
    Ok(std::fs::read_to_string(&path)?.trim().to_string())
}

/// The folder for temporary inbox files: beside the station folders, never inside a partner's
/// folder that consumers watch.
pub fn inbox_temp_dir(inbox: &Path) -> PathBuf {
    inbox.join(".edinode-tmp")
}
