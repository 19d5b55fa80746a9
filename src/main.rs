use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = ooda::cli::Cli::parse();
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

/// For the operator, whose memory is long-lived caches filled in bursts: mimalloc commits its
/// arenas as they are used rather than whole, and gives freed pages back at once rather than after
/// a second (which a burst never leaves it). At 500 projects this is 47 MiB resident instead of
/// 75 (benches/reports/operator-scale.md); the gateway, which allocates and frees on every
/// request, keeps the defaults. It must happen before the first allocation reserves an arena, so
/// it runs as the process loads: the loader calls `.init_array` entries with the arguments, before
/// Rust's runtime starts.
extern "C" fn return_memory_promptly(argc: i32, argv: *const *const std::ffi::c_char, _env: *const *const u8) {
    use libmimalloc_sys::{mi_option_set, mi_option_t};
    // `mi_option_e` in mimalloc v3's mimalloc.h (libmimalloc-sys 0.1.49 names neither).
    const ARENA_EAGER_COMMIT: mi_option_t = 4;
    const PURGE_DELAY: mi_option_t = 15;
    // SAFETY: the loader passes argc valid C strings in argv; options may be set at any time.
    let operator = argc > 1 && unsafe { std::ffi::CStr::from_ptr(*argv.add(1)) }.to_bytes() == b"operator";
    if operator {
        unsafe {
            mi_option_set(ARENA_EAGER_COMMIT, 0);
            mi_option_set(PURGE_DELAY, 0);
        }
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static RETURN_MEMORY_PROMPTLY: extern "C" fn(i32, *const *const std::ffi::c_char, *const *const u8) =
    return_memory_promptly;
