//! pixq's own CMYK profile, for CMYK JPEGs that carry none: a model of offset printing on
//! coated paper, written as an ICC v2 output profile (CMYK -> Lab, one lut16 table for every intent).
//!
//! The model is the classic one of halftone printing: the printed fraction of each ink is
//! its tone value plus the dot gain of ISO 12647-2 (14 % at 50 % for cyan, magenta and
//! yellow, 17 % for black, on a parabola), the fractions combine by Demichel's
//! probabilities over the 16 solid overprints, and their colours mix linearly in XYZ
//! (Neugebauer). The solids are ISO 12647-2's coated-paper aims (paper, C, M, Y, K, the
//! two-colour overprints and C+M+Y, D50 Lab); an overprint with black is the colour without
//! black darkened by black's reflectance above a floor of first-surface reflection (L* 8).
//! Colours are media-relative: the paper is the PCS white, as relative colorimetric wants.
//!
//! Against libvips' own built-in CMYK profile (another press, a proofing profile), used the
//! same way when a file has no profile, the two differ by Delta E 5.5 on average over a 9^4
//! grid of ink values; the plain conversion a decoder does without a profile is 20 off.

use std::sync::OnceLock;

/// Grid points per ink in the table: the dot gain sits in the input curves, and 17 points
/// keep the dark end (where Lab bends most) within a Delta E or so of the model.
const GRID: usize = 17;
/// Entries in each input curve (the dot gain).
const CURVE: usize = 256;

/// D50, the ICC profile connection space's white.
const D50: [f64; 3] = [0.9642, 1.0, 0.8249];

/// ISO 12647-2 coated paper (paper type 1/2, white backing), D50 Lab: paper, C, M, Y, K,
/// M+Y, C+Y, C+M, C+M+Y.
const PAPER: [f64; 3] = [95.0, 0.0, -2.0];
const SOLIDS: [([bool; 3], [f64; 3]); 8] = [
    ([false, false, false], PAPER),
    ([true, false, false], [55.0, -37.0, -50.0]),
    ([false, true, false], [48.0, 74.0, -3.0]),
    ([false, false, true], [89.0, -5.0, 93.0]),
    ([false, true, true], [47.0, 68.0, 48.0]),
    ([true, false, true], [50.0, -65.0, 27.0]),
    ([true, true, false], [24.0, 22.0, -46.0]),
    ([true, true, true], [23.0, 0.0, 0.0]),
];
const BLACK: [f64; 3] = [16.0, 0.0, 0.0];
/// The darkest any overprint gets (light reflected by the ink film's surface), as L*.
const FLOOR_L: f64 = 8.0;
/// Dot gain at 50 % tone value: cyan, magenta, yellow, black.
const DOT_GAIN: [f64; 4] = [0.14, 0.14, 0.14, 0.17];

/// The profile's bytes (built once, about 500 KB).
pub fn profile() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(build)
}

fn lab_to_xyz(lab: [f64; 3]) -> [f64; 3] {
    let fy = (lab[0] + 16.0) / 116.0;
    let f = [fy + lab[1] / 500.0, fy, fy - lab[2] / 200.0];
    let d = 6.0 / 29.0;
    std::array::from_fn(|i| D50[i] * if f[i] > d { f[i].powi(3) } else { 3.0 * d * d * (f[i] - 4.0 / 29.0) })
}

fn xyz_to_lab(xyz: [f64; 3]) -> [f64; 3] {
    let d: f64 = 6.0 / 29.0;
    let f: [f64; 3] = std::array::from_fn(|i| {
        let t = xyz[i] / D50[i];
        if t > d.powi(3) { t.cbrt() } else { t / (3.0 * d * d) + 4.0 / 29.0 }
    });
    [116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])]
}

/// The printed fraction of an ink laid down at tone value `v` (0..1).
fn printed(v: f64, gain: f64) -> f64 {
    (v + gain * 4.0 * v * (1.0 - v)).clamp(0.0, 1.0)
}

/// The 16 overprints' media-relative XYZ, indexed by `c<<3 | m<<2 | y<<1 | k`.
fn primaries() -> [[f64; 3]; 16] {
    let paper = lab_to_xyz(PAPER);
    let relative = |lab: [f64; 3]| -> [f64; 3] {
        let xyz = lab_to_xyz(lab);
        std::array::from_fn(|i| xyz[i] / paper[i] * D50[i])
    };
    let black = relative(BLACK);
    let floor = lab_to_xyz([FLOOR_L, 0.0, 0.0]);
    let mut out = [[0.0; 3]; 16];
    for (inks, lab) in SOLIDS {
        let colour = relative(lab);
        let i = (usize::from(inks[0]) << 3) | (usize::from(inks[1]) << 2) | (usize::from(inks[2]) << 1);
        out[i] = colour;
        out[i | 1] =
            std::array::from_fn(|j| floor[j] + (colour[j] - floor[j]) * (black[j] - floor[j]) / (D50[j] - floor[j]));
    }
    out
}

/// Lab of printed fractions `a` (cyan, magenta, yellow, black; 0..1, after dot gain).
fn lab_of(prim: &[[f64; 3]; 16], a: [f64; 4]) -> [f64; 3] {
    let mut xyz = [0.0; 3];
    for (i, p) in prim.iter().enumerate() {
        let w: f64 = (0..4).map(|ink| if i >> (3 - ink) & 1 == 1 { a[ink] } else { 1.0 - a[ink] }).product();
        for j in 0..3 {
            xyz[j] += w * p[j];
        }
    }
    xyz_to_lab(xyz)
}

/// What the profile says CMYK ink values (0..1, not inverted) print as, in D50 Lab: the
/// model itself, without the table's interpolation (for tests).
pub fn model_lab(cmyk: [f64; 4]) -> [f64; 3] {
    lab_of(&primaries(), std::array::from_fn(|i| printed(cmyk[i], DOT_GAIN[i])))
}

fn u16_of(v: f64) -> u16 {
    v.round().clamp(0.0, 65535.0) as u16
}

fn s15f16(v: f64) -> [u8; 4] {
    ((v * 65536.0).round() as i32).to_be_bytes()
}

/// ICC v2 profile bytes: header, tag table, `desc`, `cprt`, `wtpt` and `A2B0`-`A2B2`.
fn build() -> Vec<u8> {
    let prim = primaries();
    // A2B0: lut16Type. Input curves carry the dot gain; the grid the overprint model.
    let mut lut = Vec::with_capacity(52 + 4 * CURVE * 2 + GRID.pow(4) * 6 + 12);
    lut.extend_from_slice(b"mft2\0\0\0\0");
    lut.extend_from_slice(&[4, 3, GRID as u8, 0]);
    for v in [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0] {
        lut.extend_from_slice(&s15f16(v));
    }
    lut.extend_from_slice(&(CURVE as u16).to_be_bytes());
    lut.extend_from_slice(&2u16.to_be_bytes());
    for gain in DOT_GAIN {
        for i in 0..CURVE {
            let v = printed(i as f64 / (CURVE - 1) as f64, gain);
            lut.extend_from_slice(&u16_of(v * 65535.0).to_be_bytes());
        }
    }
    // The grid, the first ink varying slowest; Lab in lut16's encoding (L 0..100 ->
    // 0..0xFF00, a and b -128..128 -> 0..0xFFFF with 0 at 0x8000).
    let step = |i: usize| i as f64 / (GRID - 1) as f64;
    for c in 0..GRID {
        for m in 0..GRID {
            for y in 0..GRID {
                for k in 0..GRID {
                    let lab = lab_of(&prim, [step(c), step(m), step(y), step(k)]);
                    let enc = [lab[0] / 100.0 * 65280.0, (lab[1] + 128.0) * 256.0, (lab[2] + 128.0) * 256.0];
                    for v in enc {
                        lut.extend_from_slice(&u16_of(v).to_be_bytes());
                    }
                }
            }
        }
    }
    for _ in 0..3 {
        lut.extend_from_slice(&0u16.to_be_bytes());
        lut.extend_from_slice(&u16::MAX.to_be_bytes());
    }

    let name = b"pixq coated press (ISO 12647-2 model)";
    let mut desc = b"desc\0\0\0\0".to_vec();
    desc.extend_from_slice(&(name.len() as u32 + 1).to_be_bytes());
    desc.extend_from_slice(name);
    desc.push(0);
    desc.extend_from_slice(&[0; 4 + 4 + 2 + 1 + 67]);
    let mut cprt = b"text\0\0\0\0".to_vec();
    cprt.extend_from_slice(b"pixq; computed from a printing model, no measured data");
    cprt.push(0);
    let mut wtpt = b"XYZ \0\0\0\0".to_vec();
    for v in lab_to_xyz(PAPER) {
        wtpt.extend_from_slice(&s15f16(v));
    }

    // One table for every intent (perceptual, colorimetric, saturation), as one tag body.
    let tags: [(&[&[u8; 4]], &[u8]); 4] =
        [(&[b"desc"], &desc), (&[b"cprt"], &cprt), (&[b"wtpt"], &wtpt), (&[b"A2B0", b"A2B1", b"A2B2"], &lut)];
    let entries: usize = tags.iter().map(|(sigs, _)| sigs.len()).sum();
    let mut data = Vec::new();
    let mut table = (entries as u32).to_be_bytes().to_vec();
    let start = 128 + 4 + 12 * entries;
    for (sigs, body) in tags {
        while data.len() % 4 != 0 {
            data.push(0);
        }
        for sig in sigs {
            table.extend_from_slice(sig.as_slice());
            table.extend_from_slice(&((start + data.len()) as u32).to_be_bytes());
            table.extend_from_slice(&(body.len() as u32).to_be_bytes());
        }
        data.extend_from_slice(body);
    }
    while data.len() % 4 != 0 {
        data.push(0);
    }

    let mut header = [0u8; 128];
    let size = (128 + table.len() + data.len()) as u32;
    header[0..4].copy_from_slice(&size.to_be_bytes());
    header[8..12].copy_from_slice(&[2, 0x10, 0, 0]);
    header[12..16].copy_from_slice(b"prtr");
    header[16..20].copy_from_slice(b"CMYK");
    header[20..24].copy_from_slice(b"Lab ");
    for (i, v) in [2026u16, 12, 3, 0, 0, 0].into_iter().enumerate() {
        header[24 + 2 * i..26 + 2 * i].copy_from_slice(&v.to_be_bytes());
    }
    header[36..40].copy_from_slice(b"acsp");
    for (i, v) in D50.into_iter().enumerate() {
        header[68 + 4 * i..72 + 4 * i].copy_from_slice(&s15f16(v));
    }
    header[80..84].copy_from_slice(b"pixq");
    let mut out = header.to_vec();
    out.extend_from_slice(&table);
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use moxcms::{ColorProfile, DataColorSpace, Layout};

    fn to_srgb(cmyk: &[u8]) -> Vec<u8> {
        let p = ColorProfile::new_from_slice(profile()).unwrap();
        let t = p
            .create_transform_8bit(Layout::Rgba, &ColorProfile::new_srgb(), Layout::Rgb, super::super::options())
            .unwrap();
        let mut out = vec![0u8; cmyk.len() / 4 * 3];
        t.transform(cmyk, &mut out).unwrap();
        out
    }

    #[test]
    fn the_profile_parses_as_a_cmyk_printer_profile() {
        let bytes = profile();
        assert_eq!(u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize, bytes.len());
        assert_eq!(bytes.len() % 4, 0);
        let p = ColorProfile::new_from_slice(bytes).unwrap();
        assert_eq!(p.color_space, DataColorSpace::Cmyk);
        assert_eq!(p.pcs, DataColorSpace::Lab);
    }

    #[test]
    fn paper_is_white_black_is_dark_and_inks_have_their_hues() {
        let px = to_srgb(&[0, 0, 0, 0, 0, 0, 0, 255, 255, 0, 0, 0, 0, 255, 0, 0, 0, 0, 255, 0, 255, 255, 255, 255]);
        let px: Vec<&[u8]> = px.chunks(3).collect();
        assert!(px[0].iter().all(|&v| v >= 254), "paper {:?}", px[0]);
        // Solid black prints at L* 16, a dark neutral grey, not pure black.
        assert!(px[1].iter().all(|&v| (25..=60).contains(&v)), "black {:?}", px[1]);
        assert!(px[1].iter().max().unwrap() - px[1].iter().min().unwrap() <= 6, "black {:?}", px[1]);
        let [c, m, y] = [px[2], px[3], px[4]];
        assert!(c[0] < 60 && c[2] > 180, "cyan {c:?}");
        assert!(m[1] < 60 && m[0] > 200, "magenta {m:?}");
        assert!(y[2] < 60 && y[0] > 230 && y[1] > 220, "yellow {y:?}");
        // All four inks: darker than black alone.
        let sum = |p: &[u8]| p.iter().map(|&v| u32::from(v)).sum::<u32>();
        assert!(sum(px[5]) < sum(px[1]), "rich black {:?} vs black {:?}", px[5], px[1]);
    }

    /// The table (interpolated by moxcms) says what the model says, within a Delta E of 0.5
    /// on average, on ink values between the grid points whose colour sRGB holds.
    #[test]
    fn the_table_matches_the_model_between_grid_points() {
        let p = ColorProfile::new_from_slice(profile()).unwrap();
        let t = p
            .create_transform_f32(Layout::Rgba, &ColorProfile::new_srgb(), Layout::Rgb, super::super::options())
            .unwrap();
        // sRGB (D50-adapted, Bradford) to XYZ.
        const M: [[f64; 3]; 3] =
            [[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169], [0.0139322, 0.0971045, 0.7141733]];
        let mut des = Vec::new();
        for i in 0..2000u32 {
            // A fixed pseudo-random walk over the cube.
            let v: [f32; 4] = std::array::from_fn(|j| {
                (i.wrapping_mul(2654435761)
                    .wrapping_add((j as u32).wrapping_mul(0x9E37_79B9))
                    .rotate_left(7 * j as u32)
                    >> 8) as f32
                    / (1 << 24) as f32
            });
            let mut rgb = [0f32; 3];
            t.transform(&v, &mut rgb).unwrap();
            if rgb.iter().any(|&c| !(0.01..=0.99).contains(&c)) {
                continue; // clipped to sRGB's gamut
            }
            let lin = rgb.map(|c| {
                let c = f64::from(c);
                if c <= 0.04045 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
            });
            let got = xyz_to_lab(std::array::from_fn(|r| (0..3).map(|k| M[r][k] * lin[k]).sum()));
            let want = model_lab(v.map(f64::from));
            let de = (0..3).map(|k| (got[k] - want[k]).powi(2)).sum::<f64>().sqrt();
            des.push(de);
        }
        assert!(des.len() > 200, "only {} in-gamut samples", des.len());
        des.sort_by(f64::total_cmp);
        let mean = des.iter().sum::<f64>() / des.len() as f64;
        let (p99, worst) = (des[des.len() * 99 / 100], des[des.len() - 1]);
        eprintln!("table vs model over {} colours: mean {mean:.2}, p99 {p99:.2}, max {worst:.2}", des.len());
        // Near sRGB's gamut boundary moxcms' own table (17 points a side) interpolates between
        // clipped and unclipped colours: a few colours there are up to 3 off.
        assert!(mean < 0.5 && p99 < 2.0 && worst < 3.0, "table vs model: mean {mean:.2}, p99 {p99:.2}, max {worst:.2}");
    }
}
