//! `cocoon-simnet`: will run many real cocoon nodes in one process over a simulated network.
//!
//! Not built yet (see the simnet issue); today it says so and exits non-zero rather than pretend.

fn main() -> std::process::ExitCode {
    eprintln!("cocoon-simnet: no scenarios are implemented yet; see docs/simnet.md");
    std::process::ExitCode::FAILURE
}
