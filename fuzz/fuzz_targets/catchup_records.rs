//! Any answer of Douyin's verify-record query, as it came and as the one record of a
//! page, through catch-up's record decoder (`douyin::parse_page`, `catchup::messages`,
//! `catchup::refused`): no panic, at most the page size read, nothing outside the
//! window asked for (`coupond::fuzzing::check_records`).
#![no_main]

libfuzzer_sys::fuzz_target!(|answer: &[u8]| {
    coupond::fuzzing::check_records(answer);
});
