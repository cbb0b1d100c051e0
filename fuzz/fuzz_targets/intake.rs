//! Any body, signed so that it reaches the parser, through `intake::classify` (envelope,
//! `content`, signature) and, when it is a coupon, the receipt renderer: no panic, and
//! no command on the receipt but the layout's own (`coupond::fuzzing::check`).
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    coupond::fuzzing::check(body);
});
