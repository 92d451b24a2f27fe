//! The `translate` command's progress bar: drawn on stderr only when stderr is a terminal,
//! so logs and pipes never get carriage-return noise.

use std::io::IsTerminal;

/// A one-line bar on stderr, drawn only when stderr is a terminal.
pub(super) struct Progress {
    total: usize,
    done: usize,
    draw: bool,
}

impl Progress {
    pub(super) fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            draw: std::io::stderr().is_terminal(),
        }
    }

    pub(super) fn advance(&mut self, n: usize) {
        self.done = self.done.saturating_add(n).min(self.total);
        if self.draw {
            eprint!("\r{}", bar(self.done, self.total));
        }
    }

    pub(super) fn finish(&mut self) {
        if self.draw {
            eprintln!();
        }
    }
}

fn bar(done: usize, total: usize) -> String {
    const WIDTH: usize = 30;
    let filled = (done * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    format!(
        "[{}{}] {done}/{total} IDs",
        "#".repeat(filled),
        " ".repeat(WIDTH - filled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_progress() {
        assert_eq!(bar(0, 10), format!("[{}] 0/10 IDs", " ".repeat(30)));
        assert_eq!(
            bar(5, 10),
            format!("[{}{}] 5/10 IDs", "#".repeat(15), " ".repeat(15))
        );
        assert_eq!(bar(0, 0), format!("[{}] 0/0 IDs", "#".repeat(30)));
    }
}
