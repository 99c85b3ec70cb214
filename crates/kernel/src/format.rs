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
    /// AVIF (AV1 in HEIF): written, not read.
    Avif,
}

impl Format {
    /// Every format, in a stable order.
    pub const ALL: [Format; 7] =
        [Format::Jpeg, Format::Png, Format::Webp, Format::Gif, Format::Tiff, Format::Bmp, Format::Avif];

    /// The formats this build decodes (AVIF is output only).
    pub const READ: [Format; 6] = [Format::Jpeg, Format::Png, Format::Webp, Format::Gif, Format::Tiff, Format::Bmp];

    /// Sniffs the format from the first bytes of a file.
    pub fn sniff(bytes: &[u8]) -> Option<Format> {
        match bytes {
            [0xFF, 0xD8, 0xFF, ..] => Some(Format::Jpeg),
            [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(Format::Png),
            [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some(Format::Webp),
            [b'G', b'I', b'F', b'8', b'7' | b'9', b'a', ..] => Some(Format::Gif),
            [b'I', b'I', 42, 0, ..] | [b'M', b'M', 0, 42, ..] => Some(Format::Tiff),
            [b'B', b'M', ..] if bytes.len() >= 26 => Some(Format::Bmp),
            [_, _, _, _, b'f', b't', b'y', b'p', b'a', b'v', b'i', b'f' | b's', ..] => Some(Format::Avif),
            _ => None,
        }
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
        }
    }

    /// Whether the format can carry an alpha channel.
    pub fn supports_alpha(self) -> bool {
        !matches!(self, Format::Jpeg)
    }

    pub(crate) fn to_image_format(self) -> image::ImageFormat {
        match self {
            Format::Jpeg => image::ImageFormat::Jpeg,
            Format::Png => image::ImageFormat::Png,
            Format::Webp => image::ImageFormat::WebP,
            Format::Gif => image::ImageFormat::Gif,
            Format::Tiff => image::ImageFormat::Tiff,
            Format::Bmp => image::ImageFormat::Bmp,
            Format::Avif => image::ImageFormat::Avif,
        }
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
        assert!("heic".parse::<Format>().is_err());
    }
}
