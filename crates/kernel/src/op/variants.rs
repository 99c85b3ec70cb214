//! Variants: several named outputs of one image from one decode, written
//! `small=thumbnail:320;large=thumbnail:1600,format:webp`.
//!
//! Each variant is a whole [`Pipeline`]; [`crate::Processor::process_variants`] decodes
//! once for all of them. What one decode cannot serve differently per variant must agree:
//! the animation frame (`frame:N`) and whether the colour profile is kept (`keep-icc`: the
//! shared image is converted to sRGB or not).

use serde::{Deserialize, Serialize};

use super::Pipeline;
use crate::ParseError;

/// Most variants one job may have.
pub const MAX_VARIANTS: usize = 16;

/// Longest variant name.
pub const MAX_NAME: usize = 32;

/// One named output of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// Name: 1-32 of `a-z`, `0-9`, `-`, `_`, starting with a letter or digit. It names the
    /// fetched file (`<stem>.<name>.<ext>`).
    pub name: String,
    /// What makes it.
    pub pipeline: Pipeline,
}

/// Whether `s` is written as variants (`name=...`): the text before the first `=` is a
/// bare name (no step ever contains `=`).
pub fn is_variants(s: &str) -> bool {
    s.contains('=')
}

fn err(step: usize, text: &str, reason: impl Into<String>) -> ParseError {
    ParseError { step, text: text.to_string(), reason: reason.into() }
}

/// Checks a variant name.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a variant name has 1 to {MAX_NAME} characters"));
    }
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(format!(
            "variant name '{}' must be lowercase letters, digits, '-' and '_', starting with a letter or digit",
            name.escape_default()
        ));
    }
    Ok(())
}

/// Parses `name=pipeline;name=pipeline...` (1 to [`MAX_VARIANTS`], names unique). A step
/// error names its variant.
pub fn parse(s: &str) -> Result<Vec<Variant>, ParseError> {
    let mut out: Vec<Variant> = Vec::new();
    for (i, part) in s.split(';').enumerate() {
        let part = part.trim();
        if part.is_empty() && i > 0 && s.trim_end().ends_with(';') {
            continue;
        }
        let Some((name, steps)) = part.split_once('=') else {
            return Err(err(i + 1, part, "each variant is written name=steps (variants are separated by ';')"));
        };
        let name = name.trim();
        check_name(name).map_err(|r| err(i + 1, part, r))?;
        let pipeline = Pipeline::parse(steps)
            .map_err(|e| ParseError { reason: format!("in variant '{name}': {}", e.reason), ..e })?;
        out.push(Variant { name: name.to_string(), pipeline });
    }
    check(&out)?;
    Ok(out)
}

/// The rules across variants: a count of 1 to [`MAX_VARIANTS`], unique names, one frame and
/// one `keep-icc` choice for all.
pub fn check(variants: &[Variant]) -> Result<(), ParseError> {
    if variants.is_empty() || variants.len() > MAX_VARIANTS {
        return Err(err(0, "", format!("a job has 1 to {MAX_VARIANTS} variants, not {}", variants.len())));
    }
    for (i, v) in variants.iter().enumerate() {
        check_name(&v.name).map_err(|r| err(i + 1, &v.name, r))?;
        if variants[..i].iter().any(|u| u.name == v.name) {
            return Err(err(i + 1, &v.name, format!("variant name '{}' given twice", v.name)));
        }
        let first = &variants[0].pipeline;
        if v.pipeline.frame != first.frame {
            return Err(err(i + 1, &v.name, "every variant decodes the same frame: give frame:N to all or none"));
        }
        if v.pipeline.output.keep_icc != first.output.keep_icc {
            return Err(err(i + 1, &v.name, "keep-icc applies to the shared decode: give it to every variant or none"));
        }
    }
    Ok(())
}

/// The canonical string: `name=<canonical pipeline>` joined by `;`, in the given order.
pub fn canonical(variants: &[Variant]) -> String {
    variants.iter().map(|v| format!("{}={}", v.name, v.pipeline.canonical())).collect::<Vec<_>>().join(";")
}

/// What one job makes: one pipeline, or named variants from one decode.
#[derive(Debug, Clone, PartialEq)]
pub enum Recipe {
    /// One output.
    One(Pipeline),
    /// Named outputs (checked by [`check`]).
    Variants(Vec<Variant>),
}

impl Recipe {
    /// Parses `--ops`: variants when written `name=steps;...`, else one pipeline.
    pub fn parse(s: &str) -> Result<Recipe, ParseError> {
        if is_variants(s) { parse(s).map(Recipe::Variants) } else { Pipeline::parse(s).map(Recipe::One) }
    }

    /// Each output's pipeline, in order.
    pub fn pipelines(&self) -> Vec<&Pipeline> {
        match self {
            Recipe::One(p) => vec![p],
            Recipe::Variants(v) => v.iter().map(|v| &v.pipeline).collect(),
        }
    }

    /// The first output's pipeline.
    pub fn first(&self) -> &Pipeline {
        match self {
            Recipe::One(p) => p,
            Recipe::Variants(v) => &v[0].pipeline,
        }
    }

    /// The variants (empty for one pipeline).
    pub fn variants(&self) -> &[Variant] {
        match self {
            Recipe::One(_) => &[],
            Recipe::Variants(v) => v,
        }
    }

    /// The canonical string ([`Pipeline::canonical`] or [`canonical`]).
    pub fn canonical(&self) -> String {
        match self {
            Recipe::One(p) => p.canonical(),
            Recipe::Variants(v) => canonical(v),
        }
    }
}

impl From<Pipeline> for Recipe {
    fn from(p: Pipeline) -> Recipe {
        Recipe::One(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_pipelines_and_round_trips() {
        let v = parse("small=thumbnail:320; large=thumbnail:1600,format:webp;").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].name.as_str(), v[1].name.as_str()), ("small", "large"));
        assert_eq!(v[1].pipeline, Pipeline::parse("thumbnail:1600,format:webp").unwrap());
        assert_eq!(parse(&canonical(&v)).unwrap(), v);
        assert!(is_variants("a=thumbnail:1") && !is_variants("thumbnail:1,format:png"));
    }

    #[test]
    fn refuses_the_whole_class_of_bad_variant_lists() {
        let cases = [
            ("thumbnail:320;large=thumbnail:1600", "name=steps"),
            ("=thumbnail:320", "1 to 32"),
            ("Small=thumbnail:320", "lowercase"),
            ("a/b=thumbnail:320", "lowercase"),
            ("../x=thumbnail:320", "lowercase"),
            ("-x=thumbnail:320", "starting with"),
            ("a.b=thumbnail:320", "lowercase"),
            ("a b=thumbnail:320", "lowercase"),
            ("s=thumbnail:1;s=thumbnail:2", "given twice"),
            ("s=thumbnail:0", "in variant 's'"),
            ("s=bogus", "in variant 's'"),
            ("a=frame:1,thumbnail:9;b=thumbnail:9", "same frame"),
            ("a=keep-icc;b=thumbnail:9", "keep-icc"),
            (";", "name=steps"),
        ];
        for (s, want) in cases {
            let e = parse(s).expect_err(s).to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
        let long = format!("{}=thumbnail:1", "a".repeat(MAX_NAME + 1));
        assert!(parse(&long).is_err());
        let many = (0..=MAX_VARIANTS).map(|i| format!("v{i}=thumbnail:9")).collect::<Vec<_>>().join(";");
        assert!(parse(&many).unwrap_err().to_string().contains("1 to 16 variants"));
        let ok = (0..MAX_VARIANTS).map(|i| format!("v{i}=thumbnail:9")).collect::<Vec<_>>().join(";");
        assert_eq!(parse(&ok).unwrap().len(), MAX_VARIANTS);
    }
}
