//! A published site's upload (tar or tar.gz): whatever the bytes, every file the reader yields
//! has a clean, unique path inside the site, and the limits hold.
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ooda::sites::archive::{Files, Limits, clean_path};

const LIMITS: Limits = Limits { max_bytes: 1 << 20, max_files: 64, max_file_bytes: 256 << 10, max_ratio: 100 };

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().expect("a runtime"))
}

fuzz_target!(|upload: &[u8]| {
    runtime().block_on(async {
        let Ok(mut files) = Files::new(std::io::Cursor::new(upload.to_vec()), LIMITS).await else { return };
        let (mut seen, mut total) = (HashSet::new(), 0u64);
        while let Ok(Some(mut file)) = files.next().await {
            assert_eq!(clean_path(&file.path).ok().as_deref(), Some(file.path.as_str()), "a clean path");
            assert!(!file.path.split('/').any(|s| s.is_empty() || s == "." || s == ".."), "{:?}", file.path);
            assert!(seen.insert(file.path.clone()), "{:?} twice", file.path);
            assert!(file.size <= LIMITS.max_file_bytes);
            let mut read = 0u64;
            let mut buffer = [0u8; 8192];
            loop {
                match file.read(&mut buffer).await {
                    Ok(0) => break,
                    Ok(n) => read += n as u64,
                    Err(_) => return,
                }
            }
            assert!(read <= file.size, "{read} bytes read of a file of {}", file.size);
            total += read;
        }
        assert!(seen.len() as u64 <= LIMITS.max_files);
        assert!(total <= LIMITS.max_bytes);
    });
});
