//! A project's response headers on its preview host: the project can set any cookie but ooda's
//! own, and every other Set-Cookie passes untouched and in order.
//!
//! Input: one Set-Cookie value per line.
#![no_main]

use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use ooda::gateway::proxy::fuzzing::{is_ooda_cookie, preview_response_headers};

fuzz_target!(|input: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in input.split(|b| *b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    let theirs: Vec<HeaderValue> =
        headers.get_all(header::SET_COOKIE).iter().filter(|v| !is_ooda_cookie(v.as_bytes())).cloned().collect();
    preview_response_headers(&mut headers);
    let passed: Vec<HeaderValue> = headers.get_all(header::SET_COOKIE).iter().cloned().collect();
    assert_eq!(passed, theirs);
});
