//! Image formats, recognised from their leading bytes (never from a file name).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A container format pixq reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JPEG (baseline and progressive).
    Jpeg,
    /// PNG.
    Png,
    /// WebP (written lossless).
    Webp,
    /// GIF (first frame).
    Gif,
    /// TIFF.
    Tiff,
    /// Windows bitmap.
    Bmp,
    /// AVIF (AV1 in HEIF): written (feature `avif`), and read with feature `heif`.
    Avif,
    /// HEIC (HEVC in HEIF, as phones take photos): read with feature `heif`, not written;
    /// its default output is JPEG.
    Heic,
}

impl Format {
    /// Every format, in a stable order.
    pub const ALL: [Format; 8] =
        [Format::Jpeg, Format::Png, Format::Webp, Format::Gif, Format::Tiff, Format::Bmp, Format::Avif, Format::Heic];

    /// The formats this build decodes (AVIF and HEIC with the `heif` feature).
    #[cfg(feature = "heif")]
    pub const READ: [Format; 8] = Format::ALL;
    /// The formats this build decodes (AVIF and HEIC with the `heif` feature).
    #[cfg(not(feature = "heif"))]
    pub const READ: [Format; 6] = [Format::Jpeg, Format::Png, Format::Webp, Format::Gif, Format::Tiff, Format::Bmp];

    /// The formats pixq writes (HEIC is read only).
    pub const WRITE: [Format; 7] =
        [Format::Jpeg, Format::Png, Format::Webp, Format::Gif, Format::Tiff, Format::Bmp, Format::Avif];

    /// The output format when the pipeline names none: the input's, or JPEG for a HEIC.
    pub fn default_output(self) -> Format {
        if self == Format::Heic { Format::Jpeg } else { self }
    }

    /// Sniffs the format from the first bytes of a file.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        match bytes {
            [0xFF, 0xD8, 0xFF, ..] => Some(Format::Jpeg),
            [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(Format::Png),
            [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some(Format::Webp),
            [b'G', b'I', b'F', b'8', b'7' | b'9', b'a', ..] => Some(Format::Gif),
            [b'I', b'I', 42, 0, ..] | [b'M', b'M', 0, 42, ..] => Some(Format::Tiff),
            [b'B', b'M', ..] if bytes.len() >= 26 => Some(Format::Bmp),
            [_, _, _, _, b'f', b't', b'y', b'p', ..] => Self::sniff_heif(bytes),
            _ => None,
        }
    }

    /// An ISO-BMFF file by its `ftyp` box: AVIF or HEIC by the major brand, or for the
    /// generic HEIF brands (`mif1`, `msf1`) by the compatible brands listed after it.
    fn sniff_heif(bytes: &[u8]) -> Option<Format> {
        let size = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let brand = |b: &[u8]| match b {
            b"avif" | b"avis" => Some(Format::Avif),
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"hevm" | b"hevs" => Some(Format::Heic),
            _ => None,
        };
        if let Some(f) = brand(bytes.get(8..12)?) {
            return Some(f);
        }
        if !matches!(bytes.get(8..12)?, b"mif1" | b"msf1") {
            return None;
        }
        // Compatible brands follow the major brand and the minor version.
        let end = size.min(bytes.len()).min(256);
        bytes.get(16..end)?.chunks_exact(4).find_map(brand)
    }

    /// The usual file extension, without a dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jpeg => "jpg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Gif => "gif",
            Format::Tiff => "tiff",
            Format::Bmp => "bmp",
            Format::Avif => "avif",
            Format::Heic => "heic",
        }
    }

    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Gif => "image/gif",
            Format::Tiff => "image/tiff",
            Format::Bmp => "image/bmp",
            Format::Avif => "image/avif",
            Format::Heic => "image/heic",
        }
    }

    /// Whether the format can carry an alpha channel.
    pub fn supports_alpha(self) -> bool {
        !matches!(self, Format::Jpeg)
    }

    /// The `image` crate's name for the formats it decodes or encodes for pixq (AVIF and
    /// HEIC go through ravif and libheif instead).
    pub(crate) fn to_image_format(self) -> Option<image::ImageFormat> {
        Some(match self {
            Format::Jpeg => image::ImageFormat::Jpeg,
            Format::Png => image::ImageFormat::Png,
            Format::Webp => image::ImageFormat::WebP,
            Format::Gif => image::ImageFormat::Gif,
            Format::Tiff => image::ImageFormat::Tiff,
            Format::Bmp => image::ImageFormat::Bmp,
            Format::Avif | Format::Heic => return None,
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Gif => "gif",
            Format::Tiff => "tiff",
            Format::Bmp => "bmp",
            Format::Avif => "avif",
            Format::Heic => "heic",
        })
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Format::Jpeg,
            "png" => Format::Png,
            "webp" => Format::Webp,
            "gif" => Format::Gif,
            "tiff" | "tif" => Format::Tiff,
            "bmp" => Format::Bmp,
            "avif" => Format::Avif,
            "heic" | "heif" => Format::Heic,
            other => {
                return Err(format!("unknown format '{other}' (expected jpeg, png, webp, avif, gif, tiff or bmp)"));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_magic_bytes_not_names() {
        assert_eq!(Format::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Format::Jpeg));
        assert_eq!(Format::sniff(b"\x89PNG\r\n\x1a\n...."), Some(Format::Png));
        assert_eq!(Format::sniff(b"RIFF\0\0\0\0WEBPVP8L"), Some(Format::Webp));
        assert_eq!(Format::sniff(b"GIF89a"), Some(Format::Gif));
        assert_eq!(Format::sniff(b"II*\0"), Some(Format::Tiff));
        assert_eq!(Format::sniff(b"hello, I am text"), None);
        assert_eq!(Format::sniff(b""), None);
    }

    #[test]
    fn names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
            assert_eq!(f.extension().parse::<Format>().unwrap(), f);
        }
        assert_eq!("HEIF".parse::<Format>(), Ok(Format::Heic));
        assert!("jxl".parse::<Format>().is_err());
    }

    #[test]
    fn heif_files_are_told_apart_by_their_brands() {
        let ftyp = |major: &[u8; 4], compat: &[&[u8; 4]]| {
            let mut b = ((16 + 4 * compat.len()) as u32).to_be_bytes().to_vec();
            b.extend_from_slice(b"ftyp");
            b.extend_from_slice(major);
            b.extend_from_slice(&[0, 0, 0, 0]);
            compat.iter().for_each(|c| b.extend_from_slice(*c));
            b
        };
        assert_eq!(Format::sniff(&ftyp(b"avif", &[b"mif1"])), Some(Format::Avif));
        assert_eq!(Format::sniff(&ftyp(b"heic", &[b"mif1", b"heic"])), Some(Format::Heic));
        assert_eq!(Format::sniff(&ftyp(b"mif1", &[b"mif1", b"avif"])), Some(Format::Avif));
        assert_eq!(Format::sniff(&ftyp(b"mif1", &[b"heic"])), Some(Format::Heic));
        // Other ISO-BMFF files (MP4 video, a bare generic HEIF) are not images pixq reads.
        assert_eq!(Format::sniff(&ftyp(b"isom", &[b"avc1"])), None);
        assert_eq!(Format::sniff(&ftyp(b"mif1", &[b"mif1"])), None);
        // A size field that lies does not read past the bytes.
        let mut lying = ftyp(b"mif1", &[b"heic"]);
        lying[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Format::sniff(&lying), Some(Format::Heic));
        assert_eq!(Format::sniff(&lying[..14]), None);
        // Every prefix of every brand layout: no panic, no read past the end.
        for b in [ftyp(b"mif1", &[b"heic"]), ftyp(b"avif", &[]), lying.clone()] {
            for n in 0..=b.len() {
                let _ = Format::sniff(&b[..n]);
            }
        }
        assert_eq!(Format::Heic.default_output(), Format::Jpeg);
        assert_eq!(Format::Avif.default_output(), Format::Avif);
    }
}
