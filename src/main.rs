use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = ooda::cli::Cli::parse();
    let runtime = match ooda::cli::runtime(&cli.command) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ooda: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: ooda::cli::Cli) -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var("OODA_LOG_FORMAT").as_deref() == Ok("json") {
        tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
    } else {
        // Colours only for a person at a terminal, never into a collector's file.
        let ansi = std::io::stderr().is_terminal();
        tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    }
    match ooda::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ooda: {error}");
            ExitCode::FAILURE
        }
    }
}

/// mimalloc commits its arenas as they are used rather than whole, and gives freed pages back at
/// once rather than after a second (which a burst never leaves it). For the operator, whose
/// memory is long-lived caches filled in bursts, that is 45 MiB resident instead of 75 at 500
/// projects (benches/reports/operator-scale.md); for the gateway, 25 MB idle instead of 36, and a
/// peak 6 MB over idle instead of 26 across a dozen 50 MB publishes (benches/reports/sites.md),
/// with the preview proxy's requests/s unchanged (benches/reports/gateway-proxy-changes.md). It
/// must happen before the first allocation reserves an arena, so it runs as the process loads:
/// the loader calls `.init_array` entries before Rust's runtime starts.
extern "C" fn return_memory_promptly() {
    use libmimalloc_sys::{mi_option_set, mi_option_t};
    // `mi_option_e` in mimalloc v3's mimalloc.h (libmimalloc-sys 0.1.49 names neither).
    const ARENA_EAGER_COMMIT: mi_option_t = 4;
    const PURGE_DELAY: mi_option_t = 15;
    // SAFETY: options may be set at any time, from any thread.
    unsafe {
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DELAY, 0);
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static RETURN_MEMORY_PROMPTLY: extern "C" fn() = return_memory_promptly;
