//! URLs given in settings (`coupond send --url`), split for a raw HTTP/1.1 client.

/// An `http://` URL, split for a raw HTTP/1.1 client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let rest = if let Some(r) = s.strip_prefix("http://") {
            r
        } else if s.starts_with("https://") {
            return Err(
                "https is not supported: point --url at the box or at the tunnel's \
                        plain-HTTP entry (http://HOST:PORT/PATH)"
                    .into(),
            );
        } else {
            return Err("want http://HOST[:PORT]/PATH".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?)
            }
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        Ok(Url {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            path: path.to_string(),
        })
    }

    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8080/douyin/webhook").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/douyin/webhook")
        );
        assert_eq!(Url::parse("http://box.example").unwrap().port, 80);
        assert_eq!(
            Url::parse("http://[::1]:81/x").unwrap().authority(),
            "[::1]:81"
        );
        assert!(Url::parse("https://x/y")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(Url::parse("ftp://x").is_err());
    }
}
