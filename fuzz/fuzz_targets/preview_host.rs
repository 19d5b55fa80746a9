//! The Host header of a preview or site request: a project host has one reading,
//! `<project>--<organisation>.<domain>[:port]`, with both names DNS labels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ooda::crd::names::parse_host_label;
use ooda::gateway::proxy::host_label;

const DOMAIN: &str = "preview.example.test";

fuzz_target!(|host: &str| {
    let Some(label) = host_label(host, DOMAIN) else { return };
    assert!(!label.is_empty() && !label.contains('.'), "{label:?}");
    assert!(host.starts_with(&format!("{label}.{DOMAIN}")), "{host:?} → {label:?}");
    let Some((project, organisation)) = parse_host_label(label) else { return };
    assert_eq!(format!("{project}--{organisation}"), label);
    for name in [project, organisation] {
        assert!(!name.is_empty() && !name.contains("--") && !name.starts_with('-') && !name.ends_with('-'));
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{name:?}");
    }
});
