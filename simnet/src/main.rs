//! `cocoon-simnet`: run a scenario (`run`), show its seeded plan (`plan`), or compare two
//! reports (`compare`). See `docs/simnet.md`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use cocoon_simnet::plan::Plan;
use cocoon_simnet::report::Report;
use cocoon_simnet::scenario::Scenario;
use cocoon_simnet::{compare, markdown, plot, run};

/// mimalloc rather than glibc's malloc: see this crate's manifest.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "cocoon-simnet",
    version,
    about = "Many real cocoon nodes in one process over a simulated network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct ScenarioArgs {
    /// Scenario file (TOML), e.g. simnet/scenarios/join.toml.
    scenario: PathBuf,
    /// Replace the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Replace the scenario's client count (scale a scenario up or down).
    #[arg(long)]
    clients: Option<usize>,
}

impl ScenarioArgs {
    fn load(&self) -> anyhow::Result<(Scenario, String)> {
        let (mut s, text) = Scenario::load(&self.scenario)?;
        if let Some(seed) = self.seed {
            s.seed = seed;
        }
        if let Some(clients) = self.clients {
            s.nodes.clients = clients;
        }
        Ok((s, text))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario and write report.json, report.md and plots.
    Run {
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// Output directory (default: simnet-out/<name>-seed<seed>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Keep the nodes' data directories here (default: a temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the plan's digest and node counts without running anything.
    Plan {
        #[command(flatten)]
        scenario: ScenarioArgs,
    },
    /// Print the differences between two reports.
    Compare {
        /// First report.json.
        a: PathBuf,
        /// Second report.json.
        b: PathBuf,
    },
}

fn read_report(path: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a simnet report", path.display()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("cocoon_simnet=info,warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(cocoon::telemetry::stderr_colour())
        .init();
    match cli.command {
        Command::Plan { scenario } => {
            let (s, _) = scenario.load()?;
            let plan = Plan::new(&s);
            println!("scenario {} seed {}", s.name, s.seed);
            println!("plan digest {}", plan.digest());
            println!(
                "nodes {} (lookups {}, requests {}, churn events {}, minority {})",
                plan.nodes.len(),
                plan.lookups.len(),
                plan.requests.len(),
                plan.churn.len(),
                plan.minority.len()
            );
            Ok(())
        }
        Command::Compare { a, b } => {
            print!("{}", compare::compare(&read_report(&a)?, &read_report(&b)?));
            Ok(())
        }
        Command::Run { scenario, out, data_dir } => {
            let (s, text) = scenario.load()?;
            let out = out.unwrap_or_else(|| PathBuf::from(format!("simnet-out/{}-seed{}", s.name, s.seed)));
            std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(run::run(s, text, data_dir))?;
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            if let Some(twin) = &report.twin {
                write_report(twin, &out.join("twin"))?;
                std::fs::write(out.join("compare-twin.md"), compare::compare(twin, &report))?;
            }
            print!("{}", write_report(&report, &out)?);
            eprintln!("report written to {}", out.display());
            Ok(())
        }
    }
}

/// Write `report.json`, the plots and `report.md` into `out`; the summary.
fn write_report(report: &Report, out: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(report)?)?;
    let plots = plot::write_all(report, out)?;
    let summary = markdown::summary(report, &plots);
    std::fs::write(out.join("report.md"), &summary)?;
    Ok(summary)
}
