//! The one TLS client configuration of coupond (SPEC §9): catch-up's HTTPS calls to
//! Douyin use it today, and an `mqtts://` connection can take the same
//! `Arc<ClientConfig>` (rumqttc accepts a rustls configuration without bringing a crypto
//! provider of its own).
//!
//! - rustls with the `ring` provider, chosen explicitly rather than through rustls'
//!   process-wide default: ring builds for ARM with zig's C compiler; aws-lc (rustls'
//!   default) needs cmake and a C toolchain per target.
//! - Trust: the Mozilla root programme as bundled by `webpki-roots`, because store boxes
//!   carry stale or missing CA bundles, plus an optional extra CA file (PEM) for a test
//!   or private endpoint (`--douyin-ca`, later `--mqtt-ca`).
//! - Protocol versions: rustls' safe defaults (TLS 1.2 and 1.3).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// A client configuration trusting the bundled web roots and, when given, every
/// certificate in the PEM file `extra_ca`. The error is one line naming the file.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        add_pem(&mut roots, &pem).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Adds every certificate of a PEM bundle; a bundle without one is an error.
fn add_pem(roots: &mut RootCertStore, pem: &[u8]) -> Result<(), String> {
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not a PEM certificate file ({e})"))?;
        roots
            .add(cert)
            .map_err(|e| format!("a certificate cannot be used as a CA: {e}"))?;
        added += 1;
    }
    if added == 0 {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_the_web_roots() {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        assert!(roots.len() > 100, "{}", roots.len());
        assert!(client_config(None).is_ok());
    }

    #[test]
    fn an_extra_ca_file_must_hold_a_certificate() {
        let mut roots = RootCertStore::empty();
        for (pem, want) in [
            (&b""[..], "holds no PEM certificate"),
            (&b"hello\n"[..], "holds no PEM certificate"),
            (
                &b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"[..],
                "not a PEM certificate file",
            ),
        ] {
            let e = add_pem(&mut roots, pem).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
        let e = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(e.starts_with("cannot read /nonexistent/ca.pem"), "{e}");
    }
}
