//! The step list behind `pixq ops` and the README's pipeline table stay true: every example
//! parses, its canonical form parses back to the same pipeline and serialises through JSON,
//! and every step the parser knows appears in the README's table (and nothing else does).

use pixq_kernel::Pipeline;
use pixq_kernel::op::STEPS;

#[test]
fn every_help_example_parses_and_round_trips() {
    for s in STEPS {
        let p = Pipeline::parse(s.example).unwrap_or_else(|e| panic!("{}: example '{}': {e}", s.syntax, s.example));
        assert_eq!(Pipeline::parse(&p.canonical()).unwrap(), p, "{}", s.example);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Pipeline>(&json).unwrap(), p, "{}", s.example);
    }
}

/// The step names of a syntax line: `sobel | edges` -> [sobel, edges]; `flip:h|v` -> [flip].
fn names(syntax: &str) -> Vec<String> {
    syntax.split(" | ").map(|part| part.split(':').next().unwrap().trim().to_string()).collect()
}

#[test]
fn the_readme_table_lists_exactly_the_known_steps() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme.find("## The pipeline syntax").expect("README has a pipeline section");
    let table: Vec<&str> = readme[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| step"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    // First column: `name:args` entries, possibly several per row.
    let mut in_readme: Vec<String> = table
        .iter()
        .flat_map(|row| {
            let first = row.split('|').nth(1).unwrap_or_default();
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(|code| code.split(':').next().unwrap().trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    in_readme.sort();
    in_readme.dedup();
    let mut known: Vec<String> = STEPS.iter().flat_map(|s| names(s.syntax)).collect();
    known.sort();
    known.dedup();
    // Aliases the README writes in parentheses count as the step they alias.
    for k in &known {
        assert!(
            in_readme.contains(k) || readme[start..].contains(&format!("(`{k}`)")),
            "step '{k}' is missing from the README table"
        );
    }
    for r in &in_readme {
        assert!(known.contains(r), "the README table lists '{r}', which the parser does not know");
    }
}

#[test]
fn every_name_is_one_steps_and_canonical_forms_use_the_first() {
    let mut all: Vec<&str> = STEPS.iter().flat_map(|s| s.names.iter().copied()).collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a name belongs to two steps");
    for s in STEPS {
        let p = Pipeline::parse(s.example).unwrap();
        // Each alias, in any case, parses to what the canonical name does.
        for alias in s.names {
            for spelled in [alias.to_string(), alias.to_ascii_uppercase()] {
                let text: Vec<String> = s
                    .example
                    .split(',')
                    .map(|step| match step.split_once(':') {
                        Some((n, a)) if n == s.name() => format!("{spelled}:{a}"),
                        None if step == s.name() => spelled.clone(),
                        _ => step.to_string(),
                    })
                    .collect();
                let text = text.join(",");
                assert_eq!(Pipeline::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}")), p, "{text}");
            }
        }
        // The canonical form spells the canonical name of every pixel step.
        for op in &p.ops {
            let shown = op.to_string();
            let name = shown.split(':').next().unwrap();
            assert!(STEPS.iter().any(|t| t.name() == name), "{shown}: '{name}' is not a canonical step name");
        }
    }
}
