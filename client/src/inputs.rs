//! Finding the images to submit.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "tif", "tiff", "bmp"];

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
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading folder {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && is_image_name(f))
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
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

/// File names for outputs: `<stem>.<ext>`, with `-2`, `-3`... when stems collide.
pub fn output_names(inputs: &[PathBuf], exts: &[&str]) -> Vec<String> {
    let mut used = std::collections::HashSet::new();
    inputs
        .iter()
        .zip(exts)
        .map(|(p, ext)| {
            let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
            let mut name = format!("{stem}.{ext}");
            let mut n = 2;
            while !used.insert(name.clone()) {
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

    #[test]
    fn colliding_stems_get_numbers() {
        let inputs = [PathBuf::from("a/x.jpg"), PathBuf::from("b/x.png"), PathBuf::from("y.gif")];
        assert_eq!(output_names(&inputs, &["jpg", "jpg", "png"]), ["x.jpg", "x-2.jpg", "y.png"]);
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
