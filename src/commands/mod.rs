//! One module per subcommand (`coupond COMMAND`): each takes its validated settings
//! from [`config`](crate::config) and returns `Ok` or one error line; [`cli`](crate::cli)
//! turns that into an exit status.

pub mod check;
mod check_links;
mod check_speaker;
pub mod print_test;
pub mod report;
pub mod reprint;
pub mod reverify;
pub mod sandbox;
pub mod send;
pub mod serve;
pub mod speak_test;
pub mod status;
mod verdict;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// `Err` with what to do when this user may not reach `path` (a directory on the way
/// that it may not enter, or the file itself): a permission problem is said as one, not
/// as a missing file. `Ok` when the path is missing or may be used with `mode`
/// (`access(2)`'s `R_OK`, `W_OK`).
pub fn reachable(path: &Path, mode: libc::c_int, action: &str) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(denied(path, action)),
        Ok(_) if !may(path, mode) => Err(denied(path, action)),
        _ => Ok(()),
    }
}

/// The permission message for `path`: which directory stops this user, whose it is,
/// and how to get in.
pub fn denied(path: &Path, action: &str) -> String {
    let blocking = path
        .ancestors()
        .skip(1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find(|dir| !dir.as_os_str().is_empty() && !may(dir, libc::X_OK));
    let (what, shown) = match blocking {
        Some(dir) => ("directory", dir),
        None => ("file", path),
    };
    let owner = match std::fs::metadata(shown) {
        Ok(m) => format!(
            ", owner {} group {} mode {:04o}",
            user_name(m.uid()),
            group_name(m.gid()),
            m.permissions().mode() & 0o7777
        ),
        Err(_) => String::new(),
    };
    format!(
        "permission denied: this user may not {action} {} (the {what} {}{owner}): run it as \
         root (sudo coupond ...), or let an administrator open the state directory to \
         group coupond and join it (README \"Reading the database without root\")",
        path.display(),
        shown.display(),
    )
}

/// `access(2)` for this process's real user.
pub fn may(path: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and a flag.
    unsafe { libc::access(c.as_ptr(), mode) == 0 }
}

/// A user's name, or its number when it has none.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 1024];
    // SAFETY: getpwuid_r writes into `pw` and `buf` (of the length given) only.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) == 0
            && !out.is_null()
        {
            return std::ffi::CStr::from_ptr(pw.pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    uid.to_string()
}

/// A group's name, or its number when it has none.
pub fn group_name(gid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getgrgid_r writes into `gr` and `buf` (of the length given) only.
    unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut out = std::ptr::null_mut();
        if libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) == 0
            && !out.is_null()
        {
            return std::ffi::CStr::from_ptr(gr.gr_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    gid.to_string()
}
