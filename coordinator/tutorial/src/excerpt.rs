//! Input shown in messages: a cell as text, lossy and shortened.

/// Longest cell text quoted in an error: the whole of a runaway cell would flood the terminal.
const MAX_QUOTED_CHARS: usize = 40;

/// The cell as text for a message: lossy, since the input need not be UTF-8, and shortened.
pub fn quotable(cell: &[u8]) -> String {
    // Enough bytes for MAX_QUOTED_CHARS characters of up to four bytes, plus one to see there is more.
    let head = &cell[..cell.len().min(4 * MAX_QUOTED_CHARS + 1)];
    let text = String::from_utf8_lossy(head);
    let mut chars = text.chars();
    let mut quoted: String = chars.by_ref().take(MAX_QUOTED_CHARS).collect();
    if chars.next().is_some() || head.len() < cell.len() {
        quoted.push('…');
    }
    quoted
}
