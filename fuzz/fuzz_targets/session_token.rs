//! A session token as presented: garbage, or a token the gateway issued with bytes changed.
//! Nothing verifies unless it says exactly what was issued: no forged or altered claims, and no
//! panic on any input.
//!
//! Input: an odd first byte edits the issued token (three bytes per edit: what, where, which
//! byte); otherwise the input is the token.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use libfuzzer_sys::fuzz_target;
use ooda::gateway::token::{Claims, Expectations, KeyRing, Membership, SigningKey};

const NOW: i64 = 1_800_000_000;
const EXPECT: Expectations<'static> = Expectations {
    issuer: "ooda",
    audience: "ooda",
    leeway: Duration::from_secs(60),
    session_ttl: Duration::from_secs(12 * 3600),
};

struct Issued {
    ring: KeyRing,
    claims: Claims,
    token: String,
}

fn issued() -> &'static Issued {
    static ISSUED: OnceLock<Issued> = OnceLock::new();
    ISSUED.get_or_init(|| {
        let ring = KeyRing::new(SigningKey::generate());
        let claims = Claims {
            iss: "ooda".into(),
            aud: "ooda".into(),
            sub: "alice@example.test".into(),
            iat: NOW - 10,
            exp: NOW + 3600,
            nbf: None,
            jti: "j1".into(),
            cred: "c1".into(),
            orgs: vec![Membership { org: "acme".into(), role: "member".into() }],
        };
        let token = ring.issue(&claims);
        Issued { ring, claims, token }
    })
}

fuzz_target!(|input: &[u8]| {
    let issued = issued();
    let candidate = match input.split_first() {
        Some((mode, edits)) if mode % 2 == 1 => {
            let mut token = issued.token.clone().into_bytes();
            for edit in edits.chunks_exact(3) {
                let at = edit[1] as usize * token.len() / 256;
                let last = token.len() - 1;
                match edit[0] % 3 {
                    0 => token[at.min(last)] = edit[2],
                    1 => token.insert(at, edit[2]),
                    _ if last > 0 => drop(token.remove(at.min(last))),
                    _ => {}
                }
            }
            let Ok(token) = String::from_utf8(token) else { return };
            token
        }
        _ => {
            let Ok(token) = std::str::from_utf8(input) else { return };
            token.to_owned()
        }
    };
    if let Ok(claims) = issued.ring.verify(&candidate, &EXPECT, Timestamp::from_second(NOW).expect("a time")) {
        assert_eq!(claims, issued.claims, "{candidate:?} verified with other claims");
    }
});
