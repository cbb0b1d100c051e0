//! Any MQTT payload, as it came and as the body of a forward signed so that it reaches
//! the parser, through the store box's decoder (`sources::mqtt::arrival`): no panic, no
//! message without its signature, no coupon of another account
//! (`coupond::fuzzing::check_mqtt`).
#![no_main]

libfuzzer_sys::fuzz_target!(|payload: &[u8]| {
    coupond::fuzzing::check_mqtt(payload);
});
