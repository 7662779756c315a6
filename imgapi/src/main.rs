//! `imgapi [-s] [-c FILE]`: the flags of the Go `imgapi`, plus `--hash-password` and
//! `--check-config`.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use imgapi::config::{Config, LogFormat, EMBEDDED_DEFAULT};

#[derive(Parser)]
#[command(name = "imgapi", version, about = "A Joyent/Triton IMGAPI-compatible image server")]
struct Args {
    /// Start the server.
    #[arg(short = 's', long = "server")]
    server: bool,
    /// Config file [default: $HOME/.imgapi.json, or the built-in example if that is missing].
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Read a password on standard input and print its argon2 hash for "userdb".
    #[arg(long)]
    hash_password: bool,
    /// Check the config file and exit.
    #[arg(long)]
    check_config: bool,
}

fn load_config(explicit: Option<PathBuf>) -> Result<(Config, String), String> {
    if let Some(path) = explicit {
        let config = Config::from_file(&path).map_err(|e| error_chain(&e))?;
        return Ok((config, path.display().to_string()));
    }
    let default = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".imgapi.json"));
    match default {
        Some(path) if path.exists() => {
            let config = Config::from_file(&path).map_err(|e| error_chain(&e))?;
            Ok((config, path.display().to_string()))
        }
        _ => {
            let config = Config::from_json(EMBEDDED_DEFAULT, "built-in example config".as_ref(), "".as_ref())
                .map_err(|e| error_chain(&e))?;
            Ok((config, "the built-in example config (no $HOME/.imgapi.json)".into()))
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    service_kit::ErrorChain(e).to_string()
}

fn init_logging(config: &Config) {
    let format = match config.log_format {
        LogFormat::Json => service_kit::logging::Format::Json,
        LogFormat::Text => service_kit::logging::Format::Text,
    };
    service_kit::logging::init(&config.log_level, format);
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.hash_password {
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line).is_err()
            || line.trim_end_matches(['\r', '\n']).is_empty()
        {
            eprintln!("imgapi: give the password on standard input");
            return ExitCode::from(2);
        }
        println!("{}", imgapi::auth::basic::hash_password(line.trim_end_matches(['\r', '\n'])));
        return ExitCode::SUCCESS;
    }
    let (config, origin) = match load_config(args.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("imgapi: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("imgapi: {origin} is valid");
        return ExitCode::SUCCESS;
    }
    if !args.server {
        // As the Go server: only server mode exists.
        eprintln!("imgapi: the client API is not implemented; use -s to start the server");
        return ExitCode::from(2);
    }
    init_logging(&config);
    tracing::info!(config = %origin, "starting");
    if config.has_example_credentials() {
        tracing::warn!(
            "userdb has the example user admin/secret: anyone who can reach {} can change images; \
             give admin a password of your own (imgapi --hash-password)",
            config.listen_addr()
        );
    }
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    let result = actix_web::rt::System::new().block_on(async move {
        let bound = imgapi::bind(config).map_err(|e| error_chain(&e))?;
        for addr in &bound.addrs {
            // Tests and scripts read the chosen port from this line.
            println!("imgapi listening on {scheme}://{addr}");
        }
        bound.run().await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imgapi: {e}");
            ExitCode::from(1)
        }
    }
}
