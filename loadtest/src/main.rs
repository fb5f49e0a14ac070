//! `loadtest`: see `loadtest --help` and loadtest/README.md.

fn main() -> std::process::ExitCode {
    io_loadtest::main_entry()
}
