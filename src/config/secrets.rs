//! The app's client secrets (SPEC §7). Never flags: a command line is visible to every
//! user of the box. In order: `--secret-file` (one per line, so a rotation can list the
//! new and the old), else systemd's `LoadCredential=` (`$CREDENTIALS_DIRECTORY/client_secret`),
//! else `$COUPOND_CLIENT_SECRET`. No error message or log line ever carries a secret.

use std::path::Path;

use super::ConfigError;

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// The client secrets, in SPEC §7's order: `--secret-file` (one per line; blank lines and
/// `#` comments skipped), else `$CREDENTIALS_DIRECTORY/client_secret` (systemd
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
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {what} {}: {e}", path.display())))?;
    let secrets = secret_lines(&text);
    if secrets.is_empty() {
        return err(format!(
            "{what} {} holds no secret (want the app's client secret, one per line)",
            path.display()
        ));
    }
    Ok(secrets)
}

fn secret_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
