//! The `switchboard` CLI, built inside the tests package so black-box tests
//! can start it as a separate process (and kill -9 it).

use clap::Parser;

fn main() {
    let cli = engine::cli::Cli::parse();
    engine::cli::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let code = runtime.block_on(engine::cli::run(cli));
    std::process::exit(code);
}
