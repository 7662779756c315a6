//! `agent`: `agent serve -c CONFIG` runs the daemon; the other subcommands are clients of its
//! REST API.

use std::path::PathBuf;
use std::process::ExitCode;

use agent::cli::{self, Connection};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agent",
    version,
    about = "Hypervisor host agent: images from IMGAPI sources, and instances cloned from them"
)]
struct Args {
    /// The agent's API.
    #[arg(long, global = true, env = "AGENT_URL", default_value = "http://127.0.0.1:9090")]
    url: String,
    /// Bearer token for changes.
    #[arg(long, global = true, env = "AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Basic credentials for changes, as USER:PASSWORD.
    #[arg(long, global = true, env = "AGENT_USER", hide_env_values = true)]
    user: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent daemon.
    Serve {
        #[arg(
            short = 'c',
            long = "config",
            env = "AGENT_CONFIG",
            default_value = "/usr/local/etc/agent/config.json"
        )]
        config: PathBuf,
    },
    /// Internal: what QEMU runs for each guest connection to the metadata service.
    #[command(hide = true)]
    MetadataProxy { socket: PathBuf },
    /// Images on this host.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Installer ISOs on this host.
    #[command(subcommand)]
    Isos(IsosCommand),
    /// Named switches: the host bridges NICs join.
    #[command(subcommand)]
    Switches(SwitchesCommand),
    /// The IMGAPI sources images are imported from.
    #[command(subcommand)]
    Sources(SourcesCommand),
    /// Instances (VMs) on this host. ID is a uuid or an alias.
    #[command(subcommand)]
    Instances(Box<InstancesCommand>),
    /// Show an instance's serial console.
    Console {
        id: String,
        /// Keep streaming new output.
        #[arg(short, long)]
        follow: bool,
        /// Stream, and send each line typed to the guest (Ctrl-D detaches).
        #[arg(short, long)]
        attach: bool,
    },
}

#[derive(Subcommand)]
enum InstancesCommand {
    /// Create an instance from an imported image (or with a blank disk), and start it.
    Create {
        /// The image uuid; without one, the disk is blank (`--disk` MiB), for an ISO install.
        #[arg(long)]
        image: Option<String>,
        #[arg(long)]
        alias: Option<String>,
        #[arg(long)]
        vcpus: Option<u32>,
        /// Memory in MiB (default 512).
        #[arg(long)]
        memory: Option<u64>,
        /// Boot disk size in MiB (default: the image's).
        #[arg(long)]
        disk: Option<u64>,
        /// A NIC: `user`, `switch:<name>` or `bridge:<host bridge>`, then optionally
        /// `,vlan=<id>` and `,mac=<mac>`; repeat for more (default: one `user` NIC on QEMU).
        #[arg(long = "nic")]
        nics: Vec<String>,
        /// bios, uefi or bhyveload.
        #[arg(long)]
        firmware: Option<String>,
        #[command(flatten)]
        guest: cli::instances::GuestArgs,
        /// An installer ISO (see `agent isos`) attached as a CD.
        #[arg(long, value_name = "ISO")]
        cdrom: Option<String>,
        /// Boot from `cd` or `disk` (default).
        #[arg(long)]
        boot: Option<String>,
        /// Create it stopped.
        #[arg(long)]
        no_start: bool,
    },
    /// Snapshot a stopped instance's disk (`--delete` removes the snapshot).
    Snapshot {
        id: String,
        name: String,
        #[arg(long)]
        delete: bool,
    },
    /// Publish a stopped instance's disk as a new image on an IMGAPI source (a golden image).
    Publish {
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        /// linux (default), bsd, windows, illumos, other.
        #[arg(long)]
        os: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// The URL of a configured source (default: the first one with credentials).
        #[arg(long = "to", value_name = "SOURCE_URL")]
        to: Option<String>,
    },
    /// List an instance's disk snapshots, oldest first.
    Snapshots { id: String },
    /// Put a stopped instance's disk back as it was at a snapshot (ZFS: later snapshots go).
    Rollback { id: String, name: String },
    /// Attach an installer ISO as the instance's CD, or eject it (from its next start).
    Cdrom {
        id: String,
        /// The ISO's name.
        #[arg(long, conflicts_with = "eject")]
        iso: Option<String>,
        #[arg(long)]
        eject: bool,
        /// Boot from `cd` or `disk` (default).
        #[arg(long)]
        boot: Option<String>,
    },
    /// Change what the guest is told about itself (seen from its next start).
    Update {
        id: String,
        #[command(flatten)]
        guest: cli::instances::GuestArgs,
        /// Remove a metadata key; repeat for more.
        #[arg(long, value_name = "KEY")]
        unset: Vec<String>,
        /// Remove the user-data.
        #[arg(long)]
        clear_user_data: bool,
    },
    /// List instances.
    List {
        /// Include destroyed instances.
        #[arg(long)]
        destroyed: bool,
    },
    /// Show one instance, with its recent history.
    Get { id: String },
    /// Start a stopped or failed instance.
    Start { id: String },
    /// Stop: ACPI power button, forced off after the agent's stop timeout.
    Stop {
        id: String,
        /// Power off at once.
        #[arg(long)]
        force: bool,
    },
    /// Reboot: ACPI poweroff, then start again.
    Reboot {
        id: String,
        /// Hard reset instead.
        #[arg(long)]
        force: bool,
    },
    /// Destroy an instance and its disk (stopping it first).
    Delete { id: String },
}

#[derive(Subcommand)]
enum IsosCommand {
    /// List the ISOs, with the instances that have each attached.
    List,
    /// Download an ISO onto the agent's host (progress shown; checksum checked when given).
    Fetch {
        /// Where to download it from (http or https).
        #[arg(value_name = "URL")]
        from: String,
        /// Default: the URL's file name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        sha256: Option<String>,
        /// Start the fetch and return.
        #[arg(long)]
        no_wait: bool,
    },
    /// Upload a local ISO file.
    Upload {
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Rename an ISO (refused while attached).
    Rename { from: String, to: String },
    /// Delete an ISO (refused while attached).
    Delete { name: String },
}

#[derive(Subcommand)]
enum SwitchesCommand {
    /// List the switches, whether their bridge exists, and the NICs on each.
    List,
    /// Add a switch (its bridge is created now if it does not exist).
    Create {
        name: String,
        /// The host bridge (default: the switch's name).
        #[arg(long)]
        bridge: Option<String>,
        /// A host interface that links the switch to the outside network.
        #[arg(long)]
        uplink: Option<String>,
    },
    /// Delete a switch made through the API (refused while NICs are on it).
    Delete { name: String },
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// List the images on this host.
    List,
    /// Show one image.
    Get { uuid: String },
    /// Import an image (and its origins) from the sources.
    Import {
        uuid: String,
        /// Start the import and print the job instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete an image (refused while something depends on it).
    Delete { uuid: String },
}

#[derive(Subcommand)]
enum SourcesCommand {
    /// List the sources in lookup order.
    List,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let conn = Connection {
        url: args.url.trim_end_matches('/').to_string(),
        token: args.token,
        user: args.user.and_then(|u| u.split_once(':').map(|(a, b)| (a.to_string(), b.to_string()))),
        json: args.json,
    };
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
        Command::Images(ImagesCommand::List) => cli::finish(cli::images_list(&conn)),
        Command::Images(ImagesCommand::Get { uuid }) => cli::finish(cli::images_get(&conn, &uuid)),
        Command::Images(ImagesCommand::Import { uuid, no_wait }) => {
            cli::finish(cli::images_import(&conn, &uuid, !no_wait))
        }
        Command::Images(ImagesCommand::Delete { uuid }) => cli::finish(cli::images_delete(&conn, &uuid)),
        Command::Sources(SourcesCommand::List) => cli::finish(cli::sources_list(&conn)),
        Command::Instances(command) => cli::finish(instances(&conn, *command)),
        Command::Isos(command) => cli::finish(match command {
            IsosCommand::List => cli::isos::list(&conn),
            IsosCommand::Fetch { from, name, sha256, no_wait } => {
                cli::isos::fetch(&conn, &from, name.as_deref(), sha256.as_deref(), !no_wait)
            }
            IsosCommand::Upload { file, name, sha256 } => {
                cli::isos::upload(&conn, &file, name.as_deref(), sha256.as_deref())
            }
            IsosCommand::Rename { from, to } => cli::isos::rename(&conn, &from, &to),
            IsosCommand::Delete { name } => cli::isos::delete(&conn, &name),
        }),
        Command::Switches(command) => cli::finish(match command {
            SwitchesCommand::List => cli::switches::list(&conn),
            SwitchesCommand::Create { name, bridge, uplink } => {
                cli::switches::create(&conn, &name, bridge.as_deref(), uplink.as_deref())
            }
            SwitchesCommand::Delete { name } => cli::switches::delete(&conn, &name),
        }),
        Command::Console { id, follow, attach } => {
            cli::finish(cli::instances::console(&conn, &id, follow, attach))
        }
    }
}

fn instances(conn: &Connection, command: InstancesCommand) -> Result<(), cli::Failure> {
    use cli::instances as i;
    match command {
        InstancesCommand::Create {
            image,
            alias,
            vcpus,
            memory,
            disk,
            nics,
            firmware,
            guest,
            cdrom,
            boot,
            no_start,
        } => i::create(
            conn,
            i::CreateArgs {
                image,
                alias,
                vcpus,
                memory_mib: memory,
                disk_mib: disk,
                nics,
                firmware,
                guest,
                cdrom,
                boot,
                start: !no_start,
            },
        ),
        InstancesCommand::Snapshot { id, name, delete } => {
            i::snapshots(conn, &id, Some((if delete { "delete" } else { "create" }, &name)))
        }
        InstancesCommand::Snapshots { id } => i::snapshots(conn, &id, None),
        InstancesCommand::Publish { id, name, version, os, description, to } => i::publish(
            conn,
            &id,
            serde_json::json!({"name": name, "version": version, "os": os, "description": description, "source": to}),
        ),
        InstancesCommand::Rollback { id, name } => i::snapshots(conn, &id, Some(("rollback", &name))),
        InstancesCommand::Cdrom { id, iso, eject, boot } => {
            if iso.is_none() && !eject {
                return Err(cli::Failure::usage("give --iso NAME or --eject"));
            }
            cli::isos::set_cdrom(conn, &id, iso.as_deref(), boot.as_deref())
        }
        InstancesCommand::Update { id, guest, unset, clear_user_data } => {
            i::update(conn, &id, &guest, &unset, clear_user_data)
        }
        InstancesCommand::List { destroyed } => i::list(conn, destroyed),
        InstancesCommand::Get { id } => i::get(conn, &id),
        InstancesCommand::Start { id } => i::action(conn, &id, "start", false),
        InstancesCommand::Stop { id, force } => i::action(conn, &id, "stop", force),
        InstancesCommand::Reboot { id, force } => i::action(conn, &id, "reboot", force),
        InstancesCommand::Delete { id } => i::delete(conn, &id),
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
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&config.log_level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
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
