//! Where a job runs: on the Lambda function's queue when the function can finish it, on the
//! heavy queue (EC2 workers) otherwise. Decided from the image's header and the pipeline
//! alone, by the kernel's own plan: the peak memory the worker's admission charges
//! ([`pixq_kernel::Plan::peak_bytes`], against the same budget the function admits jobs
//! under) and the plan's time estimate ([`pixq_kernel::Plan::cpu_ns`]) at the CPU share the
//! function's memory size buys. The client routes before enqueueing; the function forwards
//! a job that reached it anyway (a drop-in upload) before decoding it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use pixq_kernel::{Limits, Pipeline, Plan};

/// Lambda gives one vCPU per 1,769 MB of memory size (AWS's figure), less below it.
pub const LAMBDA_MB_PER_VCPU: f64 = 1769.0;

/// Kernels one invocation runs at once (template.yaml's `PIXQ_CONCURRENCY` for the
/// processor): they share its CPU.
pub const FUNCTION_KERNELS: f64 = 2.0;

/// The time estimate is an order of magnitude: a job goes to the function only when this
/// many times its estimate fits in the timeout.
pub const TIME_MARGIN: f64 = 3.0;

/// Where a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The Lambda function's queue.
    Lambda,
    /// The heavy queue (EC2 workers).
    Ec2,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Route::Lambda => "lambda",
            Route::Ec2 => "ec2",
        })
    }
}

/// What `--route` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteChoice {
    /// Each job where it fits.
    #[default]
    Auto,
    /// Every job on one queue.
    Only(Route),
}

impl FromStr for RouteChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<RouteChoice, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(RouteChoice::Auto),
            "lambda" | "light" => Ok(RouteChoice::Only(Route::Lambda)),
            "ec2" | "heavy" => Ok(RouteChoice::Only(Route::Ec2)),
            other => Err(format!("unknown route '{other}' (expected auto, lambda or ec2)")),
        }
    }
}

/// A routing decision and its reason, with the figures it used.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// Where.
    pub route: Route,
    /// Why, for people (status, the forwarded record).
    pub reason: String,
}

/// What the Lambda function can take: its memory size and timeout (the stack outputs
/// `ProcessorMemorySize` and `ProcessorTimeout`, or the function's own environment).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FunctionFit {
    /// Memory size, MB.
    pub memory_mb: u64,
    /// Timeout.
    pub timeout: Duration,
}

impl FunctionFit {
    /// The kernels' memory budget inside the function: what its admission allows.
    pub fn budget_bytes(&self) -> u64 {
        crate::process::lambda_memory_mb(self.memory_mb) << 20
    }

    /// The share of one core a kernel gets in the function.
    pub fn cpu_share(&self) -> f64 {
        (self.memory_mb as f64 / LAMBDA_MB_PER_VCPU / FUNCTION_KERNELS).clamp(0.05, 1.0)
    }

    /// The plan's time estimate in the function, seconds.
    pub fn seconds(&self, plan: &Plan) -> f64 {
        plan.cpu_ns as f64 / 1e9 / self.cpu_share()
    }

    /// Where a job with this plan runs.
    pub fn route(&self, plan: &Plan) -> Routed {
        let budget = self.budget_bytes();
        if plan.peak_bytes > budget {
            return Routed {
                route: Route::Ec2,
                reason: format!(
                    "estimated peak {} MB ({}) is over the function's {} MB budget (memory size {} MB)",
                    plan.peak_mb(),
                    plan.peak_at,
                    budget >> 20,
                    self.memory_mb
                ),
            };
        }
        let secs = self.seconds(plan);
        if secs * TIME_MARGIN > self.timeout.as_secs_f64() {
            return Routed {
                route: Route::Ec2,
                reason: format!(
                    "estimated {secs:.1} s in the function ({:.2} of a core at {} MB), {TIME_MARGIN}x of it is over its {} s timeout",
                    self.cpu_share(),
                    self.memory_mb,
                    self.timeout.as_secs()
                ),
            };
        }
        Routed {
            route: Route::Lambda,
            reason: format!(
                "fits the function: peak {} MB of {} MB, about {secs:.1} s of {} s",
                plan.peak_mb(),
                budget >> 20,
                self.timeout.as_secs()
            ),
        }
    }

    /// Routes an image by its header: the plan needs no decoding. An image whose header
    /// does not plan (broken, refused by the limits) goes to the function, which records
    /// the failure at once.
    pub fn route_input(&self, input: &[u8], pipelines: &[&Pipeline], limits: &Limits) -> Routed {
        match pixq_kernel::plan_all(input, pipelines, limits) {
            Ok((_, plan)) => self.route(&plan),
            Err(e) => Routed { route: Route::Lambda, reason: format!("not planned ({e}): the function records it") },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixq_kernel::{Channels, Format, OutputSpec, Raster};

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let r = Raster::from_fn(w, h, Channels::Rgb, |x, y, p| p.copy_from_slice(&[x as u8, y as u8, (x ^ y) as u8]));
        pixq_kernel::encode(&r, Format::Jpeg, &OutputSpec { quality: Some(80), ..Default::default() }).unwrap()
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        let r = Raster::from_fn(w, h, Channels::Rgb, |x, y, p| p.copy_from_slice(&[x as u8, y as u8, 7]));
        pixq_kernel::encode(&r, Format::Png, &OutputSpec { compression: Some(1), ..Default::default() }).unwrap()
    }

    /// Image sizes x pipelines x function sizes -> queue. The images are real files of
    /// each size (headers and all), planned as the client plans them.
    #[test]
    fn routing_table() {
        let limits = Limits::default();
        let small = jpeg(1200, 800);
        let photo = jpeg(6000, 4000); // 24 MP
        let huge = jpeg(9000, 7000); // 63 MP
        let big_png = png(5000, 4000); // 20 MP, no shrink-on-load
        let f = |mb: u64, s: u64| FunctionFit { memory_mb: mb, timeout: Duration::from_secs(s) };
        let (default, tiny, large) = (f(2048, 60), f(512, 30), f(10240, 900));
        use Route::{Ec2, Lambda};
        let table: &[(&str, &[u8], &str, FunctionFit, Route)] = &[
            ("small thumbnail", &small, "thumbnail:320", default, Lambda),
            ("small blur", &small, "blur:3", default, Lambda),
            ("photo thumbnail (shrink-on-load)", &photo, "thumbnail:1024", default, Lambda),
            ("photo thumbnail on a 512 MB function", &photo, "thumbnail:1024", tiny, Lambda),
            ("photo full-size filters", &photo, "sharpen:1,contrast:1.2", default, Lambda),
            ("photo heavy blur: too slow", &photo, "blur:40", default, Ec2),
            ("photo heavy blur on a 10 GB, 900 s function", &photo, "blur:40", large, Lambda),
            ("63 MP full-size on 512 MB: too big", &huge, "rotate:90", tiny, Ec2),
            ("63 MP full-size rotate", &huge, "rotate:90,format:png", default, Lambda),
            ("63 MP to WebP, full size, on 1 GB: too big", &huge, "sharpen:1,format:webp", f(1024, 300), Ec2),
            ("63 MP to WebP, full size", &huge, "sharpen:1,format:webp", default, Lambda),
            ("63 MP thumbnail", &huge, "thumbnail:1600", default, Lambda),
            ("63 MP full-size on 10 GB", &huge, "rotate:90", large, Lambda),
            ("20 MP PNG to WebP on 512 MB", &big_png, "format:webp", tiny, Lambda),
            ("20 MP PNG blur on 512 MB: too slow", &big_png, "blur:10", tiny, Ec2),
            ("20 MP PNG thumbnail", &big_png, "thumbnail:512", default, Lambda),
            ("not an image", b"GIF89a broken", "thumbnail:64", default, Lambda),
        ];
        let mut wrong = Vec::new();
        for (what, input, ops, fit, want) in table {
            let r = fit.route_input(input, &[&Pipeline::parse(ops).unwrap()], &limits);
            assert!(!r.reason.is_empty());
            if r.route != *want {
                wrong.push(format!("{what}: {} ({})", r.route, r.reason));
            }
        }
        assert!(wrong.is_empty(), "routed elsewhere:\n{}", wrong.join("\n"));
        // The reasons carry the figures.
        let r = tiny.route_input(&huge, &[&Pipeline::parse("rotate:90").unwrap()], &limits);
        assert!(r.reason.contains("over the function's 416 MB budget (memory size 512 MB)"), "{}", r.reason);
        let r = default.route_input(&photo, &[&Pipeline::parse("blur:40").unwrap()], &limits);
        assert!(r.reason.contains("over its 60 s timeout"), "{}", r.reason);
    }

    #[test]
    fn route_flags() {
        assert_eq!("auto".parse::<RouteChoice>().unwrap(), RouteChoice::Auto);
        assert_eq!("EC2".parse::<RouteChoice>().unwrap(), RouteChoice::Only(Route::Ec2));
        assert_eq!("lambda".parse::<RouteChoice>().unwrap(), RouteChoice::Only(Route::Lambda));
        assert!("gpu".parse::<RouteChoice>().unwrap_err().contains("auto, lambda or ec2"));
    }
}
