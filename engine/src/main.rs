use clap::Parser;

/// glibc malloc spent a fifth of the engine's CPU (and lock waits) under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = switchboard_engine::cli::Cli::parse();
    switchboard_engine::cli::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchboard: cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(switchboard_engine::cli::run(cli));
    std::process::exit(code);
}
