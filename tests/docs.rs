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
