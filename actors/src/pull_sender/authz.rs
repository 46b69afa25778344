//! The pull authorization map file, re-read when it changes (see the module doc of [`super`]).

use super::*;

/// The pull authorization map, re-read when its file changes (see the module doc).
pub(crate) struct AuthorizationFile {
    path: PathBuf,
    inner: Mutex<AuthzState>,
}

struct AuthzState {
    /// Err: no usable map (missing or unreadable file): deny.
    map: Result<Arc<AuthorizationMap>, String>,
    /// (modified, len) of the file the map came from.
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
}

/// How often the file's metadata is looked at.
pub(super) const AUTHZ_CHECK_EVERY: Duration = Duration::from_secs(1);

pub(super) fn stamp(path: &Path) -> Result<(SystemTime, u64), String> {
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

pub(super) fn read_map(path: &Path) -> Result<AuthorizationMap, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    AuthorizationMap::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

impl AuthorizationFile {
    /// Loads the map. A file that is there but does not parse is an error; a missing file
    /// is not (every PullRequest is denied until it appears).
    pub fn open(path: &Path) -> Result<AuthorizationFile, String> {
        let (map, st) = match stamp(path) {
            Ok(st) => (Ok(Arc::new(read_map(path)?)), Some(st)),
            Err(e) => {
                tracing::warn!(message = "Pull authorization map not found; every PullRequest is denied until it exists.", error = %e);
                (Err(e), None)
            }
        };
        if let Ok(m) = &map {
            tracing::info!(message = "Pull authorization map loaded.", path = %path.display(), entries = m.entries.len());
        }
        Ok(AuthorizationFile { path: path.to_path_buf(), inner: Mutex::new(AuthzState { map, stamp: st, checked: Instant::now() }) })
    }

    /// The map in force, reloading the file if it changed.
    pub fn current(&self) -> Result<Arc<AuthorizationMap>, String> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.checked.elapsed() < AUTHZ_CHECK_EVERY {
            return g.map.clone();
        }
        g.checked = Instant::now();
        match stamp(&self.path) {
            Ok(st) if Some(st) == g.stamp => {}
            Ok(st) => match read_map(&self.path) {
                Ok(m) => {
                    tracing::info!(message = "Pull authorization map reloaded.", path = %self.path.display(), entries = m.entries.len());
                    g.map = Ok(Arc::new(m));
                    g.stamp = Some(st);
                }
                Err(error) if g.map.is_ok() => {
                    // Keep the last good map; try again when the file changes once more.
                    tracing::error!(message = "Pull authorization map not reloaded; keeping the previous one.", %error);
                    g.stamp = Some(st);
                }
                Err(error) => {
                    tracing::error!(message = "Pull authorization map unusable; every PullRequest is denied.", %error);
                    g.map = Err(error);
                    g.stamp = Some(st);
                }
            },
            Err(error) => {
                if g.stamp.is_some() || g.map.is_ok() {
                    tracing::error!(message = "Pull authorization map gone; every PullRequest is denied.", %error);
                }
                g.map = Err(error);
                g.stamp = None;
            }
        }
        g.map.clone()
    }
}

#[cfg(test)]
impl AuthorizationFile {
    /// The next request looks at the file at once (tests inject the passing of
    /// [`AUTHZ_CHECK_EVERY`] instead of waiting it out).
    pub(super) fn look_again(&self) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.checked = Instant::now().checked_sub(AUTHZ_CHECK_EVERY).unwrap_or(g.checked);
    }
}
