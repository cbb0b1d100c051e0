//! The app's client secrets (SPEC §7). Never flags: a command line is visible to every
//! user of the box. In order: `--secret-file` (one per line, so a rotation can list the
//! new and the old), else systemd's `LoadCredential=` (`$CREDENTIALS_DIRECTORY/client_secret`),
//! else `$COUPOND_CLIENT_SECRET`. No error message or log line ever carries a secret.

use std::path::Path;

use super::ConfigError;

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// The client secrets, in SPEC §7's order: `--secret-file` (one per line, read as
/// [`secret_lines`] says), else `$CREDENTIALS_DIRECTORY/client_secret` (systemd
/// `LoadCredential=`), else `$COUPOND_CLIENT_SECRET`.
pub fn load_secrets(
    secret_file: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ConfigError> {
    if let Some(file) = secret_file {
        return read_secret_file(Path::new(file), "--secret-file");
    }
    if let Some(dir) = env("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
        let path = Path::new(&dir).join("client_secret");
        if path.exists() {
            return read_secret_file(&path, "the systemd credential");
        }
    }
    if let Some(v) = env("COUPOND_CLIENT_SECRET").filter(|v| !v.trim().is_empty()) {
        return Ok(secret_lines(&v));
    }
    err(
        "no client secret: put it in a file (one per line) and pass --secret-file FILE, \
         or use systemd LoadCredential=client_secret:FILE, or set COUPOND_CLIENT_SECRET",
    )
}

fn read_secret_file(path: &Path, what: &str) -> Result<Vec<String>, ConfigError> {
    let bytes = super::read_capped(path, super::SECRET_FILE_CAP)
        .map_err(|e| ConfigError(format!("cannot read {what} {}: {e}", path.display())))?;
    // Notepad's "Unicode" is UTF-16 with a byte-order mark: say so rather than fail to
    // verify every push.
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        return err(format!(
            "{what} {} is UTF-16 text: save it as UTF-8 (or plain ASCII)",
            path.display()
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        ConfigError(format!(
            "{what} {} is not UTF-8 text: save it as UTF-8 (or plain ASCII)",
            path.display()
        ))
    })?;
    let secrets = secret_lines(&text);
    if secrets.is_empty() {
        return err(format!(
            "{what} {} holds no secret (want the app's client secret, one per line)",
            path.display()
        ));
    }
    Ok(secrets)
}

/// One secret per line, as editors on every system save them: a UTF-8 byte-order mark
/// (Windows Notepad) is ignored, lines may end in LF, CRLF or CR, and lines that are only
/// whitespace or a `#` comment are skipped. Spaces around a secret are not part of it.
fn secret_lines(text: &str) -> Vec<String> {
    text.trim_start_matches('\u{feff}')
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_from_any_editor_read_the_same() {
        let want = ["new-one", "old-one"];
        for text in [
            "new-one\nold-one\n",
            "\u{feff}new-one\r\nold-one\r\n",
            "\u{feff}new-one\rold-one\r",
            "  \t \nnew-one\n\u{3000}\n \r\n# note\nold-one",
        ] {
            assert_eq!(secret_lines(text), want, "{text:?}");
        }
        let dir = std::env::temp_dir().join(format!("coupond-bom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, b"\xff\xfen\x00e\x00w\x00").unwrap();
        let e = read_secret_file(&file, "--secret-file").unwrap_err().0;
        assert!(e.contains("UTF-16") && e.contains("UTF-8"), "{e}");
        std::fs::write(&file, b"caf\xe9\n").unwrap();
        let e = read_secret_file(&file, "--secret-file").unwrap_err().0;
        assert!(e.contains("not UTF-8"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_come_from_file_then_credentials_then_environment() {
        let dir = std::env::temp_dir().join(format!("coupond-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secrets");
        std::fs::write(&file, "# rotated 2026-11\nnew-one\n\n  old-one  \n").unwrap();
        std::fs::write(dir.join("client_secret"), "from-credential\n").unwrap();
        let d = dir.to_string_lossy().to_string();
        let env = move |k: &str| match k {
            "CREDENTIALS_DIRECTORY" => Some(d.clone()),
            "COUPOND_CLIENT_SECRET" => Some("from-env".to_string()),
            _ => None,
        };
        let f = file.to_string_lossy().to_string();
        assert_eq!(
            load_secrets(Some(&f), &env).unwrap(),
            ["new-one", "old-one"]
        );
        assert_eq!(load_secrets(None, &env).unwrap(), ["from-credential"]);
        let env_only = |k: &str| (k == "COUPOND_CLIENT_SECRET").then(|| "from-env".to_string());
        assert_eq!(load_secrets(None, &env_only).unwrap(), ["from-env"]);
        std::fs::write(&file, "\n# nothing\n").unwrap();
        assert!(load_secrets(Some(&f), &env)
            .unwrap_err()
            .0
            .contains("holds no secret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
