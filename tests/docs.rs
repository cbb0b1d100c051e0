//! The README documents every flag of every command, with its default: docs that match
//! the code.

use coupond::config::COMMANDS;

#[test]
fn readme_lists_every_flag_and_default() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for cmd in COMMANDS {
        let section = readme
            .split(&format!("### `coupond {}`", cmd.name))
            .nth(1)
            .unwrap_or_else(|| panic!("README has no section for coupond {}", cmd.name));
        let section = section.split("\n### ").next().unwrap();
        for f in cmd.flags {
            let row = section
                .lines()
                .find(|l| l.starts_with(&format!("| `--{}", f.name)))
                .unwrap_or_else(|| {
                    panic!("README's coupond {} table lacks --{}", cmd.name, f.name)
                });
            if let Some(d) = f.default {
                assert!(
                    row.contains(&format!("`{d}`")),
                    "README row for --{} lacks its default {d}: {row}",
                    f.name
                );
            }
        }
    }
}

/// The packaged bash completion is the one the flag table generates. Run with
/// `COUPOND_BLESS=1` to rewrite it after changing a flag.
#[test]
fn bash_completion_is_generated_from_the_flag_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/coupond.bash");
    let want = coupond::config::flags::bash_completion();
    if std::env::var_os("COUPOND_BLESS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "packaging/coupond.bash is stale: COUPOND_BLESS=1 cargo test --test docs"
    );
    for c in COMMANDS {
        assert!(
            want.contains(&format!("        {}) ", c.name)),
            "{}",
            c.name
        );
    }
}
