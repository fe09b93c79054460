//! Files only their owner reads: the data folder and what the store writes in it.

/// Makes `dir` (and missing parents) and restricts it to its owner (mode 0700), whatever the
/// process umask, so payloads, ciphertexts and compiled modules in it are not world-readable.
/// A folder that exists already is restricted too: a data folder made by an older version, or
/// by hand, is closed on the next start.
pub fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Restricts an existing file to its owner (mode 0600); a missing file is not an error.
pub fn restrict_file(path: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
