fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    coupond::cli::main(&argv)
}
