//! What the CLI shows while the agent works: a progress bar for transfers, a line (or a
//! spinner) for waits, and what a Ctrl-C leaves running on the agent.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::exit;

/// A download or import: the phase until the size is known, then a bar with the bytes.
pub struct Transfer {
    bar: ProgressBar,
    sized: bool,
}

impl Transfer {
    /// A transfer called `label`, drawn on stderr when it is a terminal (hidden otherwise).
    pub fn new(label: &str) -> Transfer {
        Transfer::on(label, ProgressDrawTarget::stderr())
    }

    fn on(label: &str, target: ProgressDrawTarget) -> Transfer {
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(style("{prefix:>12} {spinner} {msg}"));
        bar.set_prefix(label.to_string());
        bar.set_message("starting");
        bar.enable_steady_tick(Duration::from_millis(120));
        Transfer { bar, sized: false }
    }

    /// Shows the phase the agent reports and the bytes `done`; the bar appears once `total`
    /// is known (before that, a 0-byte bar would look finished).
    pub fn update(&mut self, phase: &str, done: u64, total: Option<u64>) {
        match total {
            Some(total) => {
                if !self.sized {
                    self.bar.set_style(style(
                        "{prefix:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
                    ));
                    self.sized = true;
                }
                self.bar.set_length(total);
            }
            None if done > 0 => self.bar.set_style(style("{prefix:>12} {spinner} {msg} {bytes}")),
            None => {}
        }
        self.bar.set_position(done);
        self.bar.set_message(phase.to_string());
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> ")
}

/// A wait with nothing to count (a guest shutting down): a spinner with the time spent on a
/// terminal, the message on a line of its own otherwise (logs and scripts see it too).
pub struct Waiting(Option<ProgressBar>);

impl Waiting {
    pub fn start(message: String) -> Waiting {
        if !std::io::stderr().is_terminal() {
            eprintln!("{message}");
            return Waiting(None);
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(style("{spinner} {msg} ({elapsed})"));
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(120));
        Waiting(Some(bar))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

/// What a Ctrl-C now would leave running on the agent (set while a request is out).
static PENDING: Mutex<Option<String>> = Mutex::new(None);

/// While it lives, a Ctrl-C prints `note` (what goes on on the agent, and how to see it).
pub struct Pending(());

pub fn pending(note: String) -> Pending {
    *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = Some(note);
    Pending(())
}

impl Drop for Pending {
    fn drop(&mut self) {
        *PENDING.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Makes a Ctrl-C end the CLI with exit code 130, saying what the agent goes on doing: the
/// request was received, and stopping the CLI does not call it back.
pub fn exit_on_interrupt() {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT]) else {
        return;
    };
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let note = PENDING.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(note) = note {
                eprintln!("\nagent: interrupted; {note}");
            }
            std::process::exit(exit::INTERRUPTED.into());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::InMemoryTerm;

    #[test]
    fn a_transfer_shows_its_phase_until_the_size_is_known_then_a_bar() {
        let term = InMemoryTerm::new(2, 120);
        let mut transfer = Transfer::on("ubuntu", ProgressDrawTarget::term_like(Box::new(term.clone())));
        transfer.update("connecting", 0, None);
        transfer.bar.tick();
        let first = term.contents();
        assert!(first.contains("ubuntu") && first.contains("connecting"), "{first:?}");
        assert!(!first.contains("0 B/0 B") && !first.contains("[="), "looks finished: {first:?}");

        transfer.update("downloading", 1 << 20, Some(4 << 20));
        transfer.bar.tick();
        let later = term.contents();
        assert!(later.contains("1.00 MiB/4.00 MiB") && later.contains("downloading"), "{later:?}");
        assert!(later.contains("[=========="), "{later:?}");
    }
}
