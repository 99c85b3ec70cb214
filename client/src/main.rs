//! `pixq`: the command-line client. Flags are parsed here, the work is in `run`, and errors
//! become messages and exit codes in one place: 0 ok, 1 some jobs failed, 2 usage or setup
//! error (clap's usage errors are 2 too), 124 gave up waiting (`--timeout-secs`; the jobs
//! stay queued), 130 interrupted.

mod args;
#[cfg(feature = "ec2")]
mod ec2;
mod inputs;
mod run;

use clap::Parser;

fn main() {
    let cli = args::Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pixq: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = match rt.block_on(run::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pixq: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
