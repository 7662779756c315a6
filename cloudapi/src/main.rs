//! `cloudapi serve [-c CONFIG]`: runs the fleet's API; without a config, on the embedded
//! default (SQLite in ./data, 127.0.0.1:9000).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cloudapi", version, about = "One API over every agent host")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// The config file (JSON); without one, the embedded default.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Exit codes: a config or usage error, and a failure to start or run.
const USAGE: u8 = 2;
const ERROR: u8 = 1;

fn main() -> ExitCode {
    let Command::Serve { config } = Args::parse().command;
    let config = match config {
        Some(path) => match cloudapi::config::Config::from_file(&path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("cloudapi: {}", service_kit::ErrorChain(&e));
                return ExitCode::from(USAGE);
            }
        },
        None => cloudapi::config::Config::embedded(),
    };
    service_kit::logging::init(&config.log_level, service_kit::logging::Format::Text);
    let result = actix_web::rt::System::new().block_on(async move {
        let server = cloudapi::bind(config).await.map_err(|e| service_kit::ErrorChain(&e).to_string())?;
        for addr in &server.addrs {
            println!("cloudapi listening on http://{addr}");
        }
        server.run().await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudapi: {e}");
            ExitCode::from(ERROR)
        }
    }
}
