//! Throughput probe used by `bench/compare.sh`: runs one pipeline over files in-process and
//! prints `images_per_sec=<f>` plus the share of time per stage.
//!
//! `kbench --ops PIPELINE [--format F] [--quality Q] [--png-level L] [--rounds N] [--out DIR] FILE...`

use pixq_kernel::{Limits, Pipeline, Processor};
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut ops, mut extra, mut rounds, mut files, mut out_dir) =
        (String::new(), Vec::new(), 3usize, Vec::new(), None);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| fail(&format!("{a} needs a value")));
        match a.as_str() {
            "--ops" => ops = val(),
            "--format" => extra.push(format!("format:{}", val())),
            "--quality" => extra.push(format!("quality:{}", val())),
            "--png-level" => extra.push(format!("compression:{}", val())),
            "--out" => out_dir = Some(std::path::PathBuf::from(val())),
            "--rounds" => rounds = val().parse().unwrap_or_else(|_| fail("--rounds takes a number")),
            _ => files.push(a),
        }
    }
    if files.is_empty() {
        fail("no input files");
    }
    let spec = std::iter::once(ops).chain(extra).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(",");
    let pipeline = Pipeline::parse(&spec).unwrap_or_else(|e| fail(&e.to_string()));
    let inputs: Vec<Vec<u8>> =
        files.iter().map(|f| std::fs::read(f).unwrap_or_else(|e| fail(&format!("{f}: {e}")))).collect();
    if let Some(dir) = &out_dir {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    }
    let mut p = Processor::new(Limits::default());
    let (mut n, mut dec, mut opt, mut enc) = (0usize, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    for _ in 0..rounds {
        for (f, bytes) in files.iter().zip(&inputs) {
            let out = p.process(bytes, &pipeline).unwrap_or_else(|e| fail(&format!("{f}: {e}")));
            if let Some(dir) = &out_dir {
                let stem = std::path::Path::new(f).file_stem().unwrap_or_default().to_string_lossy();
                let path = dir.join(format!("{stem}.{}", out.format.extension()));
                std::fs::write(&path, &out.bytes).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
            }
            std::hint::black_box(&out.bytes);
            (dec, opt, enc) = (dec + out.timings.decode, opt + out.timings.ops, enc + out.timings.encode);
            n += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / secs;
    println!("images_per_sec={:.3}", n as f64 / secs);
    // The plan's own time estimate, to compare with the measured time per image.
    let estimated: u64 = inputs
        .iter()
        .filter_map(|b| pixq_kernel::plan(b, &pipeline, &Limits::default()).ok())
        .map(|(_, p)| p.cpu_ns)
        .sum();
    println!("estimated_ms_per_image={:.1}", estimated as f64 / 1e6 / inputs.len() as f64);
    println!("measured_ms_per_image={:.1}", secs * 1e3 / n as f64);
    eprintln!("decode {:.0}% ops {:.0}% encode {:.0}% ({n} images, {secs:.2}s)", pct(dec), pct(opt), pct(enc));
}

fn fail(msg: &str) -> ! {
    eprintln!("kbench: {msg}");
    std::process::exit(2)
}
