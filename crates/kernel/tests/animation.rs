//! Animated GIF: the first frame by default, any frame when asked (`frame:N`).

use pixq_kernel::{Error, Format, Limits, Pipeline, process};

/// A 3-frame GIF: red, green, blue.
fn three_frame_gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        for c in [[255u8, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]] {
            let buf = image::RgbaImage::from_pixel(16, 12, image::Rgba(c));
            enc.encode_frame(image::Frame::new(buf)).unwrap();
        }
    }
    out
}

fn first_pixel(pipeline: &str) -> Result<[u8; 3], Error> {
    let out = process(&three_frame_gif(), &Pipeline::parse(pipeline).unwrap(), &Limits::default())?;
    assert_eq!(out.format, Format::Png);
    let img = pixq_kernel::decode(&out.bytes, &Limits::default()).unwrap();
    Ok(img.pixel(8, 6)[..3].try_into().unwrap())
}

#[test]
fn first_frame_unless_asked() {
    let near = |a: [u8; 3], b: [u8; 3]| a.iter().zip(b).all(|(x, y)| x.abs_diff(y) < 8);
    assert!(near(first_pixel("format:png").unwrap(), [255, 0, 0]));
    assert!(near(first_pixel("frame:0,format:png").unwrap(), [255, 0, 0]));
    assert!(near(first_pixel("frame:1,format:png").unwrap(), [0, 255, 0]));
    assert!(near(first_pixel("frame:2,format:png").unwrap(), [0, 0, 255]));
    let err = first_pixel("frame:5,format:png").unwrap_err();
    assert!(err.to_string().contains("only 3 frames"), "{err}");
    assert_eq!(Pipeline::parse("frame:2,invert").unwrap().canonical(), "frame:2,invert");
    assert!(Pipeline::parse("frame:-1").is_err());
}

#[test]
fn frame_on_a_still_format_is_a_clear_error() {
    let png = pixq_kernel::encode(
        &pixq_kernel::Raster::new(4, 4, pixq_kernel::Channels::Rgb),
        Format::Png,
        &Default::default(),
    )
    .unwrap();
    let err = process(&png, &Pipeline::parse("frame:1").unwrap(), &Limits::default()).unwrap_err();
    assert!(err.to_string().contains("single frame"), "{err}");
}
