//! The tunnel examples, tested: the exact ssh -R command line of
//! systemd/coupond-tunnel.service against a real sshd on 127.0.0.1, with a coupon pushed
//! through it by `coupond send`; the frpc example checked for the settings coupond needs
//! (no frp build can be installed here, so frpc itself is not run).

mod common;

use common::*;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The unit's ExecStart= as words, continuation lines joined.
fn exec_start(unit: &str) -> Vec<String> {
    let joined = unit.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .expect("ExecStart=");
    line["ExecStart=".len()..]
        .split_whitespace()
        .map(String::from)
        .collect()
}

#[test]
fn the_ssh_tunnel_unit_carries_a_push_from_the_relay_port_to_coupond() {
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect(
            "needs OpenSSH's sshd (Debian package openssh-server; ./run-tests installs it as root)",
        );
    let dir = Scratch::new("tunnel");
    let d = Daemon::start(&dir.0);

    // A relay: sshd on loopback that accepts one key.
    let keygen = |path: &Path| {
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path)
            .status()
            .unwrap();
        assert!(ok.success());
    };
    let host_key = dir.path("host_key");
    let client_key = dir.path("tunnel_key");
    keygen(&host_key);
    keygen(&client_key);
    std::fs::copy(dir.path("tunnel_key.pub"), dir.path("authorized_keys")).unwrap();
    let ssh_port = free_port();
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".into());
    std::fs::write(
        dir.path("sshd_config"),
        format!(
            "Port {ssh_port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             AllowTcpForwarding remote\nGatewayPorts no\nAllowUsers {user}\n",
            host_key.display(),
            dir.path("authorized_keys").display(),
            dir.path("sshd.pid").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all("/run/sshd").ok();
    let _relay = Killed(
        Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(dir.path("sshd_config"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("sshd to start", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", ssh_port)).is_ok()
    });
    let host_pub = std::fs::read_to_string(dir.path("host_key.pub")).unwrap();
    let known_hosts = dir.path("tunnel_known_hosts");
    std::fs::write(&known_hosts, format!("[127.0.0.1]:{ssh_port} {host_pub}")).unwrap();

    // The unit's own command line, with this test's host, ports, key and known_hosts.
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/coupond-tunnel.service"),
    )
    .unwrap();
    let relay_port = free_port();
    let words: Vec<String> = exec_start(&unit)
        .into_iter()
        .map(|w| {
            w.replace(
                "${CREDENTIALS_DIRECTORY}/tunnel_key",
                client_key.to_str().unwrap(),
            )
            .replace(
                "/etc/coupond/tunnel_known_hosts",
                known_hosts.to_str().unwrap(),
            )
            .replace(
                "127.0.0.1:18080:127.0.0.1:8080",
                &format!("127.0.0.1:{relay_port}:{}", d.addr),
            )
            .replace("tunnel@relay.example.com", &format!("{user}@127.0.0.1"))
        })
        .collect();
    let p = words
        .iter()
        .position(|w| w == "-p")
        .expect("-p in ExecStart");
    let mut words = words;
    words[p + 1] = ssh_port.to_string();
    assert!(
        words.iter().any(|w| w == "ExitOnForwardFailure=yes"),
        "the unit must fail on a failed forward"
    );
    let _tunnel = Killed(
        Command::new(&words[0])
            .args(&words[1..])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the tunnel to come up", Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", relay_port)).is_ok()
    });

    // What an installer runs on the relay to check the tunnel end to end.
    let url = format!("http://127.0.0.1:{relay_port}/douyin/webhook");
    let secret = dir.path("secret");
    let o = send(&url, &secret, &["--certificate-id", "TUNNEL-TEST-1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let o = send(&url, &secret, &["--challenge", "42"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(r#"{"challenge":42}"#));
    assert_eq!(
        query_str(
            &d.sql(),
            "SELECT status FROM certificates WHERE certificate_id = 'TUNNEL-TEST-1'"
        ),
        "verified"
    );
}

#[test]
fn the_tunnel_unit_verifies_and_the_frpc_example_publishes_only_the_webhook_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(root.join("systemd/coupond-tunnel.service"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.trim().is_empty(), "{text}");
    }
    // Parsed with Python's tomllib (3.11+): valid TOML, and pointing where coupond listens.
    let check = r#"
import sys, tomllib
c = tomllib.load(open(sys.argv[1], "rb"))
[p] = c["proxies"]
assert c["serverPort"] == 7000 and c["auth"]["method"] == "token", c
assert p["type"] == "http" and p["localIP"] == "127.0.0.1" and p["localPort"] == 8080, p
assert p["locations"] == ["/douyin/webhook"], p
print("ok")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(check)
        .arg(root.join("systemd/frpc.toml.example"))
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The defaults it relies on.
    let help = String::from_utf8_lossy(&run(&["serve", "--help"], &[]).stdout).into_owned();
    assert!(
        help.contains("[default: 127.0.0.1:8080]") && help.contains("[default: /douyin/webhook]")
    );
}
