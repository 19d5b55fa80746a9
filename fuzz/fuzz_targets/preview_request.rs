//! A request to a preview host, as the project's pod receives it: whatever the client sent, no
//! trace of ooda's token (query, header or cookie) and no hop-by-hop header passes, and
//! `X-Forwarded-For` ends with the client's address.
//!
//! Input: the request target on the first line, then one `name: value` header per line.
#![no_main]

use std::net::SocketAddr;

use axum::body::Body;
use http::{HeaderName, HeaderValue, Request, header};
use libfuzzer_sys::fuzz_target;
use ooda::gateway::proxy::fuzzing::{is_ooda_cookie, preview_request};
use ooda::gateway::proxy::{TOKEN_HEADER, TOKEN_QUERY};

const HOP_BY_HOP: [&str; 6] =
    ["keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding"];

fuzz_target!(|input: &[u8]| {
    let mut lines = input.split(|b| *b == b'\n');
    let target = lines.next().unwrap_or_default();
    let mut request = Request::builder().uri(target);
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(&line[..colon]), HeaderValue::from_bytes(line[colon + 1..].trim_ascii()))
        else {
            continue;
        };
        request = request.header(name, value);
    }
    let Ok(request) = request.body(Body::empty()) else { return };
    let tls = input.len() % 2 == 0;
    let peer = SocketAddr::from(([127, 0, 0, 9], 40000));

    let (presented, upstream) = preview_request(request, peer, tls);
    assert!(presented.len() <= 128);
    let headers = upstream.headers();
    assert!(!headers.contains_key(TOKEN_HEADER), "the token header passed");
    for cookies in headers.get_all(header::COOKIE) {
        for pair in cookies.as_bytes().split(|b| *b == b';') {
            assert!(!is_ooda_cookie(pair), "ooda's cookie passed: {cookies:?}");
        }
    }
    if let Some(query) = upstream.uri().query() {
        let parameter = format!("{TOKEN_QUERY}=");
        assert!(!query.split('&').any(|p| p.starts_with(&parameter)), "the token parameter passed: {query:?}");
    }
    assert!(upstream.uri().scheme().is_none() && upstream.uri().authority().is_none(), "{:?}", upstream.uri());
    for name in HOP_BY_HOP {
        assert!(!headers.contains_key(name), "{name} passed");
    }
    if let Some(connection) = headers.get(header::CONNECTION) {
        assert_eq!(connection, "upgrade");
        assert!(headers.contains_key(header::UPGRADE));
    }
    let forwarded = headers.get("x-forwarded-for").expect("X-Forwarded-For").to_str().expect("text");
    assert_eq!(forwarded.rsplit(',').next().map(str::trim), Some("127.0.0.9"), "{forwarded:?}");
    assert!(headers.contains_key("x-forwarded-proto") && headers.contains_key(header::HOST));
});
