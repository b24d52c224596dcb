//! Entry point: parse the command line, run the command, map the outcome to an exit code.

fn main() -> std::process::ExitCode {
    aica::cli::main()
}

/// mimalloc: fewer allocator stalls across tokio worker threads than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
