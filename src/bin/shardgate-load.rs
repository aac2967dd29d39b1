//! `shardgate-load`: the bundled load generator (see `shardgate::load`).

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    shardgate::load::cli::main()
}
