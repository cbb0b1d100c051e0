//! The receipt: what it says (one place, easy to read and change) and its ESC/POS bytes.
//!
//! [`lines`] decides the content, [`render_text`] shows it as plain text (for the log and
//! tests), [`escpos`] encodes it for the printer: initialise, Chinese character mode,
//! text in GB18030 (the code page of Chinese thermal printers), a feed and a cut. Widths
//! are counted in printer columns: an ASCII character takes one, a Chinese character two;
//! 58 mm paper holds 32 columns, 80 mm paper 48.
//!
//! Every value from a message goes through [`sanitize::receipt_field`] in [`lines`]:
//! control characters become a visible mark, so no field can carry a printer command
//! (`ESC p` opens the cash drawer, `GS V` cuts), and a field over 64 characters is cut
//! with `…`. The only commands on the paper are the ones [`escpos`] writes.

use crate::coupon::Action;
use crate::details::{self, store_name, Details};
use crate::model::{DayReport, Group, JobEvent};
use crate::sanitize::{self, RECEIPT_FIELD};
use crate::sinks::mask_code;
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
    /// Left-aligned text, wrapped; bold for what the counter must see (the deal, the
    /// amount paid).
    Text { text: String, bold: bool },
    /// Text on the left, a value flush right (a count, an amount); the text wraps and
    /// the value goes under it when both do not fit on one line.
    Row(String, String),
}

/// The width of the label column, in printer columns.
const LABEL: usize = 10;

/// The content of a receipt for `e`, printed at `printed_at` (Unix seconds);
/// `poi_names` are `--poi-names`.
pub fn lines(
    e: &JobEvent,
    reprint: bool,
    printed_at: i64,
    store_name: Option<&str>,
    poi_names: &[(String, String)],
) -> Vec<Line> {
    let mut out = Vec::new();
    if let Some(name) = store_name {
        out.push(Line::Title(sanitize::receipt_field(name)));
    }
    out.push(Line::Title(e.action.headline_zh().to_string()));
    if e.from_catchup() {
        // Recovered by catch-up: the customer was served while the box was cut off.
        out.push(Line::Center("补录".into()));
    }
    if e.test() {
        out.push(Line::Center(TEST_MARK.into()));
    }
    if reprint {
        out.push(Line::Center("*** 重打 ***".into()));
    }
    out.push(Line::Rule);
    if let Some(d) = &e.details {
        out.extend(details_lines(d, poi_names));
    }
    out.push(Line::Field(
        "券ID",
        sanitize::receipt_field(&e.certificate_id),
    ));
    if let Some(o) = &e.order_id {
        out.push(Line::Field("订单号", sanitize::receipt_field(o)));
    }
    if let Some(c) = &e.code {
        // Cut from the front: the last four characters are the ones shown.
        let masked = mask_code(&sanitize::text(c));
        out.push(Line::Field(
            "券码",
            sanitize::cut_front(&masked, RECEIPT_FIELD).into_owned(),
        ));
    }
    if let Some(a) = &e.account_id {
        out.push(Line::Field("商户", sanitize::receipt_field(a)));
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

/// What was bought (SPEC §13): the deal's title (cut at 64 characters), `实付 ￥99.00`,
/// `原价 ￥128.00` when it differs, `门店 NAME` (else the POI id), and a rule; only
/// what is known. The full-width ￥ is two bytes in GB18030; the half-width ¥ would be
/// four, which GBK printers garble.
pub fn details_lines(d: &Details, poi_names: &[(String, String)]) -> Vec<Line> {
    let mut out = Vec::new();
    if let Some(t) = &d.title {
        out.push(Line::Text {
            text: sanitize::receipt_field(t),
            bold: true,
        });
    }
    if let Some(pay) = d.pay_amount {
        out.push(Line::Text {
            text: format!("实付 {}", yuan(pay)),
            bold: true,
        });
    }
    if let Some(original) = d.original_amount.filter(|o| Some(*o) != d.pay_amount) {
        out.push(Line::Text {
            text: format!("原价 {}", yuan(original)),
            bold: false,
        });
    }
    if let Some(poi) = &d.poi_id {
        out.push(Line::Text {
            text: format!(
                "门店 {}",
                sanitize::receipt_field(store_name(poi, poi_names))
            ),
            bold: false,
        });
    }
    if !out.is_empty() {
        out.push(Line::Rule);
    }
    out
}

/// The mark of a test push's receipt (and of a print test): not a real redemption.
pub const TEST_MARK: &str = "*** 测试 TEST ***";

/// The content of `coupond print-test`'s receipt: the store name, the paper width, the
/// time, and a line of Chinese and one of ASCII, to check the code page and the cut.
pub fn test_lines(store_name: Option<&str>, columns: usize, printed_at: i64) -> Vec<Line> {
    let mut out = Vec::new();
    if let Some(name) = store_name {
        out.push(Line::Title(name.to_string()));
    }
    out.push(Line::Title("打印测试".into()));
    out.push(Line::Center(TEST_MARK.into()));
    out.push(Line::Rule);
    out.push(Line::Field(
        "纸宽",
        format!("{} mm, {columns} 列", if columns == 48 { 80 } else { 58 }),
    ));
    out.push(Line::Field("打印时间", time::local_datetime(printed_at)));
    out.push(Line::Field("中文", "核销成功 已撤销核销 退款成功".into()));
    out.push(Line::Field("ASCII", "0123456789 ABCxyz !#%&*+-=".into()));
    out.push(Line::Rule);
    out.push(Line::Center("coupond print-test".into()));
    out
}

/// The headline of the end-of-day report (SPEC §15).
pub const DAY_HEADLINE: &str = "日结单";

/// The content of the end-of-day report for `r`: the window, the counts and sums, one
/// row per deal, one per store when there are several (named from `poi_names`, else by
/// id), what was recovered, rejected and failed. Deal titles and store names go through
/// the sanitizer like every field from Douyin.
pub fn day_lines(
    r: &DayReport,
    poi_names: &[(String, String)],
    store_name: Option<&str>,
    printed_at: i64,
) -> Vec<Line> {
    let t = &r.tally;
    let mut out = Vec::new();
    if let Some(name) = store_name {
        out.push(Line::Title(sanitize::receipt_field(name)));
    }
    out.push(Line::Title(DAY_HEADLINE.into()));
    out.push(Line::Rule);
    out.push(Line::Field("营业日", r.date.to_string()));
    out.push(Line::Field("从", time::local_datetime(r.from)));
    out.push(Line::Field("到", time::local_datetime(r.to)));
    out.push(Line::Rule);
    let count = |label: &str, n: i64| Line::Row(label.into(), n.to_string());
    out.push(count("核销", t.verify));
    out.push(count("撤销", t.verify_cancel));
    out.push(count("退款", t.refund_success));
    out.push(count("净核销 (核销-撤销)", t.net()));
    out.push(Line::Row("实付合计".into(), yuan(t.pay_amount)));
    out.push(Line::Row("原价合计".into(), yuan(t.original_amount)));
    if t.without_amount > 0 {
        out.push(count("金额未知 (未计入)", t.without_amount));
    }
    let group = |name: String, g: &Group| {
        let amount = g.pay_amount.map(yuan).unwrap_or_else(|| "金额未知".into());
        Line::Row(name, format!("x{} {amount}", g.count))
    };
    if !t.deals.is_empty() {
        out.push(Line::Rule);
        out.push(Line::Center("按商品".into()));
        for g in &t.deals {
            let title = g.key.as_deref().map(sanitize::receipt_field);
            out.push(group(title.unwrap_or_else(|| "(未知商品)".into()), g));
        }
    }
    if t.stores.len() > 1 {
        out.push(Line::Rule);
        out.push(Line::Center("按门店".into()));
        for g in &t.stores {
            out.push(group(poi_name(g.key.as_deref(), poi_names), g));
        }
    }
    out.push(Line::Rule);
    out.push(count("补录", t.recovered));
    out.push(count("拒绝的请求", t.rejected));
    out.push(count("输出失败", t.failed_outputs));
    out.push(Line::Field("打印时间", time::local_datetime(printed_at)));
    out.push(Line::Rule);
    out
}

/// A store as the report names it: its `--poi-names` name, else its id.
pub fn poi_name(poi_id: Option<&str>, poi_names: &[(String, String)]) -> String {
    let Some(id) = poi_id else {
        return "(未知门店)".into();
    };
    sanitize::receipt_field(store_name(id, poi_names))
}

/// Fen as yuan with the full-width sign (two bytes in GB18030; the half-width ¥ is four,
/// which GBK printers garble): `￥99.00`, `-￥15.50`.
pub fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}￥{}", details::yuan(fen.saturating_abs()))
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

fn row_rows(left: &str, right: &str, columns: usize) -> Vec<String> {
    let flush = |used: usize| " ".repeat(columns.saturating_sub(used + width(right)).max(1));
    if width(left) + 1 + width(right) <= columns {
        return vec![format!("{left}{}{right}", flush(width(left)))];
    }
    let mut rows = wrap(left, columns);
    rows.push(format!("{}{right}", flush(0)));
    rows
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
            Line::Text { text, .. } => wrap(text, columns),
            Line::Row(left, right) => row_rows(left, right, columns),
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
            Line::Text { text: t, bold } => {
                out.extend_from_slice(if *bold { BOLD_ON } else { BOLD_OFF });
                for piece in wrap(t, columns) {
                    text(&mut out, &piece);
                }
                out.extend_from_slice(BOLD_OFF);
            }
            Line::Row(left, right) => {
                for row in row_rows(left, right, columns) {
                    text(&mut out, &row);
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
    use crate::model::Source;

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
            source: Source::Push,
            details: None,
        }
    }

    fn bought() -> Details {
        Details {
            certificate_id: "7001234567890123456".into(),
            title: Some("双人套餐".into()),
            sku_id: Some("S1".into()),
            pay_amount: Some(9900),
            original_amount: Some(12800),
            coupon_pay_amount: Some(9900),
            merchant_ticket_amount: None,
            poi_id: Some("7100000000000000123".into()),
            verify_id: None,
            origin: crate::details::DetailsOrigin::Query,
            fetched_at: String::new(),
        }
    }

    #[test]
    fn details_say_the_deal_the_amount_paid_the_list_price_and_the_store() {
        let mut e = event(Action::Verify, None);
        e.details = Some(bought());
        let names = vec![("7100000000000000123".to_string(), "望京店".to_string())];
        let text = render_text(&lines(&e, false, 0, None, &names), 32);
        let at = |want: &str| text.iter().position(|l| l == want);
        let (title, pay, original, store) = (
            at("双人套餐").unwrap(),
            at("实付 ￥99.00").unwrap(),
            at("原价 ￥128.00").unwrap(),
            at("门店 望京店").unwrap(),
        );
        assert!(
            title < pay && pay < original && original < store,
            "{text:#?}"
        );
        assert!(store < text.iter().position(|l| l.contains("券ID")).unwrap());
        // No name for the POI: its id. The same price twice: no 原价.
        let d = e.details.as_mut().unwrap();
        d.original_amount = Some(9900);
        let text = render_text(&lines(&e, false, 0, None, &[]), 48);
        assert!(
            text.contains(&"门店 7100000000000000123".to_string()),
            "{text:#?}"
        );
        assert!(!text.iter().any(|l| l.contains("原价")), "{text:#?}");
        // The full-width ￥ is two bytes in GB18030.
        let (yen, _, _) = encoding_rs::GB18030.encode("￥");
        assert_eq!(yen.len(), 2);
    }

    #[test]
    fn a_title_from_douyin_is_sanitized_and_cut_at_64_characters() {
        let mut e = event(Action::Verify, None);
        let mut d = bought();
        d.title = Some(format!("套餐\x1bp\x00{}", "餐".repeat(100)));
        d.poi_id = Some("71\x1dVB".into());
        e.details = Some(d);
        let l = lines(&e, false, 0, None, &[]);
        let title = l
            .iter()
            .find_map(|l| match l {
                Line::Text { text, bold: true } if text.starts_with("套餐") => Some(text.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(title.chars().count(), RECEIPT_FIELD);
        assert!(
            title.ends_with('…') && title.contains('\u{fffd}'),
            "{title}"
        );
        let bytes = escpos(&l, 32);
        assert_eq!(bytes.windows(2).filter(|w| w == b"\x1dV").count(), 1);
        assert!(!bytes.windows(2).any(|w| w == b"\x1bp"));
        for row in render_text(&l, 32) {
            assert!(width(&row) <= 32, "{row}");
        }
    }

    #[test]
    fn says_what_happened_with_every_field() {
        let l = lines(
            &event(Action::VerifyCancel, Some("ABCD12345678")),
            true,
            1_665_991_200,
            Some("望京店"),
            &[],
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
    fn a_recovered_coupon_says_bulu_under_its_headline() {
        let mut e = event(Action::Verify, None);
        let text = render_text(&lines(&e, false, 0, None, &[]), 32).join("\n");
        assert!(!text.contains("补录"), "{text}");
        e.source = Source::Catchup;
        let text = render_text(&lines(&e, false, 0, None, &[]), 32);
        let at = text.iter().position(|l| l.contains("核销成功")).unwrap();
        assert!(text[at + 1].contains("补录"), "{text:#?}");
    }

    #[test]
    fn every_line_fits_the_paper() {
        let l = lines(
            &event(Action::Verify, Some("X".repeat(60).as_str())),
            false,
            0,
            Some("一家名字非常非常非常非常长的店铺"),
            &[],
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
    fn printer_commands_in_fields_are_printed_as_marks_and_long_fields_are_cut() {
        let mut e = event(Action::Verify, Some("\x1bp\x00\x19\u{fa}CODE1234"));
        e.certificate_id = "c1\x1bp\x00\x19\u{fa}".into();
        e.order_id = Some(format!("\x1dVB\x00{}", "9".repeat(80)));
        e.account_id = Some("\x1b@\x1b!\x30\u{9b}2J".into());
        let l = lines(&e, false, 0, Some("店\x1b@"), &[]);
        let bytes = escpos(&l, 32);
        let clean = escpos(
            &lines(&event(Action::Verify, None), false, 0, Some("店"), &[]),
            32,
        );
        let controls = |b: &[u8]| b.iter().filter(|&&b| b < 0x20 && b != b'\n').count();
        assert_eq!(
            controls(&bytes),
            controls(&clean),
            "the layout's own commands only"
        );
        assert_eq!(
            bytes.windows(2).filter(|w| w == b"\x1dV").count(),
            1,
            "one cut"
        );
        assert!(!bytes.windows(2).any(|w| w == b"\x1bp"), "no drawer kick");
        let text = render_text(&l, 32).concat();
        assert!(text.contains("c1\u{fffd}p\u{fffd}\u{fffd}\u{fa}"), "{text}");
        assert!(text.contains("****1234"), "{text}");
        let order = l
            .iter()
            .find_map(|l| match l {
                Line::Field("订单号", v) => Some(v.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(order.chars().count(), RECEIPT_FIELD);
        assert!(order.ends_with('…'), "{order}");
    }

    #[test]
    fn escpos_initialises_selects_chinese_encodes_gb18030_and_cuts() {
        let bytes = escpos(
            &lines(&event(Action::Verify, None), false, 0, None, &[]),
            32,
        );
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
