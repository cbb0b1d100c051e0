//! Numbers read aloud the way Mandarin reads them (SPEC §14), as voice-pack tokens.
//!
//! Pure: an amount in fen in, the tokens to say out. The rules, in the order they act:
//! - the integer part in groups of four digits, each group read with 千 百 十 and
//!   followed by 万 or 亿 (and 万亿, 亿亿 beyond: an i64 of fen reaches 亿亿);
//! - a run of zeros inside the number is one 零, trailing zeros are silent; a group
//!   under 1000 after a higher group starts with 零 (一万零五), and so does a lower part
//!   under a tenth of its unit (一亿零一百万), while zeros that end the group before 万
//!   or 亿 are silent (十万五千, 一百万一千): the school rule, 每级末尾的0都不读;
//! - a number that starts with 一十 drops the 一 (十, 十五万); inside a number it stays
//!   (一百一十, 一万零一十);
//! - 两 instead of 二 for a 2 directly before 百 or 千, and before 万 or 亿 only when the
//!   whole group is 2 (两万, but 十二万 and 二十二万); a 2 anywhere else is 二;
//! - the fen after 点, digit by digit, trailing zeros dropped (十点零五, 零点五).

use super::Token;

const WAN: u64 = 10_000;
const YI: u64 = 100_000_000;

/// An amount in fen as yuan, read aloud: `1005` (10.05 yuan) is 十 点 零 五.
pub fn amount(fen: u64) -> Vec<Token> {
    let mut out = Vec::new();
    integer(fen / 100, true, &mut out);
    let (tenths, hundredths) = ((fen / 10 % 10) as u8, (fen % 10) as u8);
    if tenths != 0 || hundredths != 0 {
        out.push(Token::Dian);
        out.push(Token::Digit(tenths));
        if hundredths != 0 {
            out.push(Token::Digit(hundredths));
        }
    }
    out
}

/// Reads `n`. `first`: whether this is the start of the whole number (where 一十 is 十).
fn integer(n: u64, first: bool, out: &mut Vec<Token>) {
    if n == 0 {
        // Only a whole number that is zero says it; zeros inside one are the callers'.
        out.push(Token::Digit(0));
        return;
    }
    let (high, low, unit, scale) = if n >= YI {
        (n / YI, n % YI, Token::HundredMillion, YI)
    } else if n >= WAN {
        (n / WAN, n % WAN, Token::TenThousand, WAN)
    } else {
        group(n as u16, first, false, out);
        return;
    };
    if high < WAN {
        // The whole group before 万 or 亿 is one group: 两 only when it is 2.
        group(high as u16, first, true, out);
    } else {
        integer(high, first, out);
    }
    out.push(unit);
    if low == 0 {
        return;
    }
    // 一亿零一百万, 一万零五: a gap below the unit is one 零.
    if low < scale / 10 {
        out.push(Token::Digit(0));
    }
    integer(low, false, out);
}

/// One group of four digits (1..=9999). `before_unit`: the group is followed by 万 or 亿.
fn group(n: u16, first: bool, before_unit: bool, out: &mut Vec<Token>) {
    const PLACES: [(u16, Option<Token>); 4] = [
        (1000, Some(Token::Thousand)),
        (100, Some(Token::Hundred)),
        (10, Some(Token::Ten)),
        (1, None),
    ];
    let mut zeros = false;
    let mut started = false;
    for (place, unit) in PLACES {
        let d = (n / place % 10) as u8;
        if d == 0 {
            zeros = started;
            continue;
        }
        if zeros {
            out.push(Token::Digit(0));
            zeros = false;
        }
        let alone_ten = d == 1 && place == 10 && first && !started;
        let liang = d == 2 && (place >= 100 || (place == 1 && before_unit && n == 2));
        if liang {
            out.push(Token::Liang);
        } else if !alone_ten {
            out.push(Token::Digit(d));
        }
        out.extend(unit);
        started = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tokens as the characters they stand for.
    fn said(fen: u64) -> String {
        amount(fen).iter().map(|t| t.hanzi()).collect()
    }

    #[test]
    fn amounts_are_read_as_mandarin_reads_them() {
        // (yuan as written, fen, how it is read): every example of SPEC §14, then the
        // edges.
        let table: &[(&str, u64, &str)] = &[
            ("10", 1000, "十"),
            ("110", 11000, "一百一十"),
            ("200", 20000, "两百"),
            ("2000", 200000, "两千"),
            ("2200", 220000, "两千两百"),
            ("20000", 2000000, "两万"),
            ("120000", 12000000, "十二万"),
            ("22", 2200, "二十二"),
            ("2", 200, "二"),
            ("10.05", 1005, "十点零五"),
            ("0.5", 50, "零点五"),
            ("123.5", 12350, "一百二十三点五"),
            ("2005", 200500, "两千零五"),
            ("99", 9900, "九十九"),
            ("0", 0, "零"),
            ("100", 10000, "一百"),
            ("1,000,000", 100000000, "一百万"),
            ("10,000.05", 1000005, "一万点零五"),
            ("2,000,200", 200020000, "两百万零两百"),
            ("100,000,000", 10000000000, "一亿"),
            ("0.01", 1, "零点零一"),
            ("0.1", 10, "零点一"),
            ("0.99", 99, "零点九九"),
            ("1", 100, "一"),
            ("12", 1200, "十二"),
            ("20", 2000, "二十"),
            ("101", 10100, "一百零一"),
            ("1001", 100100, "一千零一"),
            ("1010", 101000, "一千零一十"),
            ("1100", 110000, "一千一百"),
            ("10,010", 1001000, "一万零一十"),
            ("10,500", 1050000, "一万零五百"),
            ("11,000", 1100000, "一万一千"),
            ("100,000", 10000000, "十万"),
            ("150,000", 15000000, "十五万"),
            ("105,000", 10500000, "十万五千"),
            ("220,000", 22000000, "二十二万"),
            ("1,001,000", 100100000, "一百万一千"),
            ("100,000,001", 10000000100, "一亿零一"),
            ("100,000,010", 10000001000, "一亿零一十"),
            ("101,000,000", 10100000000, "一亿零一百万"),
            ("110,000,000", 11000000000, "一亿一千万"),
            ("200,000,000", 20000000000, "两亿"),
            ("1,000,000,000", 100000000000, "十亿"),
            (
                "1,234,567,890.12",
                123456789012,
                "十二亿三千四百五十六万七千八百九十点一二",
            ),
            ("2,0000,0000,0000", 200000000000000, "两万亿"),
        ];
        let wrong: Vec<String> = table
            .iter()
            .filter(|(_, fen, want)| said(*fen) != *want)
            .map(|(yuan, fen, want)| format!("{yuan}: said {}, want {want}", said(*fen)))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn every_amount_up_to_a_large_one_reads_without_a_doubled_zero_or_a_trailing_one() {
        let step = |n: u64| n + 1 + n / 1000;
        let mut fen = 0u64;
        while fen < 10u64.pow(15) {
            let s = said(fen);
            assert!(!s.contains("零零"), "{fen}: {s}");
            assert!(fen == 0 || !s.starts_with('零') || fen < 100, "{fen}: {s}");
            assert!(!s.ends_with('零') || fen == 0, "{fen}: {s}");
            fen = step(fen);
        }
        // The largest amount an i64 holds reads too.
        assert!(!amount(i64::MAX as u64).is_empty());
        assert!(!amount(u64::MAX).is_empty());
    }
}
