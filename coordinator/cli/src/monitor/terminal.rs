//! Standard error as the live view draws on it.

use std::{
    io::Write,
    sync::{Mutex, MutexGuard},
};

use indicatif::TermLike;

/// Standard error as the live view draws on it. `indicatif` ends each line by padding it
/// with spaces to the terminal's width, so that the terminal wraps to the next one: the
/// cursor then rests in the last column, where the `^C` that the terminal echoes for a
/// Ctrl-C wraps onto a line of its own, and the view, cleared from there, would leave its
/// top line behind. Here the padding becomes an erase to the end of the line and a line
/// break before the next line, so that the cursor rests after the last line's text. A
/// frame goes out in one write, when `indicatif` flushes it.
#[derive(Debug, Default)]
pub(super) struct LineBreakingStderr {
    frame: Mutex<Frame>,
}

/// The frame being drawn.
#[derive(Debug, Default)]
struct Frame {
    text: String,
    /// The next text written is a line's padding (they alternate: text, padding).
    padding_next: bool,
    /// A line ended: the next line's text starts on a new line.
    break_pending: bool,
}

impl LineBreakingStderr {
    fn frame(&self) -> MutexGuard<'_, Frame> {
        self.frame.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A cursor move, or the end of a frame: what follows is not the next line.
    fn out_of_line(&self, text: &str) -> std::io::Result<()> {
        let mut frame = self.frame();
        frame.padding_next = false;
        frame.break_pending = false;
        frame.text.push_str(text);
        Ok(())
    }

    fn cursor(&self, n: usize, direction: char) -> std::io::Result<()> {
        if n == 0 { Ok(()) } else { self.out_of_line(&format!("\x1b[{n}{direction}")) }
    }
}

impl TermLike for LineBreakingStderr {
    fn width(&self) -> u16 {
        terminal_size(2).map_or(80, |(cols, _)| cols)
    }

    fn height(&self) -> u16 {
        terminal_size(2).map_or(24, |(_, rows)| rows)
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'D')
    }

    fn write_line(&self, line: &str) -> std::io::Result<()> {
        self.out_of_line(&format!("{line}\n"))
    }

    fn write_str(&self, text: &str) -> std::io::Result<()> {
        let mut frame = self.frame();
        frame.padding_next = !frame.padding_next;
        if !frame.padding_next {
            frame.break_pending = true;
            // No padding: the line filled the terminal, and an erase would take its last character.
            if !text.is_empty() {
                frame.text.push_str("\x1b[K");
            }
            return Ok(());
        }
        if std::mem::take(&mut frame.break_pending) {
            frame.text.push_str("\r\n");
        }
        frame.text.push_str(text);
        Ok(())
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.out_of_line("\r\x1b[2K")
    }

    fn flush(&self) -> std::io::Result<()> {
        let text = {
            let mut frame = self.frame();
            (frame.padding_next, frame.break_pending) = (false, false);
            std::mem::take(&mut frame.text)
        };
        let mut stderr = std::io::stderr().lock();
        stderr.write_all(text.as_bytes())?;
        stderr.flush()
    }
}

/// Columns and rows of the terminal on file descriptor `fd`, if it is one.
pub(super) fn terminal_size(fd: i32) -> Option<(u16, u16)> {
    let mut size = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer, which is valid for it.
    let done = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) };
    (done == 0 && size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_end_in_an_erase_and_a_break_not_in_the_last_column() {
        let term = LineBreakingStderr::default();
        // As indicatif draws two lines over two drawn before: up, clear both, up, then each
        // line and its padding.
        term.move_cursor_up(1).unwrap();
        term.clear_line().unwrap();
        term.move_cursor_down(1).unwrap();
        term.clear_line().unwrap();
        term.move_cursor_up(1).unwrap();
        for (line, padding) in [("first", "     "), ("second", "")] {
            term.write_str(line).unwrap();
            term.write_str(padding).unwrap();
        }
        let frame = std::mem::take(&mut term.frame().text);
        assert_eq!(frame, "\x1b[1A\r\x1b[2K\x1b[1B\r\x1b[2K\x1b[1Afirst\x1b[K\r\nsecond");
        // An empty line is a line too.
        for text in ["", "          ", "third", "     "] {
            term.write_str(text).unwrap();
        }
        assert_eq!(term.frame().text, "\r\n\x1b[K\r\nthird\x1b[K");
    }
}
