//! Text a registry controls (error bodies, header values, strings inside manifests), made safe
//! to print: control characters and bidirectional overrides are escaped, so an answer cannot
//! move the cursor, recolour or rewrite what a user's terminal shows.

/// `text` with every control character (ESC, CR, LF, C1 ...) and every bidirectional
/// formatting character written as Rust escapes it (`\u{1b}`, `\r`), and nothing else changed.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || is_bidi_control(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// The Unicode characters that reorder text when displayed (Trojan Source, CVE-2021-42574).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("\u{1b}[2Jgone\rhi\n"), "\\u{1b}[2Jgone\\rhi\\n");
        assert_eq!(
            printable("blob unknown: ümlaut \"q\""),
            "blob unknown: ümlaut \"q\""
        );
        assert_eq!(printable("a\u{202e}b\u{9b}c"), "a\\u{202e}b\\u{9b}c");
    }
}
