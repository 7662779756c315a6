//! The command line of `agent`: every subcommand, flag and argument (with its one-line help),
//! and `run`, which sends each client subcommand to its function.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use uuid::Uuid;

use super::{finish, hosts, images, instances, isos, jobs, switches, CliResult, Connection, Failure};

/// Where global flags go in every `--help`: after the subcommand's own options.
const GLOBAL: &str = "Global options";

#[derive(Parser)]
#[command(
    name = "agent",
    version,
    about = "Hypervisor host agent: images from IMGAPI sources, and instances cloned from them",
    after_help = "Exit codes: 0 done, 1 other error, 2 usage, 3 not found, 4 conflict, \
                  5 verification failed, 6 source error, 7 unauthorized, 8 agent unreachable, \
                  130 interrupted (the agent goes on with the request)."
)]
pub struct Args {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the agent. The environment variables are read here rather than by clap: clap
/// would print a flag set from the environment in every usage line, as if it were required.
#[derive(clap::Args)]
pub struct ConnectionArgs {
    /// The agent's API, or cloudapi's for the fleet (env AGENT_URL; default http://127.0.0.1:9090).
    #[arg(long, global = true, value_name = "URL", help_heading = GLOBAL)]
    url: Option<String>,
    /// Bearer token for changes (env AGENT_TOKEN).
    #[arg(long, global = true, value_name = "TOKEN", help_heading = GLOBAL)]
    token: Option<String>,
    /// Basic credentials for changes (env AGENT_USER).
    #[arg(long, global = true, value_name = "USER:PASSWORD", help_heading = GLOBAL)]
    user: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true, help_heading = GLOBAL)]
    json: bool,
}

pub const DEFAULT_URL: &str = "http://127.0.0.1:9090";

impl ConnectionArgs {
    /// The connection these flags describe, with `env` (the process environment, in `main`)
    /// filling in what was not given. An empty variable counts as unset.
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Result<Connection, Failure> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let url = self.url.or_else(|| env("AGENT_URL")).unwrap_or_else(|| DEFAULT_URL.into());
        let user = match self.user.or_else(|| env("AGENT_USER")) {
            None => None,
            Some(text) => match text.split_once(':') {
                Some((user, password)) => Some((user.to_string(), password.to_string())),
                None => {
                    return Err(Failure::usage(
                        "--user (or AGENT_USER) must be USER:PASSWORD; the password is missing",
                    ))
                }
            },
        };
        Ok(Connection {
            url: url.trim_end_matches('/').to_string(),
            token: self.token.or_else(|| env("AGENT_TOKEN")),
            user,
            json: self.json,
        })
    }
}

/// A uuid argument: a bad one is a usage error that names the argument (clap adds the name).
fn uuid_arg(text: &str) -> Result<Uuid, String> {
    Uuid::parse_str(text).map_err(|_| "not a uuid (like 2b8f6e7a-0c1d-4e5f-8a9b-0c1d2e3f4a5b)".into())
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the agent daemon.
    Serve {
        /// The config file (env AGENT_CONFIG).
        #[arg(short = 'c', long = "config", env = "AGENT_CONFIG", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Internal: what QEMU runs for each guest connection to the metadata service.
    #[command(hide = true)]
    MetadataProxy {
        /// The agent's metadata socket.
        socket: PathBuf,
    },
    /// Images on this host.
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Import jobs: follow one started with `images import --no-wait`.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Installer ISOs on this host.
    #[command(subcommand)]
    Isos(IsosCommand),
    /// Named switches: the host bridges NICs join.
    #[command(subcommand)]
    Switches(SwitchesCommand),
    /// The IMGAPI sources images are imported from.
    #[command(subcommand)]
    Sources(SourcesCommand),
    /// Instances (VMs) on this host, or in the fleet with cloudapi's URL.
    #[command(subcommand)]
    Instances(Box<InstancesCommand>),
    /// The hosts of a fleet: `--url` must be cloudapi's.
    #[command(subcommand)]
    Hosts(HostsCommand),
    /// Show an instance's serial console.
    Console {
        /// The instance: its uuid or alias.
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
pub enum InstancesCommand {
    /// Create an instance from an imported image (or with a blank disk), and start it.
    Create {
        /// The image's uuid; without one, the disk is blank (`--disk` MiB), for an ISO install.
        #[arg(long, value_parser = uuid_arg)]
        image: Option<Uuid>,
        /// A name to use instead of the uuid (unique on the host).
        #[arg(long)]
        alias: Option<String>,
        /// Virtual CPUs (default 1).
        #[arg(long)]
        vcpus: Option<u32>,
        /// Memory in MiB (default 512).
        #[arg(long, value_name = "MIB")]
        memory: Option<u64>,
        /// Boot disk size in MiB (default: the image's).
        #[arg(long, value_name = "MIB")]
        disk: Option<u64>,
        /// A NIC: `user`, `switch:<name>` or `bridge:<host bridge>`, then optionally
        /// `,vlan=<id>` and `,mac=<mac>`; repeat for more (default: one `user` NIC on QEMU).
        #[arg(long = "nic")]
        nics: Vec<String>,
        /// bios, uefi or bhyveload.
        #[arg(long)]
        firmware: Option<String>,
        #[command(flatten)]
        guest: instances::GuestArgs,
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
        /// The instance: its uuid or alias.
        id: String,
        /// The snapshot's name.
        name: String,
        /// Remove the snapshot instead.
        #[arg(long)]
        delete: bool,
    },
    /// Publish a stopped instance's disk as a new image on an IMGAPI source (a golden image).
    Publish {
        /// The instance: its uuid or alias.
        id: String,
        /// The image's name.
        #[arg(long)]
        name: String,
        /// The image's version.
        #[arg(long)]
        version: String,
        /// linux (default), bsd, windows, illumos, other.
        #[arg(long)]
        os: Option<String>,
        /// A description for the manifest.
        #[arg(long)]
        description: Option<String>,
        /// The URL of a configured source (default: the first one with credentials).
        #[arg(long = "to", value_name = "SOURCE_URL")]
        to: Option<String>,
    },
    /// List an instance's disk snapshots, oldest first.
    Snapshots {
        /// The instance: its uuid or alias.
        id: String,
    },
    /// Put a stopped instance's disk back as it was at a snapshot (ZFS: later snapshots go).
    Rollback {
        /// The instance: its uuid or alias.
        id: String,
        /// The snapshot's name.
        name: String,
    },
    /// Attach an installer ISO as the instance's CD, or eject it (from its next start).
    Cdrom {
        /// The instance: its uuid or alias.
        id: String,
        /// The ISO's name.
        #[arg(long, conflicts_with = "eject")]
        iso: Option<String>,
        /// Take the CD out.
        #[arg(long)]
        eject: bool,
        /// Boot from `cd` or `disk` (default).
        #[arg(long)]
        boot: Option<String>,
    },
    /// Change what the guest is told about itself (seen from its next start).
    Update {
        /// The instance: its uuid or alias.
        id: String,
        #[command(flatten)]
        guest: instances::GuestArgs,
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
    Get {
        /// The instance: its uuid or alias.
        id: String,
    },
    /// Start a stopped or failed instance.
    Start {
        /// The instance: its uuid or alias.
        id: String,
    },
    /// Stop: the ACPI power button, and power off after the agent's stop timeout.
    Stop {
        /// The instance: its uuid or alias.
        id: String,
        /// Cut the power at once.
        #[arg(long)]
        force: bool,
        /// Ask for the stop and return without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Reboot: ACPI power off, then start again; waits until the new run is up.
    Reboot {
        /// The instance: its uuid or alias.
        id: String,
        /// Hard reset instead.
        #[arg(long)]
        force: bool,
        /// Ask for the reboot and return without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Destroy an instance and its disk (a running one is powered off first).
    Delete {
        /// The instance: its uuid or alias.
        id: String,
        /// Let a running guest shut down first (up to the stop timeout) instead of cutting its power.
        #[arg(long)]
        graceful: bool,
    },
}

#[derive(Subcommand)]
pub enum IsosCommand {
    /// List the ISOs, with the instances that have each attached.
    List,
    /// Download an ISO onto the agent's host (progress shown; checksum checked when given).
    Fetch {
        /// Where to download it from (http or https).
        #[arg(value_name = "URL")]
        from: String,
        /// The ISO's name on the host (default: the URL's file name).
        #[arg(long)]
        name: Option<String>,
        /// The expected SHA-256, in hex: a download that differs is refused.
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// Start the fetch and return.
        #[arg(long)]
        no_wait: bool,
    },
    /// Upload a local ISO file.
    Upload {
        /// The ISO file to send.
        file: PathBuf,
        /// The ISO's name on the host (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// The expected SHA-256, in hex: an upload that differs is refused.
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
    },
    /// Rename an ISO (refused while attached).
    Rename {
        /// The ISO's name now.
        from: String,
        /// Its new name.
        to: String,
    },
    /// Delete an ISO (refused while attached).
    Delete {
        /// The ISO's name.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum SwitchesCommand {
    /// List the switches, whether their bridge exists, and the NICs on each.
    List,
    /// Add a switch (its bridge is created now if it does not exist).
    Create {
        /// The switch's name (what `--nic switch:<name>` names).
        name: String,
        /// The host bridge (default: the switch's name).
        #[arg(long)]
        bridge: Option<String>,
        /// A host interface that links the switch to the outside network.
        #[arg(long)]
        uplink: Option<String>,
    },
    /// Delete a switch made through the API (refused while NICs are on it).
    Delete {
        /// The switch's name.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum ImagesCommand {
    /// List the images on this host.
    List,
    /// Show one image.
    Get {
        /// The image's uuid.
        #[arg(value_parser = uuid_arg)]
        uuid: Uuid,
    },
    /// Import an image (and its origins) from the sources.
    Import {
        /// The image's uuid.
        #[arg(value_parser = uuid_arg)]
        uuid: Uuid,
        /// Start the import and print the job instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete an image (refused while something depends on it).
    Delete {
        /// The image's uuid.
        #[arg(value_parser = uuid_arg)]
        uuid: Uuid,
    },
}

#[derive(Subcommand)]
pub enum JobsCommand {
    /// List the import jobs, running and recent.
    List,
    /// Show one job.
    Get {
        /// The job's id (what `images import --no-wait` printed).
        #[arg(value_parser = uuid_arg)]
        id: Uuid,
    },
    /// Follow a job to its end, with a progress bar; fails as the job does.
    Wait {
        /// The job's id (what `images import --no-wait` printed).
        #[arg(value_parser = uuid_arg)]
        id: Uuid,
    },
}

#[derive(Subcommand)]
pub enum HostsCommand {
    /// List the fleet's hosts: state, capacity and allocations, instances, last heartbeat.
    List,
    /// Show one host, with the images and instances it reported.
    Get {
        /// The host: its id or name.
        id: String,
    },
    /// Drain a host: no new instances are placed there (those it has stay).
    Drain {
        /// The host: its id or name.
        id: String,
    },
    /// Take a drained host back: new instances may be placed there again.
    Undrain {
        /// The host: its id or name.
        id: String,
    },
    /// Remove a host from the fleet and revoke its credential (refused while it has instances).
    Remove {
        /// The host: its id or name.
        id: String,
        /// Remove an `unknown` host even with instances (cloudapi forgets them).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum SourcesCommand {
    /// List the sources in lookup order.
    List,
}

/// Runs a client subcommand (`serve` and `metadata-proxy` are `main`'s).
pub fn run(conn: &Connection, command: Command) -> ExitCode {
    super::progress::exit_on_interrupt();
    finish(dispatch(conn, command))
}

fn dispatch(conn: &Connection, command: Command) -> CliResult {
    match command {
        Command::Serve { .. } | Command::MetadataProxy { .. } => {
            Err(Failure::usage("serve and metadata-proxy are not client commands"))
        }
        Command::Images(command) => match command {
            ImagesCommand::List => images::list(conn),
            ImagesCommand::Get { uuid } => images::get(conn, &uuid),
            ImagesCommand::Import { uuid, no_wait } => images::import(conn, &uuid, !no_wait),
            ImagesCommand::Delete { uuid } => images::delete(conn, &uuid),
        },
        Command::Jobs(command) => match command {
            JobsCommand::List => jobs::list(conn),
            JobsCommand::Get { id } => jobs::get(conn, &id),
            JobsCommand::Wait { id } => jobs::wait(conn, &id),
        },
        Command::Sources(SourcesCommand::List) => images::sources(conn),
        Command::Instances(command) => instances_command(conn, *command),
        Command::Hosts(command) => match command {
            HostsCommand::List => hosts::list(conn),
            HostsCommand::Get { id } => hosts::get(conn, &id),
            HostsCommand::Drain { id } => hosts::drain(conn, &id, true),
            HostsCommand::Undrain { id } => hosts::drain(conn, &id, false),
            HostsCommand::Remove { id, force } => hosts::remove(conn, &id, force),
        },
        Command::Isos(command) => match command {
            IsosCommand::List => isos::list(conn),
            IsosCommand::Fetch { from, name, sha256, no_wait } => {
                isos::fetch(conn, &from, name.as_deref(), sha256.as_deref(), !no_wait)
            }
            IsosCommand::Upload { file, name, sha256 } => {
                isos::upload(conn, &file, name.as_deref(), sha256.as_deref())
            }
            IsosCommand::Rename { from, to } => isos::rename(conn, &from, &to),
            IsosCommand::Delete { name } => isos::delete(conn, &name),
        },
        Command::Switches(command) => match command {
            SwitchesCommand::List => switches::list(conn),
            SwitchesCommand::Create { name, bridge, uplink } => {
                switches::create(conn, &name, bridge.as_deref(), uplink.as_deref())
            }
            SwitchesCommand::Delete { name } => switches::delete(conn, &name),
        },
        Command::Console { id, follow, attach } => instances::console(conn, &id, follow, attach),
    }
}

fn instances_command(conn: &Connection, command: InstancesCommand) -> CliResult {
    use instances::Action;
    use InstancesCommand as C;
    match command {
        C::Create { image, alias, vcpus, memory, disk, nics, firmware, guest, cdrom, boot, no_start } => {
            instances::create(
                conn,
                instances::CreateArgs {
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
            )
        }
        C::Snapshot { id, name, delete } => {
            instances::snapshots(conn, &id, Some((if delete { "delete" } else { "create" }, &name)))
        }
        C::Snapshots { id } => instances::snapshots(conn, &id, None),
        C::Publish { id, name, version, os, description, to } => instances::publish(
            conn,
            &id,
            serde_json::json!({"name": name, "version": version, "os": os, "description": description, "source": to}),
        ),
        C::Rollback { id, name } => instances::snapshots(conn, &id, Some(("rollback", &name))),
        C::Cdrom { id, iso, eject, boot } => {
            if iso.is_none() && !eject {
                return Err(Failure::usage("give --iso NAME or --eject"));
            }
            isos::set_cdrom(conn, &id, iso.as_deref(), boot.as_deref())
        }
        C::Update { id, guest, unset, clear_user_data } => {
            instances::update(conn, &id, &guest, &unset, clear_user_data)
        }
        C::List { destroyed } => instances::list(conn, destroyed),
        C::Get { id } => instances::get(conn, &id),
        C::Start { id } => instances::action(conn, &id, Action::Start, false, true),
        C::Stop { id, force, no_wait } => instances::action(conn, &id, Action::Stop, force, !no_wait),
        C::Reboot { id, force, no_wait } => instances::action(conn, &id, Action::Reboot, force, !no_wait),
        C::Delete { id, graceful } => instances::delete(conn, &id, graceful),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every subcommand, with its path (`agent instances stop`).
    fn leaves(command: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        let path = format!("{path} {}", command.get_name()).trim().to_string();
        if command.get_subcommands().next().is_none() {
            out.push((path.clone(), command.clone()));
        }
        // clap's own `help` subcommands are not ours to describe.
        for sub in command.get_subcommands().filter(|sub| sub.get_name() != "help") {
            leaves(sub, path.clone(), out);
        }
    }

    #[test]
    fn every_flag_and_argument_says_what_it_is() {
        let mut all = Vec::new();
        leaves(&Args::command(), String::new(), &mut all);
        assert!(all.len() > 30, "{} subcommands", all.len());
        for (path, command) in &all {
            for arg in command.get_arguments() {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(!help.trim().is_empty(), "`{path}`: {} has no description", arg.get_id());
            }
        }
    }

    #[test]
    fn each_help_lists_its_own_options_before_the_global_ones() {
        let mut top = Args::command();
        top.build();
        let mut all = Vec::new();
        leaves(&top, String::new(), &mut all);
        for (path, mut command) in all {
            let help = command.render_help().to_string();
            let path = path.as_str();
            let own = help.find("Options:").unwrap_or_else(|| panic!("`{path}`: {help}"));
            let global = help.find("Global options:").unwrap_or_else(|| panic!("`{path}`: {help}"));
            assert!(own < global, "`{path}`:\n{help}");
            assert!(help[global..].contains("--token <TOKEN>"), "`{path}`:\n{help}");
        }
    }

    #[test]
    fn the_environment_fills_in_connection_flags_but_never_the_usage_line() {
        let env = |name: &str| match name {
            "AGENT_TOKEN" => Some("secret-token".to_string()),
            "AGENT_URL" => Some("http://127.0.0.1:1/".to_string()),
            _ => None,
        };
        let args = Args::try_parse_from(["agent", "instances", "list"]).unwrap();
        let conn = args.connection.resolve(env).unwrap();
        assert_eq!((conn.url.as_str(), conn.token.as_deref()), ("http://127.0.0.1:1", Some("secret-token")));

        // A usage error renders without the environment: clap never sees it.
        let error = Args::try_parse_from(["agent", "instances", "stop"]).err().unwrap().to_string();
        assert!(error.contains("<ID>") && !error.contains("--token"), "{error}");

        // A flag wins over the environment; an empty variable is unset.
        let args = Args::try_parse_from(["agent", "--token", "flag", "instances", "list"]).unwrap();
        assert_eq!(args.connection.resolve(env).unwrap().token.as_deref(), Some("flag"));
        let args = Args::try_parse_from(["agent", "instances", "list"]).unwrap();
        let conn = args.connection.resolve(|_| Some(String::new())).unwrap();
        assert_eq!((conn.url.as_str(), conn.token), (DEFAULT_URL, None));
    }

    #[test]
    fn a_user_without_a_password_is_a_usage_error() {
        let args = Args::try_parse_from(["agent", "--user", "admin", "instances", "list"]).unwrap();
        let failure = args.connection.resolve(|_| None).err().unwrap();
        assert_eq!(failure.code, super::super::exit::USAGE);
        assert!(failure.message.contains("USER:PASSWORD"), "{}", failure.message);
        let args = Args::try_parse_from(["agent", "--user", "admin:pw:x", "instances", "list"]).unwrap();
        let user = args.connection.resolve(|_| None).unwrap().user;
        assert_eq!(user, Some(("admin".into(), "pw:x".into())));
    }

    #[test]
    fn a_bad_uuid_is_a_usage_error_naming_its_argument() {
        for (argv, name) in [
            (vec!["agent", "images", "get", "nope"], "<UUID>"),
            (vec!["agent", "instances", "create", "--image", "nope"], "--image"),
            (vec!["agent", "jobs", "wait", "nope"], "<ID>"),
        ] {
            let error = Args::try_parse_from(&argv).err().unwrap();
            assert_eq!(error.exit_code(), 2, "{argv:?}");
            let text = error.to_string();
            assert!(text.contains(name) && text.contains("not a uuid"), "{argv:?}: {text}");
        }
    }
}
