//! `shardgate-load`: the bundled load generator (see the `shardgate_load` library).

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    shardgate_load::cli::main()
}
