//! A path inside an upload: accepted only relative, inside the site and printable; the accepted
//! form is normal (cleaning it again changes nothing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ooda::sites::archive::{MAX_PATH_LEN, clean_path};

fuzz_target!(|raw: &str| {
    let Ok(path) = clean_path(raw) else { return };
    assert!(!path.is_empty() && path.len() <= MAX_PATH_LEN);
    assert!(!path.starts_with('/') && !path.contains('\\'), "{path:?}");
    assert!(!path.split('/').any(|s| s.is_empty() || s == "." || s == ".."), "{path:?}");
    assert!(!path.chars().any(char::is_control), "{path:?}");
    assert_eq!(clean_path(&path).ok().as_deref(), Some(path.as_str()), "normal form");
});
