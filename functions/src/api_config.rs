//! The API function's configuration (`pixq-api`), read once from the environment the
//! template sets, with errors that name the variable. The same names as `pixq serve`'s flags.

use std::time::Duration;

use crate::ConfigError;
use crate::config::parse;

/// Everything `pixq-api` needs besides its AWS clients.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The jobs queue (`PIXQ_QUEUE_URL`).
    pub queue_url: String,
    /// Inputs, outputs, records (`PIXQ_BUCKET`).
    pub bucket: String,
    /// Signs image URLs (`PIXQ_SIGNING_KEY`, at least 16 bytes).
    pub signing_key: String,
    /// Required on the write endpoints when set (`PIXQ_API_KEY`).
    pub api_key: Option<String>,
    /// Presets, the text of a presets.toml (`PIXQ_PRESETS`, newline- or `;`-separated).
    pub presets: String,
    /// Image URLs take presets only (`PIXQ_PRESETS_ONLY=1`).
    pub presets_only: bool,
    /// Most files per batch (`PIXQ_MAX_FILES`, 500).
    pub max_files: usize,
    /// Largest upload in MB (`PIXQ_MAX_FILE_MB`, 50).
    pub max_file_mb: u64,
    /// Memory of inline on-the-fly renders, MB (the function's memory less 96 MB).
    pub memory_mb: u64,
}

impl ApiConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<ApiConfig, ConfigError> {
        ApiConfig::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads variables through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<ApiConfig, ConfigError> {
        let var = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let need = |k: &'static str| var(k).ok_or(ConfigError::Missing(k));
        let signing_key = need("PIXQ_SIGNING_KEY")?;
        if let Err(e) = pixq_web::Signer::new(signing_key.trim().as_bytes()) {
            return Err(ConfigError::Invalid {
                name: "PIXQ_SIGNING_KEY",
                value: "(hidden)".into(),
                reason: e.to_string(),
            });
        }
        // The write endpoints face the internet: a key is required, unless leaving them open
        // is asked for by name.
        let open = matches!(var("PIXQ_OPEN_WRITES").as_deref(), Some("1" | "true"));
        let api_key = var("PIXQ_API_KEY").map(|k| k.trim().to_string());
        match &api_key {
            None if !open => return Err(ConfigError::Missing("PIXQ_API_KEY")),
            Some(k) if k.len() < 16 => {
                return Err(ConfigError::Invalid {
                    name: "PIXQ_API_KEY",
                    value: "(hidden)".into(),
                    reason: "at least 16 characters (or PIXQ_OPEN_WRITES=true for no key at all)".into(),
                });
            }
            _ => {}
        }
        let presets = var("PIXQ_PRESETS").unwrap_or_default().replace(';', "\n");
        if let Err(e) = pixq_web::parse_presets(&presets) {
            return Err(ConfigError::Invalid { name: "PIXQ_PRESETS", value: presets, reason: e.to_string() });
        }
        let function_mb: u64 = match var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") {
            Some(v) => parse("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", v)?,
            None => 1024,
        };
        Ok(ApiConfig {
            queue_url: need("PIXQ_QUEUE_URL")?,
            bucket: need("PIXQ_BUCKET")?,
            signing_key: signing_key.trim().to_string(),
            api_key,
            presets,
            presets_only: matches!(var("PIXQ_PRESETS_ONLY").as_deref(), Some("1" | "true")),
            max_files: var("PIXQ_MAX_FILES").map(|v| parse("PIXQ_MAX_FILES", v)).transpose()?.unwrap_or(500),
            max_file_mb: var("PIXQ_MAX_FILE_MB").map(|v| parse("PIXQ_MAX_FILE_MB", v)).transpose()?.unwrap_or(50),
            memory_mb: pixq_jobs::process::lambda_memory_mb(function_mb),
        })
    }

    /// Where the queue and the bucket are, for [`pixq_jobs::backend::open`].
    pub fn connect(&self) -> pixq_jobs::backend::Connect {
        pixq_jobs::backend::Connect {
            target: pixq_jobs::backend::Target::Aws,
            queue_url: Some(self.queue_url.clone()),
            bucket: Some(self.bucket.clone()),
            ..Default::default()
        }
    }

    /// The web front end's settings; `presign` makes upload and download URLs.
    pub fn web(&self, presign: std::sync::Arc<dyn pixq_web::presign::Presign>) -> pixq_web::WebConfig {
        let signer = pixq_web::Signer::new(self.signing_key.as_bytes()).expect("checked when read");
        let mut c = pixq_web::WebConfig::new(signer);
        c.api_key = self.api_key.clone();
        c.presets = pixq_web::parse_presets(&self.presets).expect("checked when read");
        c.presets_only = self.presets_only;
        c.max_files = self.max_files.max(1);
        c.max_file_bytes = self.max_file_mb.max(1) << 20;
        c.upload_ttl = Duration::from_secs(900);
        c.inline_memory_mb = self.memory_mb;
        c.process.runtime = "lambda-api".into();
        c.presign = Some(presign);
        c.events_hold = Some(std::time::Duration::ZERO);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<ApiConfig, ConfigError> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ApiConfig::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn reads_and_names_what_is_wrong() {
        let base = [
            ("PIXQ_QUEUE_URL", "http://q"),
            ("PIXQ_BUCKET", "b"),
            ("PIXQ_SIGNING_KEY", "0123456789abcdef"),
            ("PIXQ_API_KEY", " api-key-of-16-chars "),
        ];
        let c = from(&base).unwrap();
        assert_eq!((c.max_files, c.max_file_mb, c.api_key.as_deref()), (500, 50, Some("api-key-of-16-chars")));
        // No API key: refused unless open writes are asked for by name; a short one refused.
        let e = from(&base[..3]).unwrap_err().to_string();
        assert_eq!(e, "environment variable PIXQ_API_KEY is not set");
        let c = from(&[base[0], base[1], base[2], ("PIXQ_OPEN_WRITES", "true")]).unwrap();
        assert_eq!(c.api_key, None);
        let e = from(&[base[0], base[1], base[2], ("PIXQ_API_KEY", "short")]).unwrap_err().to_string();
        assert!(e.contains("PIXQ_API_KEY") && e.contains("16") && !e.contains("short"), "{e}");
        let e = from(&[base[0], base[1], base[3]]).unwrap_err().to_string();
        assert_eq!(e, "environment variable PIXQ_SIGNING_KEY is not set");
        let e = from(&[base[0], base[1], ("PIXQ_SIGNING_KEY", "short"), base[3]]).unwrap_err().to_string();
        assert!(e.contains("PIXQ_SIGNING_KEY") && !e.contains("short"), "the key is not echoed: {e}");
        let e =
            from(&[base[0], base[1], base[2], base[3], ("PIXQ_PRESETS", "t = \"blur:0\"")]).unwrap_err().to_string();
        assert!(e.contains("PIXQ_PRESETS") && e.contains("sigma"), "{e}");
        let e = from(&[base[0], base[1], base[2], base[3], ("PIXQ_MAX_FILES", "many")]).unwrap_err().to_string();
        assert!(e.contains("PIXQ_MAX_FILES"), "{e}");
        let c = from(&[
            base[0],
            base[1],
            base[2],
            base[3],
            ("PIXQ_PRESETS", "a = \"thumbnail:10\"; b = \"grayscale\""),
            ("PIXQ_PRESETS_ONLY", "1"),
        ])
        .unwrap();
        assert!(c.presets_only);
        assert_eq!(pixq_web::parse_presets(&c.presets).unwrap().len(), 2);
    }

    /// The stack's own default `Presets` parameter (`format:auto` in it) starts the function.
    #[test]
    fn the_templates_default_presets_are_read() {
        let t = include_str!("../../template.yaml");
        let at = t.find("\n  Presets:").expect("a Presets parameter");
        let line = t[at..].lines().find_map(|l| l.trim().strip_prefix("Default: ")).expect("its default");
        let value = line.trim().strip_prefix('\'').and_then(|v| v.strip_suffix('\'')).expect("single-quoted");
        let base = [("PIXQ_QUEUE_URL", "http://q"), ("PIXQ_BUCKET", "b"), ("PIXQ_SIGNING_KEY", "0123456789abcdef")];
        let c = from(&[base[0], base[1], base[2], ("PIXQ_OPEN_WRITES", "1"), ("PIXQ_PRESETS", value)]).unwrap();
        let presets = pixq_web::parse_presets(&c.presets).unwrap();
        assert_eq!(presets.len(), 2, "{value}");
        assert!(presets.values().all(|p| p.is_auto()), "{value}");
    }
}
