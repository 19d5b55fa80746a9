use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ooda::cli::Cli::parse();
    match ooda::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ooda: {error}");
            ExitCode::FAILURE
        }
    }
}
