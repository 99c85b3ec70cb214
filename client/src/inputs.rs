//! Finding the images to submit.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use pixq_jobs::kernel::{Format, Pipeline};

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "tif", "tiff", "bmp", "heic", "heif", "avif"];

fn is_image_name(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Files named directly, plus the image files directly inside named folders, sorted and
/// without duplicates. A named file is taken whatever its extension (the worker decides
/// from its bytes); inside folders only image extensions count.
pub fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).with_context(|| format!("{}: no such file or folder", p.display()))?;
        if meta.is_dir() {
            // A link in the folder is followed only to a file inside it: a folder from
            // elsewhere (an archive, a share) must not bring in ~/.ssh/id_ed25519 as cat.jpg.
            let base = std::fs::canonicalize(p).with_context(|| format!("reading folder {}", p.display()))?;
            let mut outside = 0;
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading folder {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && is_image_name(f))
                .filter(|f| {
                    let linked = f.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink());
                    let inside = !linked || std::fs::canonicalize(f).is_ok_and(|t| t.starts_with(&base));
                    outside += usize::from(!inside);
                    inside
                })
                .collect();
            if outside > 0 {
                eprintln!(
                    "pixq: skipped {outside} link{} in {} pointing outside it (name a file to take it anyway)",
                    if outside == 1 { "" } else { "s" },
                    p.display()
                );
            }
            found.sort();
            out.extend(found);
        } else if meta.is_file() {
            out.push(p.clone());
        } else {
            bail!("{} is not a regular file (a device, a FIFO or a socket is not read)", p.display());
        }
    }
    out.dedup();
    if out.is_empty() {
        bail!(
            "no images found in {} (looked for {} files)",
            paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            IMAGE_EXTENSIONS.join(", ")
        );
    }
    Ok(out)
}

/// Longest output file name made from an input's name, in bytes: file systems allow 255,
/// and a variant's name and extension are added to it.
pub const MAX_NAME_BYTES: usize = 200;

/// The extension an input's output will have: the pipeline's format, else the input's own
/// format sniffed from its first bytes (never from its name), else the name's extension.
/// Opens `path` for reading if it is a regular file, without blocking on a FIFO (one that
/// replaced the file since it was listed).
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    Ok(f)
}

/// A regular file's bytes, at most `max` of them.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let f = open_regular(path)?;
    let len = f.metadata()?.len();
    let mut bytes = Vec::with_capacity(usize::try_from(len.min(max)).unwrap_or(0));
    std::io::Read::read_to_end(&mut std::io::Read::take(f, max), &mut bytes)?;
    Ok(bytes)
}

/// `text` (a file name, a reason from a record) as printed on a terminal: control
/// characters escaped, so a name cannot print lines of its own or terminal escapes.
pub fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) { text.escape_debug().to_string().into() } else { text.into() }
}

/// Whether `name` is one a manifest may give an output in `--out`: one plain file name (no
/// separator, no control character, not hidden, not `.`/`..`), at most 255 bytes. A
/// manifest in a shared store is the store writer's words, not the user's.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}

/// The output extension for `path` from its name alone (no file is opened): the pipeline's
/// format, else the default output of the format its extension names, else the extension.
pub fn output_ext_of_name(pipeline: &Pipeline, path: &Path) -> String {
    if let Some(f) = pipeline.output.format {
        return f.extension().to_string();
    }
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_else(|| "img".into());
    match ext.parse::<Format>() {
        Ok(f) => f.default_output().extension().to_string(),
        Err(_) => ext,
    }
}

pub fn output_ext(pipeline: &Pipeline, path: &Path) -> String {
    if let Some(f) = pipeline.output.format {
        return f.extension().to_string();
    }
    let mut head = [0u8; 32];
    let n = open_regular(path).and_then(|mut f| std::io::Read::read(&mut f, &mut head)).unwrap_or(0);
    match Format::sniff(&head[..n]) {
        Some(f) => f.default_output().extension().to_string(),
        None => path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_else(|| "img".into()),
    }
}

/// Cuts `stem` to at most `max` bytes on a character boundary, marking a cut with a short
/// hash of the whole stem so that two long names sharing a start stay apart.
fn shorten(stem: &str, max: usize) -> String {
    if stem.len() <= max {
        return stem.to_string();
    }
    let tag = &pixq_jobs::keys::content_digest(stem.as_bytes())[7..15];
    let mut cut = max.saturating_sub(tag.len() + 1);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{tag}", &stem[..cut])
}

/// Output file names for a whole input list, assigned before anything is processed, so a
/// name never depends on which jobs succeed. Rule: `<stem>.<ext>`; a name already taken
/// earlier in the list (compared without case, as macOS and Windows do) becomes
/// `<stem>-2.<ext>`, `<stem>-3.<ext>`, ... in input order; a stem too long for
/// [`MAX_NAME_BYTES`] is cut and tagged with a hash of the full stem.
pub fn output_names(inputs: &[PathBuf], exts: &[String]) -> Vec<String> {
    let mut used = std::collections::HashSet::new();
    inputs
        .iter()
        .zip(exts)
        .map(|(p, ext)| {
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
            let stem = if stem.is_empty() || stem.starts_with('.') { format!("image{stem}") } else { stem };
            let stem = shorten(&stem, MAX_NAME_BYTES.saturating_sub(ext.len() + 8).max(16));
            let mut name = format!("{stem}.{ext}");
            let mut n = 2;
            while !used.insert(name.to_lowercase()) {
                name = format!("{stem}-{n}.{ext}");
                n += 1;
            }
            name
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exts(e: &[&str]) -> Vec<String> {
        e.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_print_without_their_control_characters() {
        assert_eq!(shown("cat.jpg"), "cat.jpg");
        assert_eq!(shown("a\n  failed: b.jpg"), "a\\n  failed: b.jpg");
        assert_eq!(shown("x\u{1b}[2Jy"), "x\\u{1b}[2Jy");
    }

    #[test]
    fn colliding_stems_get_numbers() {
        let inputs =
            [PathBuf::from("a/x.jpg"), PathBuf::from("b/x.png"), PathBuf::from("y.gif"), PathBuf::from("c/X.jpg")];
        assert_eq!(
            output_names(&inputs, &exts(&["jpg", "jpg", "png", "jpg"])),
            ["x.jpg", "x-2.jpg", "y.png", "X-3.jpg"]
        );
        // A name that looks like a later numbered one still gets its own.
        let inputs = [PathBuf::from("a/x.jpg"), PathBuf::from("x-2.jpg"), PathBuf::from("b/x.jpg")];
        assert_eq!(output_names(&inputs, &exts(&["jpg", "jpg", "jpg"])), ["x.jpg", "x-2.jpg", "x-3.jpg"]);
    }

    #[test]
    fn long_names_are_cut_and_stay_apart() {
        let a = format!("{}a.jpg", "é".repeat(130));
        let b = format!("{}b.jpg", "é".repeat(130));
        let names = output_names(&[PathBuf::from(&a), PathBuf::from(&b)], &exts(&["webp", "webp"]));
        assert!(names.iter().all(|n| n.len() <= MAX_NAME_BYTES && n.ends_with(".webp")), "{names:?}");
        assert_ne!(names[0], names[1]);
        assert_eq!(output_names(&[PathBuf::from(".hidden")], &exts(&["png"])), ["image.hidden.png"]);
    }

    #[test]
    fn the_extension_comes_from_the_pipeline_or_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let png_named_jpg = dir.path().join("x.jpg");
        std::fs::write(&png_named_jpg, b"\x89PNG\r\n\x1a\n rest").unwrap();
        assert_eq!(output_ext(&Pipeline::default(), &png_named_jpg), "png");
        assert_eq!(output_ext(&Pipeline::parse("format:webp").unwrap(), &png_named_jpg), "webp");
        let text = dir.path().join("notes.TXT");
        std::fs::write(&text, "hello").unwrap();
        assert_eq!(output_ext(&Pipeline::default(), &text), "txt");
    }

    #[test]
    fn missing_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let e = collect(&[dir.path().join("nope")]).unwrap_err();
        assert!(e.to_string().contains("no such file or folder"), "{e}");
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let e = collect(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(e.to_string().contains("no images found"), "{e}");
        std::fs::write(dir.path().join("b.JPG"), "x").unwrap();
        std::fs::write(dir.path().join("a.png"), "x").unwrap();
        let got = collect(&[dir.path().to_path_buf()]).unwrap();
        assert_eq!(
            got.iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect::<Vec<_>>(),
            ["a.png", "b.JPG"]
        );
    }
}
