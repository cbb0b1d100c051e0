//! Signed fields are data (SPEC §3): the one sanitizer for text that a person or a device
//! will read.
//!
//! A signature proves who sent a body, not that its fields are harmless: a certificate
//! id may hold a newline (a forged log line), an ANSI escape (the journal viewer's
//! terminal), `ESC p` or `GS V` (a cash-drawer kick or a cut on the receipt printer), or
//! a NUL (which no environment variable can carry). So every field goes through
//! [`text`] at the edge where it is *shown*: the log (every line, in `cli`'s logger),
//! receipts (`sinks::receipt`), the hook's environment (`sinks::exec`) and
//! `coupond status`. The database keeps the raw values: it is the record.
//!
//! What is replaced, each character by one [`MARK`] (U+FFFD, the replacement character,
//! the same mark that invalid UTF-8 already gets): the control characters (Unicode
//! category Cc: C0 `U+0000..=U+001F`, DEL `U+007F`, C1 `U+0080..=U+009F`), and the few
//! other characters that break or reorder a line for whoever reads it (line and
//! paragraph separators, bidirectional embeddings, overrides and isolates). Everything
//! else, Chinese text included, passes unchanged. Receipt fields are also cut to
//! [`RECEIPT_FIELD`] characters, ending in `…` (see [`cut`]).

use std::borrow::Cow;

/// What a character that must not be shown becomes.
pub const MARK: char = '\u{FFFD}';

/// The longest receipt field, in characters, `…` included (SPEC §6).
pub const RECEIPT_FIELD: usize = 64;

/// Whether `c` must not reach a log line, a printer or a terminal as it is.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{2028}' | '\u{2029}'         // line and paragraph separators
            | '\u{202A}'..='\u{202E}'       // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}'       // bidi isolates
        )
}

/// `s` with every unsafe character replaced by [`MARK`]; borrowed when nothing is.
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| if is_unsafe(c) { MARK } else { c })
            .collect(),
    )
}

/// `s` as the value of a `key=value` pair in a log line: as it is when it is one plain
/// word, else in double quotes with `"` and `\` escaped, so that a field holding a space
/// cannot fake a pair of its own (`certificate_id=1 log_id=forged`). Control
/// characters are left to [`text`], which every log line passes through.
pub fn field(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '=' | '"' | '\\') || is_unsafe(c));
    if plain {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Cow::Owned(out)
}

/// `s` cut to at most `max` characters: the first `max - 1` and `…` when it is longer.
pub fn cut(s: &str, max: usize) -> Cow<'_, str> {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((end, _)) if s.chars().count() > max => Cow::Owned(format!("{}…", &s[..end])),
        _ => Cow::Borrowed(s),
    }
}

/// `s` cut to at most `max` characters from the front: `…` and the last `max - 1`, for
/// values whose end is what matters (a masked coupon code shows only its last four).
pub fn cut_front(s: &str, max: usize) -> Cow<'_, str> {
    let n = s.chars().count();
    if n <= max {
        return Cow::Borrowed(s);
    }
    let keep = max.saturating_sub(1);
    let start = s.char_indices().nth(n - keep).map_or(s.len(), |(i, _)| i);
    Cow::Owned(format!("…{}", &s[start..]))
}

/// A signed field as a receipt shows it: sanitized, at most [`RECEIPT_FIELD`] characters.
pub fn receipt_field(s: &str) -> String {
    cut(&text(s), RECEIPT_FIELD).into_owned()
}

/// `s` cut to at most `cap` bytes (at a character boundary) with how much was left
/// out, for a log line.
pub fn cap(s: &str, cap: usize) -> Cow<'_, str> {
    if s.len() <= cap {
        return Cow::Borrowed(s);
    }
    let mut end = cap;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes more)", &s[..end], s.len() - end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_that_is_not_one_plain_word_is_quoted_so_it_cannot_fake_a_pair() {
        assert_eq!(field("456"), "456");
        assert_eq!(field("COUPONDSEND1795"), "COUPONDSEND1795");
        assert_eq!(field("1 log_id=forged"), "\"1 log_id=forged\"");
        assert_eq!(field("a=b"), "\"a=b\"");
        assert_eq!(field(r#"x" y"#), r#""x\" y""#);
        assert_eq!(field(r"\"), r#""\\""#);
        assert_eq!(field(""), "\"\"");
    }

    #[test]
    fn a_long_line_is_cut_at_a_character_boundary_and_says_how_much() {
        assert_eq!(cap("short", 10), "short");
        let long = "券".repeat(4000);
        let cut = cap(&long, 2048);
        assert!(cut.len() < 2100, "{}", cut.len());
        assert!(
            cut.ends_with(&format!("… ({} bytes more)", 12_000 - 2046)),
            "{cut}"
        );
    }

    #[test]
    fn controls_and_line_breakers_become_the_mark_and_nothing_else_changes() {
        let m = MARK;
        let cases: &[(&str, String)] = &[
            ("7001234567890123456", "7001234567890123456".into()),
            ("券码ABCD 望京店", "券码ABCD 望京店".into()),
            ("", "".into()),
            ("a\nb", format!("a{m}b")),
            ("a\r\nb", format!("a{m}{m}b")),
            ("\t", format!("{m}")),
            ("nul\0", format!("nul{m}")),
            // ESC p 0 25 250: the cash-drawer kick; GS V 66 0: a cut; ESC @; ESC ! 0x30.
            ("\x1bp\x00\x19\u{fa}", format!("{m}p{m}{m}\u{fa}")),
            ("\x1dVB\x00", format!("{m}VB{m}")),
            ("\x1b@\x1b!0", format!("{m}@{m}!0")),
            ("\x1b[31mred\x1b[0m", format!("{m}[31mred{m}[0m")),
            ("del\x7f", format!("del{m}")),
            // C1: CSI, NEL (a newline to some terminals), the last C1.
            ("\u{9b}31m \u{85} \u{9f}", format!("{m}31m {m} {m}")),
            // Just outside the ranges: kept.
            (
                "\u{a0}\u{ff}~ \u{2027}\u{202f}\u{2065}\u{206a}",
                "\u{a0}\u{ff}~ \u{2027}\u{202f}\u{2065}\u{206a}".into(),
            ),
            ("a\u{2028}b\u{2029}", format!("a{m}b{m}")),
            ("\u{202e}gnp.exe\u{202c}", format!("{m}gnp.exe{m}")),
            ("\u{2066}x\u{2069}", format!("{m}x{m}")),
        ];
        for (input, want) in cases {
            assert_eq!(text(input), *want, "for {input:?}");
        }
    }

    #[test]
    fn clean_text_is_not_copied() {
        assert!(matches!(text("plain 券"), Cow::Borrowed(_)));
        assert!(matches!(cut("short", 64), Cow::Borrowed(_)));
    }

    #[test]
    fn every_unsafe_character_is_replaced() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let shown = text(c.encode_utf8(&mut [0; 4])).into_owned();
            assert!(
                !shown.chars().any(|s| s.is_control()),
                "U+{:04X} shown as {shown:?}",
                c as u32
            );
            assert_eq!(shown.chars().count(), 1, "one character for one");
        }
    }

    #[test]
    fn long_values_are_cut_with_an_ellipsis() {
        let cases: &[(&str, usize, &str)] = &[
            ("abcdef", 6, "abcdef"),
            ("abcdefg", 6, "abcde…"),
            ("订单号订单号订单", 4, "订单号…"),
            ("ab", 1, "…"),
            ("", 3, ""),
        ];
        for (input, max, want) in cases {
            assert_eq!(cut(input, *max), *want, "cut({input:?}, {max})");
        }
        let front: &[(&str, usize, &str)] = &[
            ("********5678", 12, "********5678"),
            ("*********5678", 12, "…*******5678"),
            ("**券码5678", 5, "…5678"),
        ];
        for (input, max, want) in front {
            assert_eq!(cut_front(input, *max), *want, "cut_front({input:?}, {max})");
        }
    }

    #[test]
    fn receipt_fields_are_sanitized_then_cut_to_64_characters() {
        assert_eq!(receipt_field(&"9".repeat(64)), "9".repeat(64));
        let long = receipt_field(&format!("{}\x1bp", "9".repeat(70)));
        assert_eq!(long.chars().count(), RECEIPT_FIELD);
        assert_eq!(long, format!("{}…", "9".repeat(63)));
        assert_eq!(receipt_field("a\x1dVb"), format!("a{MARK}Vb"));
    }
}
