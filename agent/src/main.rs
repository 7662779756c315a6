//! `agent`: `agent serve -c CONFIG` runs the daemon; the other subcommands are clients of its
//! REST API.

use std::process::ExitCode;

use agent::cli::args::{Args, Command};
use agent::cli::{self, finish};
use clap::Parser;

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Serve { config } => serve(&config),
        Command::MetadataProxy { socket } => match agent::guest::listener::proxy(&socket) {
            Ok(()) => ExitCode::SUCCESS,
            // QEMU passes this stream to the guest: the message goes to QEMU's log.
            Err(error) => {
                eprintln!("agent metadata-proxy {}: {error}", socket.display());
                ExitCode::FAILURE
            }
        },
        command => match args.connection.resolve(|name| std::env::var(name).ok()) {
            Ok(conn) => cli::args::run(&conn, command),
            Err(failure) => finish(Err(failure)),
        },
    }
}

fn serve(path: &std::path::Path) -> ExitCode {
    let config = match agent::config::Config::from_file(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("agent: {}", service_kit::ErrorChain(&e));
            return ExitCode::from(cli::exit::USAGE);
        }
    };
    service_kit::logging::init(&config.log_level, service_kit::logging::Format::Text);
    let result = actix_web::rt::System::new().block_on(async move {
        let server = agent::bind(config).map_err(|e| service_kit::ErrorChain(&e).to_string())?;
        for addr in &server.addrs {
            println!("agent listening on http://{addr}");
        }
        // The VMs go on running when the server stops; the next agent adopts them.
        server.run().await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: {e}");
            ExitCode::from(cli::exit::ERROR)
        }
    }
}
