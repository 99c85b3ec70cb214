//! Where a binary's flow runs, decided once: the [`Target`] (the embedded default or AWS)
//! and, on AWS, the [`Lane`] (the Lambda's queue or the EC2 workers' heavy queue). Every
//! binary parses these from the same flags (`--target`, `--lane`) and the same environment
//! variables (`PIXQ_TARGET`, `PIXQ_LANE`).

use std::fmt;
use std::str::FromStr;

/// The backends a flow runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// SQLite queue and filesystem store under a home folder.
    #[default]
    Local,
    /// SQS and S3, named by stack outputs or flags; credentials from the standard chain.
    Aws,
}

/// Which of the stack's two queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lane {
    /// The jobs queue the Lambda function consumes (bursty, light jobs).
    #[default]
    Light,
    /// The heavy queue the EC2 workers consume.
    Heavy,
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(Target::Local),
            "aws" => Ok(Target::Aws),
            other => Err(format!("unknown target '{other}' (expected local or aws)")),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Local => "local",
            Target::Aws => "aws",
        })
    }
}

impl FromStr for Lane {
    type Err = String;
    fn from_str(s: &str) -> Result<Lane, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "light" | "lambda" => Ok(Lane::Light),
            "heavy" | "ec2" => Ok(Lane::Heavy),
            other => Err(format!("unknown lane '{other}' (expected light or heavy)")),
        }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lane::Light => "light",
            Lane::Heavy => "heavy",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in [Target::Local, Target::Aws] {
            assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
        }
        for l in [Lane::Light, Lane::Heavy] {
            assert_eq!(l.to_string().parse::<Lane>().unwrap(), l);
        }
        assert_eq!("EC2".parse::<Lane>().unwrap(), Lane::Heavy);
        assert!("cloud".parse::<Target>().unwrap_err().contains("local or aws"));
    }
}
