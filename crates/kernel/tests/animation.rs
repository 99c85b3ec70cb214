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

// ---------- animations kept as animations ----------

/// A GIF of `frames` frames (w x h): frame k is a solid colour with a `sq`-pixel black square
/// at x = 4k (transparent elsewhere when `clear`), shown for `delays[k]` ms, repeated
/// `repeat` times after the first play (`None`: no NETSCAPE block, plays once).
fn gif(w: u16, h: u16, delays: &[u16], repeat: Option<gif::Repeat>, clear: bool) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, w, h, &[]).unwrap();
        if let Some(r) = repeat {
            enc.set_repeat(r).unwrap();
        }
        for (k, &d) in delays.iter().enumerate() {
            let colour = [[220u8, 30, 30], [30, 200, 30], [30, 30, 220], [200, 200, 30]][k % 4];
            let mut px = Vec::with_capacity(usize::from(w) * usize::from(h) * 4);
            for y in 0..h {
                for x in 0..w {
                    let inside = usize::from(x) / 8 == k && y < 8;
                    px.extend_from_slice(&match (inside, clear) {
                        (true, _) => [0, 0, 0, 255],
                        (false, true) => [0, 0, 0, 0],
                        (false, false) => [colour[0], colour[1], colour[2], 255],
                    });
                }
            }
            let mut f = gif::Frame::from_rgba(w, h, &mut px);
            f.delay = d / 10;
            f.dispose = gif::DisposalMethod::Background;
            enc.write_frame(&f).unwrap();
        }
    }
    out
}

/// Frames of an animated GIF or WebP as the `image` crate decodes them: (delay ms, RGBA).
fn frames_of(bytes: &[u8]) -> Vec<(u32, image::RgbaImage)> {
    use image::AnimationDecoder;
    let cur = std::io::Cursor::new(bytes);
    let frames = match Format::sniff(bytes) {
        Some(Format::Gif) => image::codecs::gif::GifDecoder::new(cur).unwrap().into_frames(),
        Some(Format::Webp) => image::codecs::webp::WebPDecoder::new(cur).unwrap().into_frames(),
        other => panic!("not an animation: {other:?}"),
    };
    frames
        .map(|f| {
            let f = f.unwrap();
            let (n, d) = f.delay().numer_denom_ms();
            (n / d, f.into_buffer())
        })
        .collect()
}

fn run(input: &[u8], pipeline: &str) -> Result<pixq_kernel::Output, Error> {
    process(input, &Pipeline::parse(pipeline).unwrap(), &Limits::default())
}

fn near(a: &[u8], b: &[u8]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(*y) < 24)
}

#[test]
fn a_gif_stays_animated_through_geometry_and_colour_steps() {
    let src = gif(64, 48, &[100, 200, 300], Some(gif::Repeat::Finite(2)), false);
    let out = run(&src, "thumbnail:32,rotate:90,invert").unwrap();
    assert_eq!((out.format, out.width, out.height), (Format::Gif, 24, 32));
    let frames = frames_of(&out.bytes);
    assert_eq!(frames.iter().map(|f| f.0).collect::<Vec<_>>(), [100, 200, 300], "delays kept");
    // Each frame is its own colour, inverted (checked away from the square).
    for (k, want) in [[35u8, 225, 225], [225, 55, 225], [225, 225, 35]].iter().enumerate() {
        let img = &frames[k].1;
        assert_eq!(img.dimensions(), (24, 32));
        assert!(near(&img.get_pixel(4, 28).0[..3], want), "frame {k}: {:?}", img.get_pixel(4, 28));
    }
    // The repeat count is kept, read back by the gif crate's own decoder.
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let mut dec = opts.read_info(&out.bytes[..]).unwrap();
    while dec.read_next_frame().unwrap().is_some() {}
    assert_eq!(dec.repeat(), gif::Repeat::Finite(2));
    // A GIF that plays once (no NETSCAPE block) comes out playing once, and one that loops
    // forever loops forever.
    let once = run(&gif(16, 16, &[50, 50], None, false), "resize:8:8").unwrap();
    assert_eq!(pixq_kernel::anim::scan(&once.bytes, Format::Gif).unwrap().plays, 1);
    assert!(!once.bytes.windows(11).any(|w| w == b"NETSCAPE2.0"));
    let forever = run(&gif(16, 16, &[50, 50], Some(gif::Repeat::Infinite), false), "grayscale").unwrap();
    assert_eq!(pixq_kernel::anim::scan(&forever.bytes, Format::Gif).unwrap().plays, 0);
    assert_eq!(frames_of(&forever.bytes).len(), 2);
}

#[test]
fn a_gif_becomes_an_animated_webp_with_its_delays_loop_and_transparency() {
    let src = gif(64, 48, &[100, 200, 300, 40], Some(gif::Repeat::Finite(2)), true);
    for p in ["format:webp", "format:webp,lossless", "thumbnail:32,format:webp,quality:90"] {
        let out = run(&src, p).unwrap();
        assert_eq!(out.format, Format::Webp, "{p}");
        // libwebp's own demuxer and decoder read the file we muxed.
        let anim = webp::AnimDecoder::new(&out.bytes).decode().unwrap_or_else(|e| panic!("{p}: libwebp: {e}"));
        assert_eq!(anim.len(), 4, "{p}");
        assert_eq!(anim.loop_count, 3, "{p}: GIF repeat 2 = 3 plays");
        let starts: Vec<i32> = (0..4).map(|k| anim.get_frame(k).unwrap().get_time_ms()).collect();
        // libwebp reports each frame's end time.
        assert_eq!(starts, [100, 300, 600, 640], "{p}");
        // The `image` crate's decoder agrees, and the black square moves: where it was is
        // transparent again in the next frame (frames are drawn without blending).
        let frames = frames_of(&out.bytes);
        assert_eq!(frames.iter().map(|f| f.0).collect::<Vec<_>>(), [100, 200, 300, 40], "{p}");
        let s = out.width as f32 / 64.0;
        let at = |x: f32, y: f32| ((x * s) as u32, (y * s) as u32);
        for (k, (_, img)) in frames.iter().enumerate() {
            let (x, y) = at(8.0 * k as f32 + 4.0, 3.0);
            assert!(img.get_pixel(x, y).0[3] > 200, "{p}: frame {k} square opaque");
            assert!(img.get_pixel(x, y).0[0] < 60, "{p}: frame {k} square black");
            if k > 0 {
                let (x, y) = at(8.0 * (k - 1) as f32 + 4.0, 3.0);
                assert!(img.get_pixel(x, y).0[3] < 40, "{p}: frame {k}: the old square is cleared");
            }
            let (x, y) = at(60.0, 40.0);
            assert!(img.get_pixel(x, y).0[3] < 40, "{p}: frame {k} background transparent");
        }
    }
}

#[test]
fn an_animated_webp_stays_animated() {
    // Made by libwebp's own animation encoder, not ours.
    let cfg = webp::WebPConfig::new().unwrap();
    let pix: Vec<Vec<u8>> =
        (0..3u8).map(|k| (0..40 * 30).flat_map(|_| [k * 100, 255 - k * 100, 60, 255]).collect()).collect();
    let mut enc = webp::AnimEncoder::new(40, 30, &cfg);
    enc.set_loop_count(0);
    for (k, p) in pix.iter().enumerate() {
        enc.add_frame(webp::AnimFrame::from_rgba(p, 40, 30, k as i32 * 150));
    }
    let src = enc.try_encode().unwrap().to_vec();
    assert_eq!(pixq_kernel::anim::scan(&src, Format::Webp).map(|a| a.frames), Some(3));
    let out = run(&src, "resize:20:15,flip:h").unwrap();
    assert_eq!((out.format, out.width, out.height), (Format::Webp, 20, 15));
    let anim = webp::AnimDecoder::new(&out.bytes).decode().unwrap();
    assert_eq!((anim.len(), anim.loop_count), (3, 0));
    let frames = frames_of(&out.bytes);
    for (k, (_, img)) in frames.iter().enumerate() {
        let want = [k as u8 * 100, 255 - k as u8 * 100, 60];
        assert!(near(&img.get_pixel(10, 7).0[..3], &want), "frame {k}: {:?}", img.get_pixel(10, 7));
    }
    // To GIF, and to a still (the first frame) when the output format holds no animation.
    let g = run(&src, "format:gif").unwrap();
    assert_eq!(frames_of(&g.bytes).len(), 3);
    let still = run(&src, "format:png").unwrap();
    assert_eq!(still.format, Format::Png);
    let first = pixq_kernel::decode(&still.bytes, &Limits::default()).unwrap();
    assert!(near(&first.pixel(5, 5)[..3], &[0, 255, 60]));
}

#[test]
fn frame_limits_are_checked_from_the_blocks_before_decoding() {
    let src = gif(32, 32, &[100; 5], None, false);
    let p = Pipeline::parse("thumbnail:16").unwrap();
    let err = process(&src, &p, &Limits::default().max_frames(4)).unwrap_err();
    assert!(matches!(err, Error::AnimationTooLarge { frames: 5, .. }), "{err}");
    assert!(err.is_limit() && err.to_string().contains("4 frames"), "{err}");
    let err = process(&src, &p, &Limits::default().max_animation_pixels(5 * 32 * 32 - 1)).unwrap_err();
    assert!(matches!(err, Error::AnimationTooLarge { pixels: 5120, .. }), "{err}");
    // The same limits let a still output through (one frame), and `frame:N` when the N+1
    // canvases it decodes are within them.
    let one = Limits::default().max_frames(4).max_animation_pixels(1024);
    assert!(process(&src, &Pipeline::parse("thumbnail:16,format:png").unwrap(), &one).is_ok());
    let err = process(&src, &Pipeline::parse("frame:3,format:png").unwrap(), &one).unwrap_err();
    assert!(matches!(err, Error::AnimationTooLarge { frames: 4, pixels: 4096, .. }), "{err}");
    assert!(err.to_string().contains("frame:3 decodes the frames before it"), "{err}");
    let tight = Limits::default().max_frames(4).max_animation_pixels(4 * 1024);
    assert!(process(&src, &Pipeline::parse("frame:3,format:png").unwrap(), &tight).is_ok());
    let err = process(&src, &Pipeline::parse("frame:4,format:png").unwrap(), &tight).unwrap_err();
    assert!(matches!(err, Error::AnimationTooLarge { .. }), "{err}");
    // A frame past the end is known from the blocks, before any decoding.
    let err = run(&src, "frame:7").unwrap_err();
    assert!(err.to_string().contains("only 5 frames"), "{err}");
    // Thousands of frames on a large canvas, each frame one pixel of data: refused from the
    // walk over the blocks (the decode would compose every frame on the whole canvas).
    let mut bomb = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut bomb, 4000, 4000, &[0, 0, 0]).unwrap();
        for _ in 0..2000 {
            let mut f = gif::Frame::from_palette_pixels(1, 1, [0u8], [0u8, 0, 0], None);
            f.delay = 1;
            enc.write_frame(&f).unwrap();
        }
    }
    let err = run(&bomb, "thumbnail:16").unwrap_err();
    assert!(matches!(err, Error::AnimationTooLarge { frames: 2000, .. }), "{err}");
}

#[test]
fn steps_that_cannot_apply_to_every_frame_are_refused_with_the_way_out() {
    let src = gif(32, 32, &[100; 3], None, false);
    for p in ["trim,thumbnail:16", "thumbnail:16,format:webp,max-bytes:2000"] {
        let err = run(&src, p).unwrap_err();
        assert!(err.to_string().contains("frame:N"), "{p}: {err}");
    }
    assert!(run(&src, "trim,format:png").is_ok());
    assert!(run(&src, "frame:1,trim").is_ok());
}

#[test]
fn smartcrop_keeps_the_first_frames_box_on_every_frame() {
    // Frame 0 has a busy patch on the right; frame 1 has it on the left. The crop follows
    // frame 0, so frame 1's crop shows the right half (flat there).
    let (w, h) = (64u16, 32u16);
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, w, h, &[]).unwrap();
        for k in 0..2u16 {
            let mut px = Vec::new();
            for y in 0..h {
                for x in 0..w {
                    let busy = if k == 0 { x >= 40 } else { x < 24 };
                    let v = if busy && (x / 2 + y / 2) % 2 == 0 { 255 } else { 128 };
                    px.extend_from_slice(&[v, if busy { 0 } else { v }, v, 255]);
                }
            }
            let mut f = gif::Frame::from_rgba(w, h, &mut px);
            f.delay = 10;
            enc.write_frame(&f).unwrap();
        }
    }
    let o = run(&out, "smartcrop:24:32").unwrap();
    let b = o.smart_crop.expect("a box");
    assert!(b.x >= 32, "frame 0's busy right side: {b:?}");
    let frames = frames_of(&o.bytes);
    assert_eq!(frames.len(), 2);
    // Frame 1 through frame 0's box: the flat grey of its right side.
    let f1 = &frames[1].1;
    assert!(f1.pixels().all(|p| near(&p.0[..3], &[128, 128, 128])), "frame 1 cropped where frame 0 was");
}

#[test]
fn variants_of_an_animation_write_each_its_own_way() {
    let src = gif(48, 32, &[100, 200], Some(gif::Repeat::Infinite), false);
    let recipe = pixq_kernel::Recipe::parse("a=thumbnail:24;b=thumbnail:12,format:png;c=format:webp").unwrap();
    let pipelines = recipe.pipelines();
    let outs = pixq_kernel::Processor::new(Limits::default())
        .process_variants(&src, &pipelines, &pixq_kernel::Stop::new())
        .unwrap();
    assert_eq!(frames_of(&outs[0].bytes).len(), 2);
    assert_eq!((outs[0].width, outs[0].format), (24, Format::Gif));
    assert_eq!((outs[1].width, outs[1].format), (12, Format::Png));
    assert_eq!(frames_of(&outs[2].bytes).len(), 2);
    let (_, plan) = pixq_kernel::plan_all(&src, &pipelines, &Limits::default()).unwrap();
    assert!(plan.peak_bytes > 0);
}
