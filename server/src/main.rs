//! `pullpassd`: see `pullpassd --help`.

use clap::Parser;

fn main() {
    let cli = pullpass_server::cli::Cli::parse();
    std::process::exit(pullpass_server::main_with(cli));
}
