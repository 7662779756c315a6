//! The `zfs` command: typed methods that build argv vectors for the runner, the parsers of
//! `zfs get -H` / `zfs list -H` output, and the known stderr messages turned into typed errors.
//!
//! Two dialects: OpenZFS (FreeBSD, illumos, Linux) and zfs-fuse 0.7.0 (the Linux test backend,
//! shared/docs/linux-test-backends.md section 3). Only the subset both understand is used:
//! no `zfs list -p` (sizes come from `zfs get -p`), no `zfs get -t`, one property per `zfs set`.
//! Where they differ the dialect switches: zfs-fuse has no volumes (nor `volmode`), and it
//! refuses to rename or destroy a mounted dataset ("dataset is busy"), so under zfs-fuse
//! `rename` and `destroy` unmount the tree first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::host::runner::{CommandRunner, ExecError, HostCommand, PipedChild};

/// Which `zfs` command line is on the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenZFS 2.x and illumos ZFS.
    OpenZfs,
    /// zfs-fuse 0.7.0 (pool version 23): the Linux test backend.
    ZfsFuse,
}

/// The type column of `zfs list` / the `type` property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetType {
    Filesystem,
    Volume,
    Snapshot,
    /// Anything newer (`bookmark`), kept so parsing never fails on it.
    Other(String),
}

impl DatasetType {
    fn parse(text: &str) -> Self {
        match text {
            "filesystem" => DatasetType::Filesystem,
            "volume" => DatasetType::Volume,
            "snapshot" => DatasetType::Snapshot,
            other => DatasetType::Other(other.to_string()),
        }
    }
}

/// How far below the named dataset `zfs get` / `zfs list` look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Only the dataset itself.
    Itself,
    /// The dataset and its direct children (`-d 1`), plus its own snapshots.
    Children,
    /// Everything below (`-r`).
    All,
}

impl Depth {
    fn args(self) -> &'static [&'static str] {
        match self {
            Depth::Itself => &[],
            Depth::Children => &["-d", "1"],
            Depth::All => &["-r"],
        }
    }
}

/// One line of `zfs get -H -o name,property,value[,source]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyRow {
    pub dataset: String,
    pub property: String,
    /// `None` when zfs printed `-` for an unset property.
    pub value: Option<String>,
    /// `local`, `default`, `inherited from ...`, `received`; `None` for `-`.
    pub source: Option<String>,
}

/// One line of `zfs list -H -o name,type,origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRow {
    pub name: String,
    pub kind: DatasetType,
    /// The snapshot a clone was made from.
    pub origin: Option<String>,
}

/// Output that does not have the shape the command promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// A failed `zfs` command; the stderr messages callers act on have their own variant.
#[derive(Debug, thiserror::Error)]
pub enum ZfsError {
    #[error("zfs dataset {name} does not exist")]
    NotFound {
        name: String,
        #[source]
        source: ExecError,
    },
    #[error("zfs dataset {name} already exists")]
    AlreadyExists {
        name: String,
        #[source]
        source: ExecError,
    },
    /// Mounted (zfs-fuse) or in use by a process.
    #[error("zfs dataset {name} is busy")]
    Busy {
        name: String,
        #[source]
        source: ExecError,
    },
    /// A snapshot of it has clones outside what is being destroyed (`destroy` needs `-R`).
    #[error("zfs dataset {name} has dependent clones: {}", clones.join(", "))]
    HasClones {
        name: String,
        clones: Vec<String>,
        #[source]
        source: ExecError,
    },
    /// It has snapshots or children (`destroy` needs `-r`).
    #[error("zfs dataset {name} has children: {}", children.join(", "))]
    HasChildren {
        name: String,
        children: Vec<String>,
        #[source]
        source: ExecError,
    },
    #[error("zfs dataset {name} is not mounted")]
    NotMounted {
        name: String,
        #[source]
        source: ExecError,
    },
    /// `zfs receive` rejected the bytes: truncated, corrupt or not a stream.
    #[error("zfs receive into {name} rejected the stream: {message}")]
    InvalidStream {
        name: String,
        message: String,
        #[source]
        source: ExecError,
    },
    #[error("the pool of {name} is out of space")]
    NoSpace {
        name: String,
        #[source]
        source: ExecError,
    },
    #[error("{what} is not supported by {dialect:?}")]
    Unsupported { what: &'static str, dialect: Dialect },
    #[error("cannot parse the output of `{command}`: {error}")]
    Parse { command: String, error: ParseError },
    #[error(transparent)]
    Command(ExecError),
}

/// Turns a failed command about `name` into the typed error its stderr names. Messages are
/// the same in both dialects (libzfs wording, `LC_ALL=C`).
pub fn classify(name: &str, error: ExecError) -> ZfsError {
    let name = name.to_string();
    let Some(stderr) = error.stderr() else { return ZfsError::Command(error) };
    let first = stderr.lines().next().unwrap_or_default();
    if stderr.contains("dataset does not exist") || stderr.contains("could not find any snapshots") {
        ZfsError::NotFound { name, source: error }
    } else if stderr.contains("has dependent clones") {
        ZfsError::HasClones { name, clones: parse_dependents(stderr), source: error }
    } else if first.contains("has children") {
        ZfsError::HasChildren { name, children: parse_dependents(stderr), source: error }
    } else if stderr.contains("dataset already exists") || stderr.contains("destination already exists") {
        ZfsError::AlreadyExists { name, source: error }
    } else if stderr.contains("not currently mounted") {
        ZfsError::NotMounted { name, source: error }
    } else if stderr.contains("is busy") || stderr.contains("resource busy") {
        ZfsError::Busy { name, source: error }
    } else if stderr.contains("out of space") || stderr.contains("No space left") {
        ZfsError::NoSpace { name, source: error }
    } else if stderr.contains("invalid backup stream")
        || stderr.contains("checksum mismatch")
        || stderr.contains("incomplete stream")
        || stderr.contains("stream is not a valid")
        || stderr.contains("Input/output error")
        || stderr.contains("I/O error")
    {
        // zfs-fuse reports a stream that ends early as "invalid backup stream"; OpenZFS as a
        // checksum mismatch or "incomplete stream".
        ZfsError::InvalidStream { name, message: stderr.trim().to_string(), source: error }
    } else {
        ZfsError::Command(error)
    }
}

/// The dataset names libzfs lists under "use '-r' (or '-R') to destroy the following datasets:".
pub fn parse_dependents(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .skip_while(|line| !line.contains("to destroy the following datasets"))
        .skip(1)
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses `zfs get -H [-p] -o name,property,value` (`with_source` false) or
/// `-o name,property,value,source` output. Tab separated; `-` is an unset value. A user
/// property's value may itself hold tabs: name and property are split off the left, the source
/// off the right, and the value is what remains.
pub fn parse_get(text: &str, with_source: bool) -> Result<Vec<PropertyRow>, ParseError> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |message: &str| ParseError { line: index + 1, message: format!("{message}: {line:?}") };
        let mut left = line.splitn(3, '\t');
        let (Some(dataset), Some(property), Some(rest)) = (left.next(), left.next(), left.next()) else {
            return Err(bad("expected tab-separated name, property and value"));
        };
        let (value, source) = if with_source {
            let Some((value, source)) = rest.rsplit_once('\t') else {
                return Err(bad("expected a source column"));
            };
            (value, (source != "-").then(|| source.to_string()))
        } else {
            (rest, None)
        };
        if dataset.is_empty() || property.is_empty() {
            return Err(bad("empty dataset or property name"));
        }
        // With a source column, `-` is a real value when the property is set (source given).
        let value = (value != "-" || source.is_some()).then(|| value.to_string());
        rows.push(PropertyRow {
            dataset: dataset.to_string(),
            property: property.to_string(),
            value,
            source,
        });
    }
    Ok(rows)
}

/// Parses `zfs list -H -o <columns>` output into one vector per line, `-` as `None`. The last
/// column takes the rest of the line, so only it may hold tabs (a user property).
pub fn parse_list(text: &str, columns: usize) -> Result<Vec<Vec<Option<String>>>, ParseError> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<Option<String>> =
            line.splitn(columns.max(1), '\t').map(|f| (f != "-").then(|| f.to_string())).collect();
        if fields.len() != columns {
            return Err(ParseError {
                line: index + 1,
                message: format!("expected {columns} tab-separated columns: {line:?}"),
            });
        }
        rows.push(fields);
    }
    Ok(rows)
}

/// Parses `zfs list -H -o name,type,origin` output.
pub fn parse_datasets(text: &str) -> Result<Vec<DatasetRow>, ParseError> {
    let rows = parse_list(text, 3)?;
    let mut out = Vec::with_capacity(rows.len());
    for (index, mut fields) in rows.into_iter().enumerate() {
        let origin = fields.pop().flatten();
        let kind = fields.pop().flatten();
        let name = fields.pop().flatten();
        let (Some(name), Some(kind)) = (name, kind) else {
            return Err(ParseError { line: index + 1, message: "missing name or type".into() });
        };
        out.push(DatasetRow { name, kind: DatasetType::parse(&kind), origin });
    }
    Ok(out)
}

/// The `zfs` command of one host.
#[derive(Clone)]
pub struct Zfs {
    runner: Arc<dyn CommandRunner>,
    program: PathBuf,
    dialect: Dialect,
}

impl std::fmt::Debug for Zfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zfs").field("program", &self.program).field("dialect", &self.dialect).finish()
    }
}

/// How often zfs-fuse gets to answer "dataset is busy" to one destroy.
const BUSY_ATTEMPTS: u64 = 3;

/// The columns `list` asks for (see [`parse_datasets`]).
const LIST_COLUMNS: &str = "name,type,origin";

impl Zfs {
    /// `program` is the absolute path of `zfs` (`/sbin/zfs` on FreeBSD, `/usr/sbin/zfs` on Linux).
    pub fn new(runner: Arc<dyn CommandRunner>, program: impl Into<PathBuf>, dialect: Dialect) -> Self {
        Zfs { runner, program: program.into(), dialect }
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    pub fn runner(&self) -> &Arc<dyn CommandRunner> {
        &self.runner
    }

    fn command(&self) -> HostCommand {
        HostCommand::new(&self.program)
    }

    fn run(&self, name: &str, command: HostCommand) -> Result<String, ZfsError> {
        self.runner.run(&command).map(|out| out.stdout).map_err(|e| classify(name, e))
    }

    /// `zfs create [-p] [-o k=v]... <name>`: a filesystem (mounted where it inherits).
    pub fn create_filesystem(
        &self,
        name: &str,
        parents: bool,
        properties: &[(&str, &str)],
    ) -> Result<(), ZfsError> {
        let mut cmd = self.command().arg("create");
        if parents {
            cmd = cmd.arg("-p");
        }
        for (key, value) in properties {
            cmd = cmd.arg("-o").arg(format!("{key}={value}"));
        }
        self.run(name, cmd.arg(name)).map(drop)
    }

    /// `zfs create -V <size_mib>M -o volmode=dev <name>`. `volmode=dev` keeps the host (GEOM on
    /// FreeBSD, partition scanning on Linux) away from the guest's partitions. zfs-fuse has no
    /// volumes at all.
    pub fn create_volume(&self, name: &str, size_mib: u64) -> Result<(), ZfsError> {
        if self.dialect == Dialect::ZfsFuse {
            return Err(ZfsError::Unsupported { what: "volumes (zvols)", dialect: self.dialect });
        }
        let cmd =
            self.command().arg("create").arg("-V").arg(format!("{size_mib}M")).args(["-o", "volmode=dev"]);
        self.run(name, cmd.arg(name)).map(drop)
    }

    /// `zfs snapshot <dataset>@<snap>`.
    pub fn snapshot(&self, snapshot: &str) -> Result<(), ZfsError> {
        self.run(snapshot, self.command().arg("snapshot").arg(snapshot)).map(drop)
    }

    /// `zfs rollback -r <dataset>@<snap>`: back to the snapshot, destroying any later ones
    /// (without `-r`, zfs refuses to roll back past them).
    pub fn rollback(&self, snapshot: &str) -> Result<(), ZfsError> {
        self.run(snapshot, self.command().args(["rollback", "-r"]).arg(snapshot)).map(drop)
    }

    /// `zfs rename <from> <to>`, datasets or snapshots (`a@x` to `a@y`). Under zfs-fuse a
    /// filesystem is unmounted first (a mounted one is "busy") and stays unmounted.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), ZfsError> {
        if self.dialect == Dialect::ZfsFuse && !from.contains('@') {
            self.unmount_tree(from);
        }
        self.run(from, self.command().arg("rename").arg(from).arg(to)).map(drop)
    }

    /// `zfs destroy [-r] <name>`. Under zfs-fuse the tree is unmounted first, and a "busy"
    /// answer is retried: there a dataset can report `mounted=no` and still be busy once, and
    /// the failed destroy finishes the unmount.
    pub fn destroy(&self, name: &str, recursive: bool) -> Result<(), ZfsError> {
        let build = || {
            let cmd = self.command().arg("destroy");
            if recursive { cmd.arg("-r") } else { cmd }.arg(name)
        };
        if self.dialect == Dialect::ZfsFuse && !name.contains('@') {
            self.unmount_tree(name);
        }
        let mut attempt = 1;
        loop {
            match self.run(name, build()) {
                Err(ZfsError::Busy { .. }) if self.dialect == Dialect::ZfsFuse && attempt < BUSY_ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(300 * attempt));
                    attempt += 1;
                    self.unmount_tree(name);
                }
                other => return other.map(drop),
            }
        }
    }

    /// `zfs clone <snapshot> <target>`.
    pub fn clone_snapshot(&self, snapshot: &str, target: &str) -> Result<(), ZfsError> {
        self.run(snapshot, self.command().arg("clone").arg(snapshot).arg(target)).map(drop)
    }

    /// `zfs set <property>=<value> <name>`: one property per call, because zfs-fuse takes only
    /// one. The value must not be empty (zfs-fuse: "missing value").
    pub fn set(&self, name: &str, property: &str, value: &str) -> Result<(), ZfsError> {
        self.run(name, self.command().arg("set").arg(format!("{property}={value}")).arg(name)).map(drop)
    }

    /// `zfs get -H -p -o name,property,value,source [-d 1|-r] [-s <sources>] <props> <name>`.
    /// `sources` filters on the zfs side, e.g. `local` or `local,none` (`none` keeps native
    /// read-only properties such as `type` and `origin`).
    pub fn get(
        &self,
        name: &str,
        properties: &[&str],
        depth: Depth,
        sources: Option<&str>,
    ) -> Result<Vec<PropertyRow>, ZfsError> {
        let mut cmd =
            self.command().args(["get", "-H", "-p", "-o", "name,property,value,source"]).args(depth.args());
        if let Some(sources) = sources {
            cmd = cmd.arg("-s").arg(sources);
        }
        let cmd = cmd.arg(properties.join(",")).arg(name);
        let line = cmd.display();
        let stdout = self.run(name, cmd)?;
        parse_get(&stdout, true).map_err(|error| ZfsError::Parse { command: line, error })
    }

    /// `zfs list -H -o name,type,origin -t <types> [-d 1|-r] <name>`, with `types` such as
    /// `filesystem,volume` or `all`.
    pub fn list(&self, name: &str, types: &str, depth: Depth) -> Result<Vec<DatasetRow>, ZfsError> {
        let cmd =
            self.command().args(["list", "-H", "-o", LIST_COLUMNS, "-t", types]).args(depth.args()).arg(name);
        let line = cmd.display();
        let stdout = self.run(name, cmd)?;
        parse_datasets(&stdout).map_err(|error| ZfsError::Parse { command: line, error })
    }

    /// The snapshots of `dataset` itself (not of its children), as full names.
    pub fn list_snapshots(&self, dataset: &str) -> Result<Vec<String>, ZfsError> {
        let prefix = format!("{dataset}@");
        Ok(self
            .list(dataset, "snapshot", Depth::Children)?
            .into_iter()
            .filter(|row| row.name.starts_with(&prefix))
            .map(|row| row.name)
            .collect())
    }

    /// Whether a dataset or snapshot of that name exists.
    pub fn exists(&self, name: &str) -> Result<bool, ZfsError> {
        match self.run(name, self.command().args(["list", "-H", "-o", "name", "-t", "all"]).arg(name)) {
            Ok(_) => Ok(true),
            Err(ZfsError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `zfs mount <name>`.
    pub fn mount(&self, name: &str) -> Result<(), ZfsError> {
        self.run(name, self.command().arg("mount").arg(name)).map(drop)
    }

    /// `zfs unmount <name>`.
    pub fn unmount(&self, name: &str) -> Result<(), ZfsError> {
        self.run(name, self.command().arg("unmount").arg(name)).map(drop)
    }

    /// Unmounts every filesystem at and below `name`, deepest first, ignoring failures (most
    /// are "not currently mounted"; a real one shows in the rename or destroy that follows).
    fn unmount_tree(&self, name: &str) {
        let Ok(rows) = self.list(name, "filesystem", Depth::All) else { return };
        let mut names: Vec<String> = rows.into_iter().map(|row| row.name).collect();
        names.sort_by(|a, b| b.cmp(a));
        for fs in names {
            let _ = self.unmount(&fs);
        }
    }

    /// Starts `zfs receive -u <target>`: the caller writes the stream, then `finish`es. `-u`
    /// leaves the new dataset unmounted (zfs-fuse could not rename it otherwise).
    pub fn receive(&self, target: &str) -> Result<Receive, ZfsError> {
        let cmd = self.command().args(["receive", "-u"]).arg(target);
        let child = self.runner.spawn_piped(&cmd).map_err(|e| classify(target, e))?;
        Ok(Receive { target: target.to_string(), child })
    }
}

/// A running `zfs receive`.
pub struct Receive {
    target: String,
    child: Box<dyn PipedChild>,
}

impl Receive {
    /// Where the stream goes: the process's standard input.
    pub fn stdin(&mut self) -> &mut dyn std::io::Write {
        self.child.stdin()
    }

    /// Closes the stream and waits; the error names what zfs disliked.
    pub fn finish(self) -> Result<(), ZfsError> {
        self.child.finish().map(drop).map_err(|e| classify(&self.target, e))
    }

    /// Kills the receive (the input is being thrown away).
    pub fn abort(self) {
        self.child.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::runner::{RecordingRunner, Reply};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/zfs");

    /// A fixture without its `# ` comment lines (hand-written OpenZFS fixtures say so there).
    fn fixture(name: &str) -> String {
        let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
        text.lines().filter(|l| !l.starts_with("# ")).map(|l| format!("{l}\n")).collect()
    }

    fn zfs(dialect: Dialect) -> (RecordingRunner, Zfs) {
        let runner = RecordingRunner::new();
        let zfs = Zfs::new(Arc::new(runner.clone()), "/sbin/zfs", dialect);
        (runner, zfs)
    }

    fn failed(stderr: &str) -> ExecError {
        ExecError::Failed { command: "zfs".into(), status: "exit status 1".into(), stderr: stderr.into() }
    }

    #[test]
    fn parses_get_with_sources_from_zfs_fuse() {
        let rows = parse_get(&fixture("get-sources-zfs-fuse.txt"), true).unwrap();
        let find = |d: &str, p: &str| rows.iter().find(|r| r.dataset == d && r.property == p).unwrap();
        // Unset: `-` with source `-`. Set to "-": `-` with source `local`.
        assert_eq!(find("agenttest/cap", "imgagent:name").value, None);
        assert_eq!(find("agenttest/cap/a", "imgagent:name").value.as_deref(), Some("foo"));
        assert_eq!(find("agenttest/cap/a", "imgagent:dash").value.as_deref(), Some("-"));
        assert_eq!(find("agenttest/cap/a", "imgagent:dash").source.as_deref(), Some("local"));
        assert_eq!(find("agenttest/cap/b", "origin").value.as_deref(), Some("agenttest/cap/a@final"));
        assert_eq!(find("agenttest/cap/a@final", "type").value.as_deref(), Some("snapshot"));
        // `-s local,none` dropped the snapshot's inherited user properties.
        assert!(!rows.iter().any(|r| r.dataset.contains('@') && r.property.starts_with("imgagent:")));

        let rows = parse_get(&fixture("get-images-zfs-fuse.txt"), true).unwrap();
        assert!(rows.len() > 20);
        assert!(rows.iter().all(|r| r.source.as_deref() == Some("local") && r.value.is_some()));
    }

    #[test]
    fn get_values_may_hold_tabs_and_dashes() {
        let text = "tank/a\tx:desc\twith space\tand tab\tlocal\n\
                    tank/a\tx:dash\t-\tlocal\n\
                    tank/a\tx:unset\t-\t-\n\
                    tank/a\torigin\ttank/b@final\t-\n";
        let rows = parse_get(text, true).unwrap();
        assert_eq!(rows[0].value.as_deref(), Some("with space\tand tab"));
        assert_eq!(rows[1].value.as_deref(), Some("-"));
        assert_eq!(rows[2].value, None);
        assert_eq!(rows[3].value.as_deref(), Some("tank/b@final"));
        assert_eq!(rows[3].source, None);

        let rows = parse_get("tank/a\tused\t1024\ntank/a\tx:y\t-\n", false).unwrap();
        assert_eq!(rows[0].value.as_deref(), Some("1024"));
        assert_eq!(rows[1].value, None);
        assert!(parse_get("tank/a used 1024\n", false).is_err());
        assert!(parse_get("tank/a\tused\n", true).is_err());
        assert!(parse_get("", true).unwrap().is_empty());
    }

    #[test]
    fn parses_all_properties_of_a_zfs_fuse_dataset() {
        let rows = parse_get(&fixture("get-all-zfs-fuse.txt"), true).unwrap();
        let get = |p: &str| rows.iter().find(|r| r.property == p).unwrap();
        assert_eq!(get("type").value.as_deref(), Some("filesystem"));
        // `-p`: bytes and epoch seconds, not "2.1M".
        assert!(get("used").value.as_deref().unwrap().parse::<u64>().is_ok());
        assert!(get("creation").value.as_deref().unwrap().parse::<u64>().is_ok());
        assert_eq!(get("mountpoint").source.as_deref(), Some("inherited from agenttest"));
    }

    #[test]
    fn parses_openzfs_volume_properties() {
        let rows = parse_get(&fixture("get-volume-openzfs.txt"), true).unwrap();
        let get = |p: &str| rows.iter().find(|r| r.property == p).unwrap();
        assert_eq!(get("type").value.as_deref(), Some("volume"));
        assert_eq!(get("volsize").value.as_deref(), Some("10737418240"));
        assert_eq!(get("volmode").value.as_deref(), Some("dev"));
        assert_eq!(get("volmode").source.as_deref(), Some("local"));
    }

    #[test]
    fn parses_list_output_of_both_dialects() {
        let rows = parse_datasets(&fixture("list-tree-zfs-fuse.txt")).unwrap();
        assert!(rows.iter().any(|r| r.kind == DatasetType::Snapshot && r.name.ends_with("@final")));
        let clone = rows.iter().find(|r| r.origin.is_some()).unwrap();
        assert!(clone.origin.as_deref().unwrap().ends_with("@final"));
        assert!(rows.iter().filter(|r| r.origin.is_none()).count() >= 2);

        let rows = parse_datasets(&fixture("list-tree-openzfs.txt")).unwrap();
        assert!(rows.iter().any(|r| r.kind == DatasetType::Volume));
        assert!(rows.iter().any(|r| r.kind == DatasetType::Other("bookmark".into())));

        assert!(parse_datasets("tank\tfilesystem\n").is_err());
        assert_eq!(parse_list("a\tb\tc\td\n", 3).unwrap()[0][2].as_deref(), Some("c\td"));
    }

    #[test]
    fn known_stderr_becomes_typed_errors() {
        let clones = classify("tank/a", failed(&fixture("stderr-destroy-clones-zfs-fuse.txt")));
        match clones {
            ZfsError::HasClones { clones, .. } => assert_eq!(clones, ["agenttest/exp/b"]),
            other => panic!("{other:?}"),
        }
        let children = classify("tank/a", failed(&fixture("stderr-destroy-children-zfs-fuse.txt")));
        match children {
            ZfsError::HasChildren { children, .. } => assert_eq!(children, ["agenttest/exp/a@snap1"]),
            other => panic!("{other:?}"),
        }
        let snap = classify("tank/a@s", failed(&fixture("stderr-destroy-snapshot-clones-zfs-fuse.txt")));
        assert!(matches!(snap, ZfsError::HasClones { .. }), "{snap:?}");
        type Check = fn(&ZfsError) -> bool;
        let cases: [(&str, Check); 7] = [
            ("stderr-not-found-zfs-fuse.txt", |e| matches!(e, ZfsError::NotFound { .. })),
            ("stderr-busy-zfs-fuse.txt", |e| matches!(e, ZfsError::Busy { .. })),
            ("stderr-unmount-busy-zfs-fuse.txt", |e| matches!(e, ZfsError::Busy { .. })),
            ("stderr-exists-zfs-fuse.txt", |e| matches!(e, ZfsError::AlreadyExists { .. })),
            ("stderr-not-mounted-zfs-fuse.txt", |e| matches!(e, ZfsError::NotMounted { .. })),
            ("stderr-receive-truncated-zfs-fuse.txt", |e| matches!(e, ZfsError::InvalidStream { .. })),
            ("stderr-receive-truncated-openzfs.txt", |e| matches!(e, ZfsError::InvalidStream { .. })),
        ];
        for (file, check) in cases {
            let error = classify("tank/a", failed(&fixture(file)));
            assert!(check(&error), "{file}: {error:?}");
        }
        assert!(matches!(classify("tank/a", failed("something else")), ZfsError::Command(_)));
    }

    #[test]
    fn builds_argv_for_openzfs() {
        let (runner, zfs) = zfs(Dialect::OpenZfs);
        zfs.create_filesystem("tank/images", true, &[("canmount", "noauto")]).unwrap();
        zfs.create_volume("tank/images/u-partial", 10240).unwrap();
        zfs.snapshot("tank/images/u-partial@final").unwrap();
        zfs.rename("tank/images/u-partial@x", "tank/images/u-partial@final").unwrap();
        zfs.rename("tank/images/u-partial", "tank/images/u").unwrap();
        zfs.destroy("tank/images/u", true).unwrap();
        zfs.destroy("tank/images/u@final", false).unwrap();
        zfs.clone_snapshot("tank/images/u@final", "tank/vm/disk0").unwrap();
        zfs.set("tank/images/u", "imgagent:name", "a b").unwrap();
        zfs.get("tank/images", &["imgagent:uuid", "origin"], Depth::Children, Some("local,none")).unwrap();
        zfs.list("tank/images/u", "all", Depth::All).unwrap();
        zfs.mount("tank/images/u").unwrap();
        zfs.unmount("tank/images/u").unwrap();
        let mut recv = zfs.receive("tank/images/u-partial").unwrap();
        recv.stdin().write_all(b"stream").unwrap();
        recv.finish().unwrap();
        assert_eq!(
            runner.commands(),
            [
                "/sbin/zfs create -p -o canmount=noauto tank/images",
                "/sbin/zfs create -V 10240M -o volmode=dev tank/images/u-partial",
                "/sbin/zfs snapshot tank/images/u-partial@final",
                "/sbin/zfs rename tank/images/u-partial@x tank/images/u-partial@final",
                "/sbin/zfs rename tank/images/u-partial tank/images/u",
                "/sbin/zfs destroy -r tank/images/u",
                "/sbin/zfs destroy tank/images/u@final",
                "/sbin/zfs clone tank/images/u@final tank/vm/disk0",
                "/sbin/zfs set imgagent:name=a b tank/images/u",
                "/sbin/zfs get -H -p -o name,property,value,source -d 1 -s local,none imgagent:uuid,origin \
                 tank/images",
                "/sbin/zfs list -H -o name,type,origin -t all -r tank/images/u",
                "/sbin/zfs mount tank/images/u",
                "/sbin/zfs unmount tank/images/u",
                "/sbin/zfs receive -u tank/images/u-partial",
            ]
        );
        assert_eq!(runner.stdin_of(13), b"stream");
    }

    #[test]
    fn zfs_fuse_has_no_volumes_and_unmounts_before_rename_and_destroy() {
        let (runner, zfs) = zfs(Dialect::ZfsFuse);
        let err = zfs.create_volume("p/v", 16).unwrap_err();
        assert!(matches!(err, ZfsError::Unsupported { dialect: Dialect::ZfsFuse, .. }));
        runner
            .expect("/sbin/zfs list", Reply::Ok("p/a\tfilesystem\t-\np/a/b\tfilesystem\tp/x@final\n".into()));
        runner.expect("/sbin/zfs destroy", Reply::Fail("cannot destroy 'p/a': dataset is busy\n".into()));
        zfs.destroy("p/a", true).unwrap();
        zfs.rename("p/c@x", "p/c@final").unwrap();
        let commands = runner.commands();
        assert_eq!(
            commands,
            [
                "/sbin/zfs list -H -o name,type,origin -t filesystem -r p/a",
                "/sbin/zfs unmount p/a/b",
                "/sbin/zfs unmount p/a",
                "/sbin/zfs destroy -r p/a",
                // The retry after "busy" unmounts again (the list is unscripted now: empty).
                "/sbin/zfs list -H -o name,type,origin -t filesystem -r p/a",
                "/sbin/zfs destroy -r p/a",
                // Snapshots are never mounted: renamed directly.
                "/sbin/zfs rename p/c@x p/c@final",
            ]
        );
    }

    #[test]
    fn exists_and_typed_failures_through_the_runner() {
        let (runner, zfs) = zfs(Dialect::OpenZfs);
        runner.expect("/sbin/zfs list", Reply::Fail("cannot open 'tank/x': dataset does not exist\n".into()));
        assert!(!zfs.exists("tank/x").unwrap());
        assert!(zfs.exists("tank/y").unwrap());
        runner.expect("/sbin/zfs get", Reply::Ok("garbage line\n".into()));
        assert!(matches!(zfs.get("tank", &["type"], Depth::Itself, None), Err(ZfsError::Parse { .. })));
        runner.expect("/sbin/zfs receive", Reply::Fail("cannot receive: invalid backup stream\n".into()));
        let err = zfs.receive("tank/r").unwrap().finish().unwrap_err();
        assert!(matches!(err, ZfsError::InvalidStream { .. }), "{err:?}");
        runner.expect(
            "/sbin/zfs list",
            Reply::Ok("tank/i\tfilesystem\t-\ntank/i@final\tsnapshot\t-\ntank/i/c@x\tsnapshot\t-\n".into()),
        );
        assert_eq!(zfs.list_snapshots("tank/i").unwrap(), ["tank/i@final"]);
    }
}
