//! The receipt: what it says (one place, easy to read and change) and its ESC/POS bytes.
//!
//! [`lines`] decides the content, [`render_text`] shows it as plain text (for the log and
//! tests), [`escpos`] encodes it for the printer: initialise, Chinese character mode,
//! text in GB18030 (the code page of Chinese thermal printers), a feed and a cut. Widths
//! are counted in printer columns: an ASCII character takes one, a Chinese character two;
//! 58 mm paper holds 32 columns, 80 mm paper 48.

use crate::coupon::Action;
use crate::sinks::mask_code;
use crate::store::JobEvent;
use crate::time;

/// What a receipt line is, before it becomes bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// Centred, double size, bold: the store name and the headline.
    Title(String),
    /// Centred, normal size.
    Center(String),
    /// A full-width rule.
    Rule,
    /// `label  value`, the value wrapped under itself when it is long.
    Field(&'static str, String),
}

/// The width of the label column, in printer columns.
const LABEL: usize = 10;

/// The content of a receipt for `e`, printed at `printed_at` (Unix seconds).
pub fn lines(e: &JobEvent, reprint: bool, printed_at: i64, store_name: Option<&str>) -> Vec<Line> {
    let mut out = Vec::new();
    if let Some(name) = store_name {
        out.push(Line::Title(name.to_string()));
    }
    out.push(Line::Title(e.action.headline_zh().to_string()));
    if reprint {
        out.push(Line::Center("*** 重打 ***".into()));
    }
    out.push(Line::Rule);
    out.push(Line::Field("券ID", e.certificate_id.clone()));
    if let Some(o) = &e.order_id {
        out.push(Line::Field("订单号", o.clone()));
    }
    if let Some(c) = &e.code {
        out.push(Line::Field("券码", mask_code(c)));
    }
    if let Some(a) = &e.account_id {
        out.push(Line::Field("商户", a.clone()));
    }
    let when = match e.action {
        Action::Verify => "核销时间",
        Action::VerifyCancel => "撤销时间",
        Action::RefundSuccess => "退款时间",
    };
    out.push(Line::Field(when, time::local_datetime(e.msg_time)));
    out.push(Line::Field("打印时间", time::local_datetime(printed_at)));
    out.push(Line::Rule);
    out
}

/// Printer columns taken by `s`: CJK and other wide characters take two.
pub fn width(s: &str) -> usize {
    s.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
}

/// Splits `s` into pieces of at most `cols` columns.
fn wrap(s: &str, cols: usize) -> Vec<String> {
    let mut out = vec![String::new()];
    for c in s.chars() {
        let w = if c.is_ascii() { 1 } else { 2 };
        if width(out.last().expect("never empty")) + w > cols {
            out.push(String::new());
        }
        out.last_mut().expect("never empty").push(c);
    }
    out
}

fn pad(s: &str, cols: usize) -> String {
    format!("{s}{}", " ".repeat(cols.saturating_sub(width(s))))
}

fn field_rows(label: &str, value: &str, columns: usize) -> Vec<String> {
    wrap(value, columns.saturating_sub(LABEL).max(8))
        .into_iter()
        .enumerate()
        .map(|(i, piece)| format!("{}{piece}", pad(if i == 0 { label } else { "" }, LABEL)))
        .collect()
}

/// The receipt as plain text lines, as wide as the paper.
pub fn render_text(lines: &[Line], columns: usize) -> Vec<String> {
    let center =
        |s: &str, cols: usize| format!("{}{s}", " ".repeat(cols.saturating_sub(width(s)) / 2));
    lines
        .iter()
        .flat_map(|l| match l {
            Line::Title(t) => wrap(t, columns / 2)
                .iter()
                .map(|p| center(p, columns / 2))
                .collect(),
            Line::Center(t) => wrap(t, columns)
                .iter()
                .map(|p| center(p, columns))
                .collect(),
            Line::Rule => vec!["-".repeat(columns)],
            Line::Field(label, value) => field_rows(label, value, columns),
        })
        .collect()
}

// ESC/POS commands used (Epson's names).
const ESC_INIT: &[u8] = b"\x1b@"; // ESC @: initialise
const FS_CHINESE: &[u8] = b"\x1c&"; // FS &: Chinese (two-byte) character mode
const ALIGN_LEFT: &[u8] = b"\x1ba\x00"; // ESC a 0
const ALIGN_CENTER: &[u8] = b"\x1ba\x01"; // ESC a 1
const SIZE_NORMAL: &[u8] = b"\x1d!\x00"; // GS ! 0
const SIZE_DOUBLE: &[u8] = b"\x1d!\x11"; // GS ! 0x11: double width and height
const BOLD_ON: &[u8] = b"\x1bE\x01"; // ESC E 1
const BOLD_OFF: &[u8] = b"\x1bE\x00"; // ESC E 0
const FEED_4: &[u8] = b"\x1bd\x04"; // ESC d 4: print and feed 4 lines
const CUT: &[u8] = b"\x1dVB\x00"; // GS V 66 0: feed to the cutter and cut (partial)

/// The receipt as ESC/POS bytes, text in GB18030.
pub fn escpos(lines: &[Line], columns: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(ESC_INIT);
    out.extend_from_slice(FS_CHINESE);
    let text = |out: &mut Vec<u8>, s: &str| {
        let (bytes, _, _) = encoding_rs::GB18030.encode(s);
        out.extend_from_slice(&bytes);
        out.push(b'\n');
    };
    for l in lines {
        match l {
            Line::Title(t) => {
                out.extend_from_slice(ALIGN_CENTER);
                out.extend_from_slice(SIZE_DOUBLE);
                out.extend_from_slice(BOLD_ON);
                for piece in wrap(t, columns / 2) {
                    text(&mut out, &piece);
                }
                out.extend_from_slice(BOLD_OFF);
                out.extend_from_slice(SIZE_NORMAL);
                out.extend_from_slice(ALIGN_LEFT);
            }
            Line::Center(t) => {
                out.extend_from_slice(ALIGN_CENTER);
                for piece in wrap(t, columns) {
                    text(&mut out, &piece);
                }
                out.extend_from_slice(ALIGN_LEFT);
            }
            Line::Rule => text(&mut out, &"-".repeat(columns)),
            Line::Field(label, value) => {
                for row in field_rows(label, value, columns) {
                    text(&mut out, row.trim_end());
                }
            }
        }
    }
    out.extend_from_slice(FEED_4);
    out.extend_from_slice(CUT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: Action, code: Option<&str>) -> JobEvent {
        JobEvent {
            message_id: 1,
            action,
            certificate_id: "7001234567890123456".into(),
            order_id: Some("1088000000000000001".into()),
            code: code.map(String::from),
            account_id: Some("6900000000001".into()),
            client_key: Some("app".into()),
            msg_time: 1_665_991_178,
            log_id: None,
            received_at: "2022-10-17T07:19:38.000Z".into(),
            body: String::new(),
        }
    }

    #[test]
    fn says_what_happened_with_every_field() {
        let l = lines(
            &event(Action::VerifyCancel, Some("ABCD12345678")),
            true,
            1_665_991_200,
            Some("望京店"),
        );
        let text = render_text(&l, 32).join("\n");
        for want in [
            "望京店",
            "已撤销核销",
            "重打",
            "7001234567890123456",
            "1088000000000000001",
            "********5678",
            "6900000000001",
            "撤销时间",
            "打印时间",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        assert!(!text.contains("ABCD1234"), "the code must be masked");
    }

    #[test]
    fn every_line_fits_the_paper() {
        let l = lines(
            &event(Action::Verify, Some("X".repeat(60).as_str())),
            false,
            0,
            Some("一家名字非常非常非常非常长的店铺"),
        );
        for columns in [32, 48] {
            for row in render_text(&l, columns) {
                assert!(
                    width(&row) <= columns,
                    "{columns}: {row:?} is {} wide",
                    width(&row)
                );
            }
        }
    }

    #[test]
    fn escpos_initialises_selects_chinese_encodes_gb18030_and_cuts() {
        let bytes = escpos(&lines(&event(Action::Verify, None), false, 0, None), 32);
        assert!(bytes.starts_with(b"\x1b@\x1c&"));
        assert!(bytes.ends_with(b"\x1dVB\x00"));
        let (headline, _, _) = encoding_rs::GB18030.encode("核销成功");
        assert!(bytes.windows(headline.len()).any(|w| w == &headline[..]));
        assert_eq!(
            &headline[..],
            &[0xBA, 0xCB, 0xCF, 0xFA, 0xB3, 0xC9, 0xB9, 0xA6]
        );
    }
}
