//! The operator's and gateway's configuration file: any text is loaded or refused with a
//! reason, never a panic or a hang (YAML aliases included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ooda::config::OperatorConfig;

fuzz_target!(|text: &str| {
    if let Err(error) = OperatorConfig::parse("fuzz.yaml", text) {
        assert!(error.to_string().contains("fuzz.yaml"), "the error names the file: {error}");
    }
});
