//! Who the client is: `--trusted-proxies` as configured, and X-Forwarded-For as sent. A peer
//! that is not a trusted proxy is the client, whatever it claims; behind trusted proxies the
//! client is the peer or one of the addresses the header names.
//!
//! Input: the trusted-proxies list on the first line, then one X-Forwarded-For value per line;
//! the peer is the first four bytes.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use ooda::gateway::forwarded::TrustedProxies;

fuzz_target!(|input: &[u8]| {
    let Some((peer, rest)) = input.split_first_chunk::<4>() else { return };
    let peer = IpAddr::V4(Ipv4Addr::from(*peer));
    if peer == FORGED {
        return;
    }
    let mut lines = rest.split(|b| *b == b'\n');
    let Ok(list) = std::str::from_utf8(lines.next().unwrap_or_default()) else { return };
    let Ok(trusted) = list.parse::<TrustedProxies>() else { return };
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", value);
        }
    }
    let client = trusted.client(peer, &headers);
    // Only a trusted peer lets the forged header speak for it.
    if trusted.client(peer, &forged()) == peer {
        assert_eq!(client, peer, "an untrusted peer named another client");
    }
    let named = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .any(|hop| hop.to_canonical() == client);
    assert!(client == peer || named, "{client} is neither the peer nor a forwarded address");
});

const FORGED: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 254));

/// A header naming [`FORGED`], an address the peer is not.
fn forged() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.254"));
    headers
}
