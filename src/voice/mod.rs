//! The spoken announcement's words (SPEC §14): what is said, and the voice pack it is
//! said with.
//!
//! Speech is made as the counter's payment speakers make it: short recorded clips, one
//! per word, joined in order with nothing between them. [`announcement`] says which
//! words (`[test] douyin ACTION [AMOUNT yuan]`, the amount read by [`mandarin`]);
//! [`VoicePack`] holds the clips of `--voice DIR`, read once at start by [`wav`], and
//! joins their samples. A clip that is missing or malformed is named once, at start
//! (and by `coupond check`), and left out when spoken: the rest of the sentence is
//! still worth saying.

pub mod mandarin;
pub mod wav;

use std::path::{Path, PathBuf};

use crate::coupon::Action;

/// The default `--voice`: where the package installs the repository's `voice/`.
pub const DEFAULT_DIR: &str = "/usr/share/coupond/voice";

/// One word of an announcement: one clip of the voice pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Token {
    /// 零 … 九.
    Digit(u8),
    /// 十
    Ten,
    /// 百
    Hundred,
    /// 千
    Thousand,
    /// 万
    TenThousand,
    /// 亿
    HundredMillion,
    /// 两, the 2 before 百, 千 (and a lone 2 before 万, 亿).
    Liang,
    /// 点, the decimal point.
    Dian,
    /// 元
    Yuan,
    /// 抖音
    Douyin,
    /// 核销成功
    Verify,
    /// 撤销核销
    VerifyCancel,
    /// 退款成功
    RefundSuccess,
    /// 测试, first in a test push's announcement.
    Test,
}

impl Token {
    /// Every token, in the order the README lists the clips.
    pub const ALL: [Token; 23] = [
        Token::Digit(0),
        Token::Digit(1),
        Token::Digit(2),
        Token::Digit(3),
        Token::Digit(4),
        Token::Digit(5),
        Token::Digit(6),
        Token::Digit(7),
        Token::Digit(8),
        Token::Digit(9),
        Token::Ten,
        Token::Hundred,
        Token::Thousand,
        Token::TenThousand,
        Token::HundredMillion,
        Token::Liang,
        Token::Dian,
        Token::Yuan,
        Token::Douyin,
        Token::Verify,
        Token::VerifyCancel,
        Token::RefundSuccess,
        Token::Test,
    ];

    /// The clip's file name in the voice pack (SPEC §14 fixes them).
    pub fn file_name(self) -> &'static str {
        const DIGITS: [&str; 10] = [
            "0.wav", "1.wav", "2.wav", "3.wav", "4.wav", "5.wav", "6.wav", "7.wav", "8.wav",
            "9.wav",
        ];
        match self {
            Token::Digit(d) => DIGITS[usize::from(d % 10)],
            Token::Ten => "10.wav",
            Token::Hundred => "100.wav",
            Token::Thousand => "1000.wav",
            Token::TenThousand => "10000.wav",
            Token::HundredMillion => "100000000.wav",
            Token::Liang => "liang.wav",
            Token::Dian => "dian.wav",
            Token::Yuan => "yuan.wav",
            Token::Douyin => "douyin.wav",
            Token::Verify => "verify.wav",
            Token::VerifyCancel => "verify_cancel.wav",
            Token::RefundSuccess => "refund_success.wav",
            Token::Test => "test.wav",
        }
    }

    /// What the clip says, in characters.
    pub fn hanzi(self) -> &'static str {
        const DIGITS: [&str; 10] = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"];
        match self {
            Token::Digit(d) => DIGITS[usize::from(d % 10)],
            Token::Ten => "十",
            Token::Hundred => "百",
            Token::Thousand => "千",
            Token::TenThousand => "万",
            Token::HundredMillion => "亿",
            Token::Liang => "两",
            Token::Dian => "点",
            Token::Yuan => "元",
            Token::Douyin => "抖音",
            Token::Verify => "核销成功",
            Token::VerifyCancel => "撤销核销",
            Token::RefundSuccess => "退款成功",
            Token::Test => "测试",
        }
    }

    fn of_action(action: Action) -> Token {
        match action {
            Action::Verify => Token::Verify,
            Action::VerifyCancel => Token::VerifyCancel,
            Action::RefundSuccess => Token::RefundSuccess,
        }
    }
}

/// What is said for a message: `[test] douyin ACTION [AMOUNT yuan]`. `pay_amount` in fen,
/// when the coupon's details are known.
pub fn announcement(test: bool, action: Action, pay_amount: Option<u64>) -> Vec<Token> {
    let mut words = Vec::new();
    if test {
        words.push(Token::Test);
    }
    words.push(Token::Douyin);
    words.push(Token::of_action(action));
    if let Some(fen) = pay_amount {
        words.extend(mandarin::amount(fen));
        words.push(Token::Yuan);
    }
    words
}

/// What `coupond speak-test` says: `test douyin verify [AMOUNT yuan]`.
pub fn speak_test(pay_amount: Option<u64>) -> Vec<Token> {
    announcement(true, Action::Verify, pay_amount)
}

/// The words as one string of characters, for a log line.
pub fn hanzi(words: &[Token]) -> String {
    words.iter().map(|t| t.hanzi()).collect()
}

/// The clips of `--voice DIR`, read into memory once.
#[derive(Debug, Clone)]
pub struct VoicePack {
    pub dir: PathBuf,
    /// Samples per token in [`Token::ALL`] order; `None` for a clip that is missing or
    /// malformed.
    clips: Vec<Option<Vec<u8>>>,
    /// One line per clip that could not be used: its path and why.
    pub problems: Vec<String>,
}

impl VoicePack {
    /// Reads every clip of `dir`. Never fails: what cannot be used is in `problems`
    /// (one line for a directory that is not there at all).
    pub fn load(dir: &Path) -> VoicePack {
        let mut clips = Vec::with_capacity(Token::ALL.len());
        let mut problems = Vec::new();
        if !dir.is_dir() {
            return VoicePack {
                dir: dir.to_path_buf(),
                clips: vec![None; Token::ALL.len()],
                problems: vec![format!(
                    "{}: no such directory, so no clip at all (--voice; the package installs {DEFAULT_DIR})",
                    dir.display()
                )],
            };
        }
        for token in Token::ALL {
            let path = dir.join(token.file_name());
            match read_clip(&path) {
                Ok(samples) => clips.push(Some(samples)),
                Err(why) => {
                    problems.push(format!("{} ({}): {why}", path.display(), token.hanzi()));
                    clips.push(None);
                }
            }
        }
        VoicePack {
            dir: dir.to_path_buf(),
            clips,
            problems,
        }
    }

    /// How many of the [`Token::ALL`] clips could be read.
    pub fn usable(&self) -> usize {
        self.clips.iter().filter(|c| c.is_some()).count()
    }

    /// The samples of `words`, joined with nothing between them; a clip that could
    /// not be read is left out.
    pub fn say(&self, words: &[Token]) -> Vec<u8> {
        let mut pcm = Vec::new();
        for token in words {
            let i = Token::ALL.iter().position(|t| t == token);
            if let Some(Some(clip)) = i.map(|i| &self.clips[i]) {
                pcm.extend_from_slice(clip);
            }
        }
        pcm
    }
}

fn read_clip(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "missing".to_string(),
        _ => e.to_string(),
    })?;
    let mut bytes = Vec::new();
    // Read one byte past the limit to tell a file at the limit from a longer one.
    file.take(wav::MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > wav::MAX_FILE {
        return Err(format!("longer than {} s", wav::MAX_SECONDS));
    }
    wav::samples(&bytes).map_err(|e| e.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_is_test_douyin_action_amount_yuan() {
        let said = |test, action, amount| hanzi(&announcement(test, action, amount));
        assert_eq!(
            said(false, Action::Verify, Some(9900)),
            "抖音核销成功九十九元"
        );
        assert_eq!(said(false, Action::Verify, None), "抖音核销成功");
        assert_eq!(
            said(true, Action::Verify, Some(1)),
            "测试抖音核销成功零点零一元"
        );
        assert_eq!(said(false, Action::VerifyCancel, None), "抖音撤销核销");
        assert_eq!(
            said(false, Action::RefundSuccess, Some(0)),
            "抖音退款成功零元"
        );
    }

    #[test]
    fn every_token_has_its_own_clip() {
        let mut names: Vec<&str> = Token::ALL.iter().map(|t| t.file_name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Token::ALL.len());
    }

    #[test]
    fn a_pack_joins_the_clips_it_has_and_names_the_rest() {
        let dir = std::env::temp_dir().join(format!("coupond-voice-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (i, token) in Token::ALL.iter().enumerate() {
            let path = dir.join(token.file_name());
            match token {
                Token::Yuan => {
                    let _ = std::fs::remove_file(&path);
                }
                Token::Dian => std::fs::write(&path, b"RIFF....WAVEfmt ").unwrap(),
                _ => std::fs::write(&path, wav::encode(&[i as u8, 0], &[])).unwrap(),
            }
        }
        let pack = VoicePack::load(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(pack.problems.len(), 2, "{:?}", pack.problems);
        assert!(
            pack.problems[0].contains("dian.wav (点): "),
            "{:?}",
            pack.problems
        );
        assert!(
            pack.problems[1].ends_with("yuan.wav (元): missing"),
            "{:?}",
            pack.problems
        );
        let words = announcement(false, Action::Verify, Some(1050));
        assert_eq!(hanzi(&words), "抖音核销成功十点五元");
        // douyin (18), verify (19), ten (10), dian left out, five (5), yuan left out.
        assert_eq!(pack.say(&words), [18, 0, 19, 0, 10, 0, 5, 0]);
        assert_eq!(pack.usable(), Token::ALL.len() - 2);
        let none = VoicePack::load(&dir.join("not-there"));
        assert_eq!(none.problems.len(), 1, "{:?}", none.problems);
        assert!(none.problems[0].contains("no such directory"));
        assert_eq!((none.usable(), none.say(&words).len()), (0, 0));
    }
}
