//! `pixq`: the command-line client. Flags are parsed here, the work is in `run`, and errors
//! become messages and exit codes in one place: 0 ok, 1 some jobs failed, 2 usage or setup
//! error (clap's usage errors are 2 too), 124 gave up waiting (`--timeout-secs`; the jobs
//! stay queued), 130 interrupted.

mod args;
#[cfg(feature = "ec2")]
mod ec2;
#[cfg(feature = "ec2")]
mod group;
mod inputs;
mod run;
mod serve;

use args::{Cli, Command};
use clap::Parser;

/// Sends each command to its module: `run` for the queue-and-store commands, `ec2` for the
/// launcher (given typed stack settings, never raw flags).
async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    let g = &cli.global;
    match cli.command {
        Command::Jobs(command) => run::run(g, command).await,
        Command::Ops => {
            run::print_ops();
            Ok(0)
        }
        Command::Serve(a) => serve::serve(g, a).await,
        Command::Sign { key, ops, expires, signing_key } => {
            pixq_web::img::check_pipeline(&ops).map_err(|e| anyhow::anyhow!("bad --ops: {e}"))?;
            pixq_jobs::keys::validate_key(&key).map_err(|e| anyhow::anyhow!("bad key: {e}"))?;
            let signer = serve::signer(&g.connect, signing_key.as_deref())?;
            let expires = expires.map(|s| pixq_jobs::clock::now_ms() / 1000 + s as i64);
            println!("{}", signer.img_path(&ops, &key, expires));
            Ok(0)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "pixq", &mut std::io::stdout());
            Ok(0)
        }
        #[cfg(feature = "ec2")]
        Command::Ec2 { action } => {
            // Flags override the stack's outputs; the launcher sees only the result.
            let c = &g.connect;
            let mut stack = pixq_jobs::backend::StackOutputs::read(c.stack_outputs.as_deref())?;
            stack.bucket = c.bucket.clone().or(stack.bucket);
            stack.heavy_queue_url = c.queue_url.clone().or(stack.heavy_queue_url);
            if c.queue_url.is_some() {
                stack.heavy_dlq_url = c.dlq_url.clone();
            }
            ec2::run(&stack, g.json, &action).await
        }
    }
}

fn main() {
    // HEIF and AVIF files are read in children of this program; a child ends here.
    pixq_jobs::isolation::init();
    let cli = args::Cli::parse();
    let level = match cli.global.verbose {
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
    let code = match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pixq: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
