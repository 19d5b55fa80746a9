//! Reading a published site's archive (tar, optionally gzip-compressed) as a stream, one file at
//! a time, refusing anything hostile before it is written anywhere: paths that are absolute or
//! climb out with `..`, names with invisible or direction-changing characters, the same path
//! twice, links, devices, and archives past the limits on size, file count, file size and
//! compression ratio (a gzip bomb is stopped while it inflates, not after). A pax global header
//! (which `git archive` writes first) is metadata and is skipped.

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_compression::tokio::bufread::GzipDecoder;
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader, ReadBuf};
use tokio_tar::{Archive, Entries, Entry, EntryType};

/// What an archive may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sum of all files' sizes.
    pub max_bytes: u64,
    pub max_files: u64,
    pub max_file_bytes: u64,
    /// Inflated bytes per compressed byte, once past [`RATIO_FLOOR`].
    pub max_ratio: u64,
}

impl From<&crate::config::Publishing> for Limits {
    fn from(publishing: &crate::config::Publishing) -> Self {
        Self {
            max_bytes: publishing.max_bytes,
            max_files: publishing.max_files,
            max_file_bytes: publishing.max_file_bytes,
            max_ratio: publishing.max_compression_ratio,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bytes: 512 << 20, max_files: 20_000, max_file_bytes: 100 << 20, max_ratio: 100 }
    }
}

/// Below this many inflated bytes the ratio is not judged: tar pads every file to 512 bytes and
/// ends with a kilobyte of zeros, so small honest archives compress extremely well.
pub const RATIO_FLOOR: u64 = 1 << 20;
/// Longest path accepted inside an archive.
pub const MAX_PATH_LEN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0:?}: paths must be relative and stay inside the site (no leading /, no ..)")]
    UnsafePath(String),
    #[error("{0:?}: names must be UTF-8 without invisible or direction-changing characters")]
    InvisibleCharacters(String),
    #[error("{0:?} appears more than once in the archive")]
    Duplicate(String),
    #[error("{0:?}: links are not allowed in a site archive")]
    Link(String),
    #[error("{0:?}: only regular files and directories are allowed")]
    Special(String),
    #[error("more than {0} files")]
    TooManyFiles(u64),
    #[error("{path:?} is larger than {limit} bytes")]
    FileTooLarge { path: String, limit: u64 },
    #[error("the files add up to more than {0} bytes")]
    TooLarge(u64),
    #[error("the archive inflates more than {0}× its compressed size")]
    Bomb(u64),
    #[error("not a readable tar or tar.gz archive: {0}")]
    Malformed(String),
    #[error("the upload is larger than {0} bytes")]
    UploadTooLarge(u64),
    #[error("the upload sent nothing for {}s", .0.as_secs())]
    Stalled(Duration),
    #[error("reading the upload failed: {0}")]
    Read(io::Error),
}

/// The error an upload's reader fails with past its size limit (carried inside an `io::Error`).
#[derive(Debug, thiserror::Error)]
#[error("the upload is larger than {0} bytes")]
pub struct UploadTooLarge(pub u64);

/// The error an upload's reader fails with when the client stops sending (inside an `io::Error`).
#[derive(Debug, thiserror::Error)]
#[error("the upload sent nothing for {}s", .0.as_secs())]
pub struct UploadStalled(pub Duration);

impl ArchiveError {
    /// Past a limit: the request is too large (413); otherwise it is a bad request (400).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            Self::TooManyFiles(_)
                | Self::FileTooLarge { .. }
                | Self::TooLarge(_)
                | Self::Bomb(_)
                | Self::UploadTooLarge(_)
        )
    }

    fn from_io(error: io::Error) -> Self {
        if let Some(ratio) = error.get_ref().and_then(|e| e.downcast_ref::<RatioExceeded>()) {
            return Self::Bomb(ratio.0);
        }
        if let Some(limit) = error.get_ref().and_then(|e| e.downcast_ref::<UploadTooLarge>()) {
            return Self::UploadTooLarge(limit.0);
        }
        if let Some(stalled) = error.get_ref().and_then(|e| e.downcast_ref::<UploadStalled>()) {
            return Self::Stalled(stalled.0);
        }
        match error.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other => {
                Self::Malformed(error.to_string())
            }
            _ => Self::Read(error),
        }
    }
}

type Source = Pin<Box<dyn AsyncRead + Send>>;

/// The regular files of an archive, in archive order.
pub struct Files {
    /// The archive's stream, read to its end once the tar reader is done with it.
    archive: Archive<Source>,
    entries: Entries<Source>,
    /// Zero bytes at the end of what the tar reader has consumed so far.
    trailing_zeros: Arc<AtomicU64>,
    limits: Limits,
    files: u64,
    bytes: u64,
    /// Every file path so far: a second file under one path would silently replace the first.
    seen: HashSet<String>,
}

/// One file, to be read to its end before asking for the next.
pub struct File {
    pub path: String,
    pub size: u64,
    entry: Entry<Archive<Source>>,
}

impl File {
    /// Reads the next chunk of the file's contents into `buf`; 0 at its end.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, ArchiveError> {
        self.entry.read(buf).await.map_err(ArchiveError::from_io)
    }
}

impl Files {
    /// Starts reading `upload`, detecting gzip by its magic number.
    pub async fn new(upload: impl AsyncRead + Send + 'static, limits: Limits) -> Result<Self, ArchiveError> {
        let compressed = Arc::new(AtomicU64::new(0));
        let upload: Source = Box::pin(upload);
        let mut counted = BufReader::new(Counted { inner: upload, count: compressed.clone() });
        let head = counted.fill_buf().await.map_err(ArchiveError::from_io)?;
        let source: Source = if head.starts_with(&[0x1f, 0x8b]) {
            let inflated = GzipDecoder::new(counted);
            Box::pin(RatioGuard { inner: inflated, compressed, inflated: 0, max_ratio: limits.max_ratio })
        } else {
            Box::pin(counted)
        };
        let trailing_zeros = Arc::new(AtomicU64::new(0));
        let source: Source = Box::pin(ZeroTail { inner: source, trailing_zeros: trailing_zeros.clone() });
        let mut archive = Archive::new(source);
        let entries = archive.entries().map_err(ArchiveError::from_io)?;
        Ok(Self { archive, entries, trailing_zeros, limits, files: 0, bytes: 0, seen: HashSet::new() })
    }

    /// The next regular file, after checking it against the limits; directories are skipped
    /// (a site's directories exist through its files' paths).
    pub async fn next(&mut self) -> Result<Option<File>, ArchiveError> {
        loop {
            let Some(entry) = self.entries.next().await else { return self.ended().await };
            let entry = entry.map_err(ArchiveError::from_io)?;
            let bytes = entry.path_bytes().map_err(ArchiveError::from_io)?;
            let raw = String::from_utf8(bytes.to_vec())
                .map_err(|_| ArchiveError::InvisibleCharacters(String::from_utf8_lossy(&bytes).into_owned()))?;
            match entry.header().entry_type() {
                // `git archive`'s pax global header (the commit id): metadata, not a file.
                EntryType::XGlobalHeader => continue,
                EntryType::Directory => {
                    // `./` (the root) is fine; anything else must stay inside like a file.
                    if raw.split('/').any(|s| !s.is_empty() && s != ".") {
                        clean_path(&raw)?;
                    }
                    continue;
                }
                EntryType::Regular | EntryType::Continuous => {}
                EntryType::Symlink | EntryType::Link => return Err(ArchiveError::Link(raw)),
                _ => return Err(ArchiveError::Special(raw)),
            }
            let path = clean_path(&raw)?;
            if !self.seen.insert(path.clone()) {
                return Err(ArchiveError::Duplicate(path));
            }
            let size = entry.effective_size();
            self.files += 1;
            if self.files > self.limits.max_files {
                return Err(ArchiveError::TooManyFiles(self.limits.max_files));
            }
            if size > self.limits.max_file_bytes {
                return Err(ArchiveError::FileTooLarge { path, limit: self.limits.max_file_bytes });
            }
            self.bytes += size;
            if self.bytes > self.limits.max_bytes {
                return Err(ArchiveError::TooLarge(self.limits.max_bytes));
            }
            return Ok(Some(File { path, size, entry }));
        }
    }
}

impl Files {
    /// The tar reader ends at an all-zero header block, or at the end of the stream. Only the
    /// first is a whole archive: a stream that stops between two files (an upload cut short,
    /// a `tar` that died) would otherwise publish a site with files missing. What follows the
    /// end marker (padding) is read too, within the same limits, so gzip checks its trailer.
    async fn ended(&mut self) -> Result<Option<File>, ArchiveError> {
        if self.trailing_zeros.load(Ordering::Relaxed) < 512 {
            return Err(ArchiveError::Malformed(
                "the archive stops before its end-of-archive marker: it was cut short".into(),
            ));
        }
        tokio::io::copy(&mut self.archive, &mut tokio::io::sink()).await.map_err(ArchiveError::from_io)?;
        Ok(None)
    }
}

/// A path inside the site: relative, `/`-separated, normalised (`./` and empty segments
/// dropped), never climbing out, printable, and of bounded length.
pub fn clean_path(raw: &str) -> Result<String, ArchiveError> {
    let unsafe_path = || ArchiveError::UnsafePath(raw.to_owned());
    if raw.starts_with('/') || raw.contains('\\') || raw.len() > MAX_PATH_LEN || raw.chars().any(char::is_control) {
        return Err(unsafe_path());
    }
    if raw.chars().any(is_invisible_format) {
        return Err(ArchiveError::InvisibleCharacters(raw.to_owned()));
    }
    let mut segments = Vec::new();
    for segment in raw.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(unsafe_path()),
            s => segments.push(s),
        }
    }
    if segments.is_empty() {
        return Err(unsafe_path());
    }
    Ok(segments.join("/"))
}

/// Unicode format characters (general category Cf): bidirectional overrides and isolates, zero-
/// width characters, the byte-order mark, tags… They change how a name looks, or make two names
/// look alike, without being seen.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c as u32,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.count.fetch_add(read, Ordering::Relaxed);
        polled
    }
}

/// Counts the zero bytes at the end of what has been read through it.
struct ZeroTail<R> {
    inner: R,
    trailing_zeros: Arc<AtomicU64>,
}

impl<R: AsyncRead + Unpin> AsyncRead for ZeroTail<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if let Some(last_nonzero) = read.iter().rposition(|&b| b != 0) {
            self.trailing_zeros.store((read.len() - last_nonzero - 1) as u64, Ordering::Relaxed);
        } else {
            self.trailing_zeros.fetch_add(read.len() as u64, Ordering::Relaxed);
        }
        polled
    }
}

#[derive(Debug, thiserror::Error)]
#[error("compression ratio above {0}")]
struct RatioExceeded(u64);

/// Fails the read as soon as the inflated output outgrows `max_ratio` × the compressed input.
struct RatioGuard<R> {
    inner: R,
    compressed: Arc<AtomicU64>,
    inflated: u64,
    max_ratio: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for RatioGuard<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.inflated += (buf.filled().len() - before) as u64;
        let compressed = self.compressed.load(Ordering::Relaxed).max(1);
        if self.inflated > RATIO_FLOOR && self.inflated / compressed > self.max_ratio {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, RatioExceeded(self.max_ratio))));
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar archive built header by header, so tests can write what `tar` itself would refuse.
    fn tar(entries: &[(&str, EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, kind, data, link) in entries {
            let mut header = tokio_tar::Header::new_gnu();
            // Set the name bytes directly: `set_path` itself refuses `..` and absolute paths.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if let Some(target) = link {
                header.set_link_name(target).expect("link name");
            }
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().next_multiple_of(512), 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).expect("compress");
        encoder.finish().expect("compress")
    }

    async fn read_all(archive: Vec<u8>, limits: Limits) -> Result<Vec<(String, Vec<u8>)>, ArchiveError> {
        let mut files = Files::new(std::io::Cursor::new(archive), limits).await?;
        let mut out = Vec::new();
        while let Some(mut file) = files.next().await? {
            let mut contents = Vec::new();
            let mut buf = [0u8; 1000];
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                contents.extend_from_slice(&buf[..n]);
            }
            assert_eq!(contents.len() as u64, file.size);
            out.push((file.path, contents));
        }
        Ok(out)
    }

    const FILE: EntryType = EntryType::Regular;

    #[tokio::test]
    async fn plain_and_gzipped_archives_yield_their_files_with_clean_paths() {
        let archive = tar(&[
            ("./", EntryType::Directory, b"", None),
            ("./index.html", FILE, b"<h1>hi</h1>", None),
            ("assets//app.js", FILE, &[b'x'; 3000], None),
        ]);
        let expected =
            vec![("index.html".to_owned(), b"<h1>hi</h1>".to_vec()), ("assets/app.js".to_owned(), vec![b'x'; 3000])];
        assert_eq!(read_all(archive.clone(), Limits::default()).await.unwrap(), expected);
        assert_eq!(read_all(gzip(&archive), Limits::default()).await.unwrap(), expected);
    }

    #[tokio::test]
    async fn an_archive_cut_short_is_refused_even_at_a_file_boundary() {
        let whole = tar(&[("index.html", FILE, b"<h1>hi</h1>", None), ("about.html", FILE, &[b'a'; 700], None)]);
        // Without its end-of-archive blocks, and cut after the first file's last block.
        let unterminated = whole[..whole.len() - 1024].to_vec();
        let after_first = whole[..1024].to_vec();
        let mid_file = whole[..1024 + 512 + 100].to_vec();
        for (name, cut) in
            [("unterminated", unterminated), ("after the first file", after_first), ("mid-file", mid_file)]
        {
            let error = read_all(cut.clone(), Limits::default()).await.expect_err(name);
            assert!(matches!(error, ArchiveError::Malformed(_)), "{name}: {error}");
            let gzipped = gzip(&cut);
            let error = read_all(gzipped, Limits::default()).await.expect_err(name);
            assert!(matches!(error, ArchiveError::Malformed(_)), "{name}, gzipped: {error}");
        }
        // A whole gzip stream whose trailer is cut off.
        let compressed = gzip(&whole);
        let error =
            read_all(compressed[..compressed.len() - 4].to_vec(), Limits::default()).await.expect_err("trailer");
        assert!(matches!(error, ArchiveError::Malformed(_)), "{error}");
    }

    #[tokio::test]
    async fn traversal_absolute_paths_links_and_devices_are_refused() {
        type Expected = fn(&ArchiveError) -> bool;
        let cases: [(&str, EntryType, Option<&str>, Expected); 6] = [
            ("../escape.html", FILE, None, |e| matches!(e, ArchiveError::UnsafePath(_))),
            ("a/../../escape.html", FILE, None, |e| matches!(e, ArchiveError::UnsafePath(_))),
            ("/etc/passwd", FILE, None, |e| matches!(e, ArchiveError::UnsafePath(_))),
            ("link", EntryType::Symlink, Some("/etc/passwd"), |e| matches!(e, ArchiveError::Link(_))),
            ("hard", EntryType::Link, Some("index.html"), |e| matches!(e, ArchiveError::Link(_))),
            ("dev", EntryType::Char, None, |e| matches!(e, ArchiveError::Special(_))),
        ];
        for (path, kind, link, expected) in cases {
            let archive = tar(&[("index.html", FILE, b"ok", None), (path, kind, b"", link)]);
            let error = read_all(archive, Limits::default()).await.expect_err(path);
            assert!(expected(&error), "{path}: {error}");
            assert!(!error.is_too_large());
        }
    }

    #[tokio::test]
    async fn limits_on_files_sizes_and_totals_are_enforced() {
        let limits = Limits { max_bytes: 10, max_files: 2, max_file_bytes: 6, max_ratio: 100 };
        let three = tar(&[("a", FILE, b"1", None), ("b", FILE, b"2", None), ("c", FILE, b"3", None)]);
        assert!(matches!(read_all(three, limits).await, Err(ArchiveError::TooManyFiles(2))));
        let big = tar(&[("big", FILE, b"1234567", None)]);
        assert!(matches!(read_all(big, limits).await, Err(ArchiveError::FileTooLarge { .. })));
        let total = tar(&[("a", FILE, b"123456", None), ("b", FILE, b"123456", None)]);
        let error = read_all(total, limits).await.unwrap_err();
        assert!(matches!(error, ArchiveError::TooLarge(10)) && error.is_too_large());
    }

    #[tokio::test]
    async fn a_gzip_bomb_is_stopped_while_it_inflates() {
        let zeros = vec![0u8; 64 << 20];
        let bomb = gzip(&tar(&[("zeros", FILE, &zeros, None)]));
        assert!(bomb.len() < 200_000, "{}", bomb.len());
        let limits = Limits { max_bytes: 1 << 30, max_file_bytes: 1 << 30, ..Limits::default() };
        let error = read_all(bomb, limits).await.unwrap_err();
        assert!(matches!(error, ArchiveError::Bomb(100)), "{error}");
    }

    #[tokio::test]
    async fn garbage_is_malformed_not_a_crash() {
        let error = read_all(b"this is not a tar archive at all, not even close........".repeat(20), Limits::default())
            .await
            .unwrap_err();
        assert!(matches!(error, ArchiveError::Malformed(_)), "{error}");
    }

    #[tokio::test]
    async fn the_same_path_twice_is_refused_however_it_is_spelt() {
        for second in ["index.html", "./index.html", ".//index.html"] {
            let archive = tar(&[("index.html", FILE, b"first", None), (second, FILE, b"second", None)]);
            let error = read_all(archive, Limits::default()).await.expect_err(second);
            assert!(matches!(&error, ArchiveError::Duplicate(path) if path == "index.html"), "{second}: {error}");
        }
    }

    #[tokio::test]
    async fn invisible_and_direction_changing_characters_are_refused() {
        // "index\u{202e}lmth.txt" shows as "indextxt.html"; the others look like plain names.
        for name in ["index\u{202e}lmth.txt", "a\u{200b}.html", "\u{feff}index.html", "x\u{2066}y.css", "t\u{e0041}.js"]
        {
            let archive = tar(&[(name, FILE, b"x", None)]);
            let error = read_all(archive, Limits::default()).await.expect_err(name);
            assert!(matches!(error, ArchiveError::InvisibleCharacters(_)), "{name:?}: {error}");
        }
        let mut invalid_utf8 = tar(&[("ab.html", FILE, b"x", None)]);
        invalid_utf8[1] = 0xff;
        let header = tokio_tar::Header::from_byte_slice(&invalid_utf8[..512]);
        let mut header = header.clone();
        header.set_cksum();
        invalid_utf8[..512].copy_from_slice(header.as_bytes());
        let error = read_all(invalid_utf8, Limits::default()).await.unwrap_err();
        assert!(matches!(error, ArchiveError::InvisibleCharacters(_)), "{error}");
        // Visible non-ASCII names are fine.
        let archive = tar(&[("café/naïve.html", FILE, b"x", None)]);
        assert_eq!(read_all(archive, Limits::default()).await.unwrap()[0].0, "café/naïve.html");
    }

    #[tokio::test]
    async fn git_archive_output_is_accepted_and_its_global_header_is_not_a_file() {
        let repo = tempdir("git-archive");
        let git = |args: &[&str]| {
            let output = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
                .args(args)
                .current_dir(&repo)
                .output()
                .expect("git runs");
            assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
            output.stdout
        };
        git(&["init", "-q"]);
        std::fs::create_dir_all(repo.join("css")).unwrap();
        std::fs::write(repo.join("index.html"), "<h1>site</h1>").unwrap();
        std::fs::write(repo.join("css/site.css"), "h1{}").unwrap();
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "site"]);
        let archive = git(&["archive", "--format=tar", "HEAD"]);
        assert_eq!(&archive[156..157], b"g", "git archive starts with a pax global header");
        let files = read_all(archive, Limits::default()).await.unwrap();
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["css/site.css", "index.html"]);
        let gzipped = git(&["archive", "--format=tar.gz", "HEAD"]);
        assert_eq!(read_all(gzipped, Limits::default()).await.unwrap(), files);
        std::fs::remove_dir_all(&repo).ok();
    }

    fn tempdir(name: &str) -> std::path::PathBuf {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).unwrap();
        let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let dir = std::env::temp_dir().join(format!("ooda-{name}-{hex}"));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn paths_are_normalised_or_refused() {
        assert_eq!(clean_path("./a/./b//c.html").unwrap(), "a/b/c.html");
        for bad in ["", ".", "/a", "a/../../b", "..", "a\\b", "a\u{0}b", &"x".repeat(MAX_PATH_LEN + 1)] {
            assert!(clean_path(bad).is_err(), "{bad:?}");
        }
    }
}
