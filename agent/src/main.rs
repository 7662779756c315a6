//! The hypervisor host agent. Image import and instances land in later issues (#3, #4).

fn main() {
    eprintln!("agent: not built yet; see issues 3 and 4");
    std::process::exit(2);
}
