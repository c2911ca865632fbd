use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = palisade::cli::Cli::parse();
    match palisade::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("palisade: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
