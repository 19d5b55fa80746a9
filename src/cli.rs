//! The `ooda` command line: one binary, one subcommand per part of the system.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::crd;

#[derive(Parser, Debug)]
#[command(name = "ooda", version, about = "Sandboxed, hibernating cloud development environments on Kubernetes")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the CustomResourceDefinitions generated from the Rust types, or write one file per CRD.
    Crds {
        /// Directory to write `<plural>.ooda.run.yaml` files into, instead of printing to stdout.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("could not render CRD YAML: {0}")]
    Render(#[from] serde_yaml::Error),
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Crds { out: None } => {
            let documents = crd::definitions().iter().map(crd::to_yaml).collect::<Result<Vec<_>, _>>()?;
            print!("{}", documents.join("---\n"));
            Ok(())
        }
        Command::Crds { out: Some(dir) } => write_crds(&dir),
    }
}

fn write_crds(dir: &std::path::Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir).map_err(|source| CliError::Write { path: dir.to_owned(), source })?;
    for definition in crd::definitions() {
        let path = dir.join(crd::file_name(&definition));
        std::fs::write(&path, crd::to_yaml(&definition)?).map_err(|source| CliError::Write { path, source })?;
    }
    Ok(())
}
