//! Stamps the build time into the binary (catch-up waits for a clock at least this
//! late: boxes without a real-time clock boot in 1970). `SOURCE_DATE_EPOCH` wins, for
//! reproducible builds.
fn main() {
    let stamp = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    // Not COUPOND_*: `cargo run` and `cargo test` put it in the program's environment,
    // where coupond warns about every COUPOND_ name that is no setting.
    println!("cargo:rustc-env=BUILD_TIME_OF_COUPOND={stamp}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
}
