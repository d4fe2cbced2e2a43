//! The `cocoon` binary: everything lives in the library; see `cocoon --help`.

fn main() -> std::process::ExitCode {
    cocoon::cli::main()
}
