//! The installed systemd unit's sandbox, as `coupond check` needs it: which paths the
//! service may write (`ProtectSystem=`, `ProtectHome=`, `PrivateTmp=`,
//! `ReadWritePaths=`, `StateDirectory=` ...), which devices it may open
//! (`DevicePolicy=`, `DeviceAllow=`, `PrivateDevices=`) and as whom (`User=`,
//! `SupplementaryGroups=`). A path that is fine for root at a shell can be read-only,
//! private or forbidden for the service; check judges it as the service will see it.
//!
//! Read from the unit file itself and its drop-ins, where systemd looks for them
//! (`$SYSTEMD_UNIT_PATH` when set, as for systemd itself), so a drop-in that adds
//! `ReadWritePaths=` is honoured. Only what decides a path's fate is read; anything
//! else in the unit is ignored.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::config::flags::DEFAULT_CONFIG;

/// The unit's name.
pub const UNIT: &str = "coupond.service";

/// Where systemd looks for units, most important first.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// What the unit's sandbox allows.
#[derive(Debug, Default, Clone)]
pub struct Sandbox {
    /// The unit file and its drop-ins, in the order read.
    pub files: Vec<PathBuf>,
    /// The settings file its daemon reads (`--config` in `ExecStart=`, else the default).
    pub config: PathBuf,
    /// `ProtectSystem=`: `no`, `yes`, `full` or `strict`.
    protect_system: String,
    /// `ProtectHome=`: `no`, `yes`, `read-only` or `tmpfs`.
    protect_home: String,
    private_tmp: bool,
    private_devices: bool,
    read_write: Vec<PathBuf>,
    read_only: Vec<PathBuf>,
    inaccessible: Vec<PathBuf>,
    /// `StateDirectory=` and friends: made and owned for the service by systemd.
    owned: Vec<PathBuf>,
    pub user: Option<String>,
    groups: Vec<String>,
    device_policy: String,
    device_allow: Vec<String>,
}

/// Why the service cannot use a path, and what to do about it.
pub struct Refusal {
    /// What the path is to the service ("read-only for the service").
    pub why: String,
    /// The unit's setting that makes it so (`ProtectSystem=strict`).
    pub setting: String,
    /// The directory a drop-in's `ReadWritePaths=` would open, when that would help.
    pub open: Option<PathBuf>,
}

impl Sandbox {
    /// The installed unit, when there is one.
    pub fn installed() -> Option<Sandbox> {
        let dirs: Vec<PathBuf> = match std::env::var("SYSTEMD_UNIT_PATH") {
            Ok(p) if !p.trim().is_empty() => p
                .split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect(),
            _ => UNIT_DIRS.iter().map(PathBuf::from).collect(),
        };
        let unit = dirs.iter().map(|d| d.join(UNIT)).find(|p| p.is_file())?;
        // Drop-ins from every directory, a name in an earlier one hiding the same name
        // in a later one, read in name order.
        let mut dropins: Vec<(std::ffi::OsString, PathBuf)> = Vec::new();
        for d in &dirs {
            let Ok(entries) = std::fs::read_dir(d.join(format!("{UNIT}.d"))) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                let is_conf = Path::new(&name).extension().is_some_and(|x| x == "conf");
                if is_conf && !dropins.iter().any(|(n, _)| *n == name) {
                    dropins.push((name, e.path()));
                }
            }
        }
        dropins.sort();
        let mut sandbox = Sandbox {
            config: PathBuf::from(DEFAULT_CONFIG),
            protect_system: "no".into(),
            protect_home: "no".into(),
            device_policy: "auto".into(),
            ..Sandbox::default()
        };
        for file in std::iter::once(unit).chain(dropins.into_iter().map(|(_, p)| p)) {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            sandbox.read(&text);
            sandbox.files.push(file);
        }
        Some(sandbox)
    }

    /// Reads one unit file or drop-in on top of what was read before.
    pub fn read(&mut self, text: &str) {
        let mut service = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                service = line == "[Service]";
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if service && !line.starts_with(['#', ';']) {
                self.set(key.trim(), value.trim());
            }
        }
    }

    fn set(&mut self, key: &str, value: &str) {
        let words = || value.split_whitespace().map(String::from);
        let paths = || words().map(|w| PathBuf::from(w.trim_start_matches(['-', '+'])));
        // An empty assignment resets a list, as in systemd.
        fn extend<T>(list: &mut Vec<T>, value: &str, items: impl Iterator<Item = T>) {
            if value.is_empty() {
                list.clear();
            }
            list.extend(items);
        }
        match key {
            "ProtectSystem" => self.protect_system = yes_no(value, "yes"),
            "ProtectHome" => self.protect_home = yes_no(value, "yes"),
            "PrivateTmp" => self.private_tmp = yes_no(value, "yes") == "yes",
            "PrivateDevices" => self.private_devices = yes_no(value, "yes") == "yes",
            "ReadWritePaths" => extend(&mut self.read_write, value, paths()),
            "ReadOnlyPaths" => extend(&mut self.read_only, value, paths()),
            "InaccessiblePaths" => extend(&mut self.inaccessible, value, paths()),
            "StateDirectory" | "CacheDirectory" | "LogsDirectory" | "RuntimeDirectory" => {
                let base = match key {
                    "StateDirectory" => "/var/lib",
                    "CacheDirectory" => "/var/cache",
                    "LogsDirectory" => "/var/log",
                    _ => "/run",
                };
                // `name:mode`-style suffixes (newer systemd) are not part of the path.
                let dirs = words().map(|w| Path::new(base).join(w.split(':').next().unwrap_or("")));
                extend(&mut self.owned, value, dirs);
            }
            "User" => self.user = Some(value.to_string()).filter(|u| !u.is_empty()),
            "Group" => self.groups.extend(words()),
            "SupplementaryGroups" => extend(&mut self.groups, value, words()),
            "DevicePolicy" => self.device_policy = value.to_string(),
            "DeviceAllow" => {
                let first = value.split_whitespace().next().map(String::from);
                extend(&mut self.device_allow, value, first.into_iter());
            }
            "ExecStart" => {
                let mut it = value.split_whitespace();
                while let Some(w) = it.next() {
                    if let Some(v) = w.strip_prefix("--config=") {
                        self.config = PathBuf::from(v);
                    } else if w == "--config" {
                        if let Some(v) = it.next() {
                            self.config = PathBuf::from(v);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Where this reads the unit from, for a person: the unit file and how many
    /// drop-ins.
    pub fn source(&self) -> String {
        match self.files.split_first() {
            Some((unit, [])) => unit.display().to_string(),
            Some((unit, dropins)) => format!(
                "{} and {}",
                unit.display(),
                dropins
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => UNIT.to_string(),
        }
    }

    /// Whether `path` is in a directory systemd makes and owns for the service.
    pub fn owned(&self, path: &Path) -> bool {
        self.owned.iter().any(|d| path.starts_with(d))
    }

    /// The first state directory (`/var/lib/coupond`), where files of its own belong.
    pub fn state_dir(&self) -> PathBuf {
        self.owned
            .iter()
            .find(|d| d.starts_with("/var/lib"))
            .cloned()
            .unwrap_or_else(|| PathBuf::from("/var/lib/coupond"))
    }

    /// Whether the service sees `path` at all (and so may read it): not in its private
    /// /tmp, not hidden by `InaccessiblePaths=` or `ProtectHome=`.
    pub fn visible(&self, path: &Path) -> Result<(), Refusal> {
        let refuse = |why: &str, setting: String| Refusal {
            why: why.to_string(),
            setting,
            open: None,
        };
        if self.private_tmp && (path.starts_with("/tmp") || path.starts_with("/var/tmp")) {
            return Err(refuse(
                "in the service's private /tmp, not the one you see, and removed when it stops",
                "PrivateTmp=yes".into(),
            ));
        }
        if self.inaccessible.iter().any(|p| path.starts_with(p)) {
            return Err(refuse(
                "hidden from the service",
                "InaccessiblePaths=".into(),
            ));
        }
        let home = ["/home", "/root", "/run/user"]
            .iter()
            .any(|h| path.starts_with(h));
        if home && self.protect_home != "no" {
            return Err(refuse(
                "hidden from the service, as every home directory",
                format!("ProtectHome={}", self.protect_home),
            ));
        }
        Ok(())
    }

    /// Whether the service may create and write files at `path` (a file's path; its
    /// directory is what must be writable), as far as the mount sandbox goes.
    pub fn writable(&self, path: &Path) -> Result<(), Refusal> {
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let refuse = |why: &str, setting: String, open: bool| Refusal {
            why: why.to_string(),
            setting,
            open: open.then(|| dir.clone()),
        };
        self.visible(path)?;
        let under = |list: &[PathBuf]| {
            list.iter()
                .filter(|p| path.starts_with(p))
                .map(|p| p.components().count())
                .max()
        };
        let writable = under(&self.read_write).max(under(&self.owned));
        if writable.is_some() && writable >= under(&self.read_only) {
            return Ok(());
        }
        if under(&self.read_only).is_some() {
            return Err(refuse(
                "read-only for the service",
                "ReadOnlyPaths=".into(),
                true,
            ));
        }
        let api = ["/dev", "/proc", "/sys"]
            .iter()
            .any(|p| path.starts_with(p));
        let read_only = match self.protect_system.as_str() {
            "strict" => !api,
            "full" => ["/usr", "/boot", "/efi", "/etc"]
                .iter()
                .any(|p| path.starts_with(p)),
            "yes" => ["/usr", "/boot", "/efi"]
                .iter()
                .any(|p| path.starts_with(p)),
            _ => false,
        };
        if read_only {
            return Err(refuse(
                "read-only for the service",
                format!("ProtectSystem={}", self.protect_system),
                true,
            ));
        }
        Ok(())
    }

    /// Whether the unit lets the service open the character device at `path`
    /// (`DevicePolicy=`, `DeviceAllow=`, `PrivateDevices=`).
    pub fn device(&self, path: &Path) -> Result<(), String> {
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(());
        };
        if !meta.file_type().is_char_device() {
            return Ok(());
        }
        if self.private_devices {
            return Err("the unit gives the service no real devices (PrivateDevices=yes)".into());
        }
        if self.device_policy == "auto" && self.device_allow.is_empty() {
            return Ok(());
        }
        let major = libc::major(meta.rdev());
        let driver = char_driver(major).unwrap_or_else(|| major.to_string());
        let allowed = self
            .device_allow
            .iter()
            .any(|spec| match spec.strip_prefix("char-") {
                Some(pattern) => match pattern.strip_suffix('*') {
                    Some(prefix) => driver.starts_with(prefix),
                    None => driver == pattern,
                },
                None => Path::new(spec) == path,
            });
        if allowed {
            return Ok(());
        }
        Err(format!(
            "the unit lets the service open only {} (DevicePolicy={}, DeviceAllow=), and {} \
             is a {driver} device: add a drop-in with DeviceAllow=char-{driver} rw",
            self.device_allow.join(", "),
            self.device_policy,
            path.display()
        ))
    }

    /// Whether the service's user may write `path` (an existing file or device), by
    /// its owner, group and mode: `Err` says who owns it. `Ok` when the user is
    /// unknown here (no package installed yet) or root.
    pub fn user_may_write(&self, path: &Path) -> Result<(), String> {
        let Some(user) = &self.user else {
            return Ok(());
        };
        let Some((uid, mut gids)) = user_ids(user) else {
            return Ok(());
        };
        gids.extend(self.groups.iter().filter_map(|g| group_id(g)));
        if uid == 0 {
            return Ok(());
        }
        let Ok(meta) = std::fs::metadata(path) else {
            return Ok(());
        };
        let mode = meta.mode();
        let ok = if meta.uid() == uid {
            mode & 0o200 != 0
        } else if gids.contains(&meta.gid()) {
            mode & 0o020 != 0
        } else {
            mode & 0o002 != 0
        };
        if ok {
            return Ok(());
        }
        Err(format!(
            "the service's user {user} may not write it (owner {}, group {}, mode {:04o}; \
             the unit gives {user} the groups {})",
            super::user_name(meta.uid()),
            super::group_name(meta.gid()),
            mode & 0o7777,
            if self.groups.is_empty() {
                "none".to_string()
            } else {
                self.groups.join(", ")
            }
        ))
    }
}

/// A unit's boolean-or-word setting, with `true` as `yes_word`.
fn yes_no(value: &str, yes_word: &str) -> String {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => yes_word.to_string(),
        "no" | "false" | "off" | "0" | "" => "no".to_string(),
        other => other.to_string(),
    }
}

/// The character device driver of `major`, from /proc/devices (`usb`, `ttyUSB`, `ttyS`).
fn char_driver(major: u32) -> Option<String> {
    let text = std::fs::read_to_string("/proc/devices").ok()?;
    let chars = text.split("Block devices:").next()?;
    chars.lines().find_map(|l| {
        let (n, name) = l.trim().split_once(' ')?;
        (n.parse::<u32>().ok()? == major).then(|| name.trim().to_string())
    })
}

/// A user's id and primary group, when the user exists.
fn user_ids(name: &str) -> Option<(u32, Vec<u32>)> {
    let c = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: getpwnam_r writes into `pw` and `buf` (of the length given) only.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out = std::ptr::null_mut();
        if libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) != 0
            || out.is_null()
        {
            return None;
        }
        Some((pw.pw_uid, vec![pw.pw_gid]))
    }
}

/// A group's id, when the group exists.
fn group_id(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: getgrnam_r writes into `gr` and `buf` (of the length given) only.
    unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut out = std::ptr::null_mut();
        if libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) != 0
            || out.is_null()
        {
            return None;
        }
        Some(gr.gr_gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Sandbox {
        let mut s = Sandbox {
            config: PathBuf::from(DEFAULT_CONFIG),
            protect_system: "no".into(),
            protect_home: "no".into(),
            device_policy: "auto".into(),
            ..Sandbox::default()
        };
        s.read(include_str!("../../systemd/coupond.service"));
        s
    }

    fn why(r: Result<(), Refusal>) -> String {
        match r {
            Ok(()) => "ok".into(),
            Err(r) => format!("{} ({})", r.why, r.setting),
        }
    }

    #[test]
    fn the_shipped_unit_writes_only_its_state_directory_and_devices() {
        let s = shipped();
        assert_eq!(s.config, Path::new(DEFAULT_CONFIG));
        assert_eq!(s.user.as_deref(), Some("coupond"));
        assert!(s.owned(Path::new("/var/lib/coupond/coupond.db")));
        assert_eq!(
            why(s.writable(Path::new("/var/lib/coupond/coupond.db"))),
            "ok"
        );
        assert_eq!(
            why(s.writable(Path::new("/var/lib/coupond/receipts.bin"))),
            "ok"
        );
        assert_eq!(why(s.writable(Path::new("/dev/usb/lp0"))), "ok");
        assert!(why(s.writable(Path::new("/tmp/receipts.bin"))).contains("PrivateTmp=yes"));
        let srv = s.writable(Path::new("/srv/receipts.bin")).err().unwrap();
        assert_eq!(srv.setting, "ProtectSystem=strict");
        assert_eq!(srv.open.as_deref(), Some(Path::new("/srv")));
        assert!(why(s.writable(Path::new("/opt/coupond/coupond.db"))).contains("read-only"));
        assert!(why(s.writable(Path::new("/etc/coupond/x"))).contains("read-only"));
        assert!(why(s.writable(Path::new("/root/receipts.bin"))).contains("ProtectHome"));
    }

    #[test]
    fn a_drop_in_opens_a_path_and_an_empty_assignment_resets_the_list() {
        let mut s = shipped();
        s.read("[Service]\nReadWritePaths=-/srv /opt/coupond\n");
        assert_eq!(why(s.writable(Path::new("/srv/receipts.bin"))), "ok");
        assert_eq!(why(s.writable(Path::new("/opt/coupond/coupond.db"))), "ok");
        s.read("[Service]\nReadWritePaths=\nReadOnlyPaths=/var/lib/coupond/ro\n");
        assert!(s.writable(Path::new("/srv/receipts.bin")).is_err());
        assert!(s.writable(Path::new("/var/lib/coupond/ro/x")).is_err());
        // Not in [Service]: ignored.
        s.read("[Unit]\nReadWritePaths=/srv\n");
        assert!(s.writable(Path::new("/srv/receipts.bin")).is_err());
        s.read("[Service]\nExecStart=\nExecStart=/usr/bin/coupond serve --config=/etc/c.env\n");
        assert_eq!(s.config, Path::new("/etc/c.env"));
    }

    #[test]
    fn devices_are_judged_by_driver_against_device_allow() {
        let s = shipped();
        // /dev/null is a "mem" device, which the shipped unit does not list.
        let e = s.device(Path::new("/dev/null")).unwrap_err();
        assert!(
            e.contains("is a mem device") && e.contains("char-usb"),
            "{e}"
        );
        let mut open = shipped();
        open.read("[Service]\nDeviceAllow=char-mem rw\n");
        assert!(open.device(Path::new("/dev/null")).is_ok());
        // A FIFO or a file is no device.
        assert!(s.device(Path::new("/etc/hostname")).is_ok());
    }
}
