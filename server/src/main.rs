//! `pullpassd`: see `pullpassd --help`.

fn main() {
    let cli = pullpass_server::cli::parse();
    std::process::exit(pullpass_server::main_with(cli));
}
