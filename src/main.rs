//! The `rookery` binary: parse the command line, run it, print any error once.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = rookery::cli::Cli::parse();
    match rookery::command::app::run(cli) {
        Ok(exit) => exit.into(),
        Err(err) => {
            eprintln!("error: {err:#}");
            rookery::error::exit_for(&err).into()
        }
    }
}
