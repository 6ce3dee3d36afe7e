//! The figures the documentation quotes are checked against the results files they come from,
//! so that a rerun of `loadgen compare` cannot leave a stale number in the prose.
//!
//! A quoted figure is written as a span:
//!
//! ```text
//! <!-- num: capacity[subject=epoll,conns=100]/at_common/server/cpu_us_per_req fmt=.1 -->11.9<!-- /num -->
//! ```
//!
//! - the path starts in `docs/results/results.json` (or `file=NAME` under `docs/results/`); a
//!   segment `key` enters an object, `key[field=value,...]` picks the one element of the array
//!   `key` whose fields print as those values (`null` matches a JSON null), and a bare number
//!   indexes an array;
//! - `fmt=.N` prints N decimals; `fmt=,.N` also groups thousands with commas;
//! - `scale=X` multiplies first (e.g. `scale=1024` turns KiB into bytes); `scale=1/1024` divides;
//! - `rs=FILE` (a Rust file, from the repository root) makes the path the name of a `const` in
//!   it, whose value is its initializer as integer arithmetic (`64 * 1024`, `1 << 20`, `4_096`):
//!   a constant of the code quoted in the prose follows the code;
//! - an opener written right after a backtick is an example in a code span and is skipped.
//!
//! `cargo test --test docs_numbers` fails on any span whose text differs from the value;
//! `C10K_DOCS_REGEN=1 cargo test --test docs_numbers` rewrites the spans from the JSON instead.

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const OPEN: &str = "<!-- num: ";
const CLOSE: &str = "<!-- /num -->";

#[derive(Debug)]
struct Span {
    /// Byte range of the figure's text between the two comments.
    text_start: usize,
    text_end: usize,
    file: String,
    path: String,
    decimals: usize,
    group_thousands: bool,
    scale: f64,
    /// `rs=FILE`: the path is a `const` of this Rust file, not a JSON path.
    rust_file: Option<String>,
}

fn parse_spans(doc: &str) -> Result<Vec<Span>, String> {
    let mut spans = Vec::new();
    let mut at = 0;
    while let Some(found) = doc[at..].find(OPEN) {
        // An opener right after a backtick is an example in a code span, not a figure.
        if doc[..at + found].ends_with('`') {
            at += found + OPEN.len();
            continue;
        }
        let spec_start = at + found + OPEN.len();
        let spec_len = doc[spec_start..]
            .find("-->")
            .ok_or_else(|| format!("unclosed span spec at byte {spec_start}"))?;
        let spec = doc[spec_start..spec_start + spec_len].trim();
        let text_start = spec_start + spec_len + "-->".len();
        let text_len = doc[text_start..]
            .find(CLOSE)
            .ok_or_else(|| format!("span `{spec}` has no {CLOSE}"))?;
        let text_end = text_start + text_len;

        let mut words = spec.split_whitespace();
        let path = words
            .next()
            .ok_or_else(|| "span without a path".to_string())?
            .to_string();
        let mut span = Span {
            text_start,
            text_end,
            file: "results.json".to_string(),
            path,
            decimals: 0,
            group_thousands: false,
            scale: 1.0,
            rust_file: None,
        };
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("span `{spec}`: `{word}` is not key=value"))?;
            match key {
                "file" => span.file = value.to_string(),
                "fmt" => {
                    let (group, decimals) = match value.strip_prefix(',') {
                        Some(rest) => (true, rest),
                        None => (false, value),
                    };
                    let decimals = decimals
                        .strip_prefix('.')
                        .and_then(|d| d.parse().ok())
                        .ok_or_else(|| format!("span `{spec}`: fmt must be .N or ,.N"))?;
                    span.group_thousands = group;
                    span.decimals = decimals;
                }
                "scale" => {
                    let number = |text: &str| {
                        text.parse::<f64>()
                            .map_err(|_| format!("span `{spec}`: scale is not X or X/Y"))
                    };
                    span.scale = match value.split_once('/') {
                        Some((over, under)) => number(over)? / number(under)?,
                        None => number(value)?,
                    }
                }
                "rs" => span.rust_file = Some(value.to_string()),
                _ => return Err(format!("span `{spec}`: unknown option `{key}`")),
            }
        }
        spans.push(span);
        at = text_end + CLOSE.len();
    }
    Ok(spans)
}

/// How a JSON scalar prints for matching `[field=value]`: strings bare, numbers as written.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        // `[offload=null]` picks the run that had no such setting (blocking.json's inline runs).
        Value::Null => Some("null".to_string()),
        _ => None,
    }
}

fn resolve<'a>(root: &'a Value, path: &str) -> Result<&'a Value, String> {
    let mut here = root;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        let (key, filter) = match segment.split_once('[') {
            Some((key, rest)) => (
                key,
                Some(
                    rest.strip_suffix(']')
                        .ok_or_else(|| format!("`{segment}`: missing ]"))?,
                ),
            ),
            None => (segment, None),
        };
        here = match (here, key.parse::<usize>()) {
            (Value::Array(items), Ok(index)) => items
                .get(index)
                .ok_or_else(|| format!("`{segment}`: index out of range"))?,
            _ => here
                .get(key)
                .ok_or_else(|| format!("`{segment}`: no key `{key}`"))?,
        };
        if let Some(filter) = filter {
            let wanted: Vec<(&str, &str)> = filter
                .split(',')
                .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
                .collect();
            let items = here
                .as_array()
                .ok_or_else(|| format!("`{segment}`: `{key}` is not an array"))?;
            let matching: Vec<&Value> = items
                .iter()
                .filter(|item| {
                    wanted.iter().all(|(field, value)| {
                        item.get(*field).and_then(scalar_text).as_deref() == Some(*value)
                    })
                })
                .collect();
            here = match matching.as_slice() {
                [one] => one,
                [] => return Err(format!("`{segment}`: no element matches")),
                many => return Err(format!("`{segment}`: {} elements match", many.len())),
            };
        }
    }
    Ok(here)
}

/// Rounds half away from zero, as `f64::round` and loadgen's report tables do (`format!`
/// alone would round an exact half to even: 41,994.5 would print as 41,994, the table 41,995).
fn format_number(value: f64, decimals: usize, group_thousands: bool) -> String {
    let factor = 10f64.powi(decimals as i32);
    let rounded = (value * factor).round() / factor;
    let text = format!("{rounded:.decimals$}");
    if !group_thousands {
        return text;
    }
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    match fraction {
        Some(fraction) => format!("{sign}{grouped}.{fraction}"),
        None => format!("{sign}{grouped}"),
    }
}

/// The value of `const NAME: T = EXPR;` in Rust source `code`.
fn rust_const(code: &str, name: &str) -> Result<f64, String> {
    let declaration = format!("const {name}:");
    let at = code
        .find(&declaration)
        .ok_or_else(|| format!("no `{declaration}`"))?;
    let rest = &code[at + declaration.len()..];
    let (_, initializer) = rest
        .split_once('=')
        .ok_or_else(|| format!("`{name}` has no initializer"))?;
    let (expr, _) = initializer
        .split_once(';')
        .ok_or_else(|| format!("`{name}`: no `;`"))?;
    ConstExpr::new(expr)
        .evaluate()
        .map_err(|e| format!("`{name} ={expr}`: {e}"))
}

/// Integer arithmetic as constants are written: literals (`4_096`, `64u64`), `+ - * /`, `<<`
/// and parentheses, with Rust's precedence. Anything else (a name, a call) is an error, so a
/// constant the checker cannot read fails the test instead of being skipped.
struct ConstExpr<'a> {
    rest: &'a str,
}

impl<'a> ConstExpr<'a> {
    fn new(text: &'a str) -> Self {
        ConstExpr { rest: text }
    }

    fn evaluate(mut self) -> Result<f64, String> {
        let value = self.shift()?;
        if self.rest.trim().is_empty() {
            Ok(value)
        } else {
            Err(format!("cannot read `{}`", self.rest.trim()))
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        let trimmed = self.rest.trim_start();
        match trimmed.strip_prefix(token) {
            Some(after) => {
                self.rest = after;
                true
            }
            None => false,
        }
    }

    fn shift(&mut self) -> Result<f64, String> {
        let mut value = self.sum()?;
        while self.eat("<<") {
            value *= 2f64.powf(self.sum()?);
        }
        Ok(value)
    }

    fn sum(&mut self) -> Result<f64, String> {
        let mut value = self.product()?;
        loop {
            if self.eat("+") {
                value += self.product()?;
            } else if self.eat("-") {
                value -= self.product()?;
            } else {
                return Ok(value);
            }
        }
    }

    fn product(&mut self) -> Result<f64, String> {
        let mut value = self.atom()?;
        loop {
            if self.eat("*") {
                value *= self.atom()?;
            } else if self.eat("/") {
                value /= self.atom()?;
            } else {
                return Ok(value);
            }
        }
    }

    fn atom(&mut self) -> Result<f64, String> {
        if self.eat("(") {
            let value = self.shift()?;
            return if self.eat(")") {
                Ok(value)
            } else {
                Err("missing )".to_string())
            };
        }
        let trimmed = self.rest.trim_start();
        let len = trimmed
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(trimmed.len());
        // A type suffix (`64u64`, `0.9f64`) is dropped; the digits must be all that is left.
        let literal = &trimmed[..len];
        if !literal.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("cannot read `{trimmed}`"));
        }
        let value = strip_type_suffix(literal)
            .filter(|&c| c != '_')
            .collect::<String>()
            .parse::<f64>()
            .map_err(|_| format!("cannot read `{trimmed}`"))?;
        self.rest = &trimmed[len..];
        Ok(value)
    }
}

/// A numeric literal without its type suffix (`u64`, `usize`, `f64`, ...).
fn strip_type_suffix(literal: &str) -> std::str::Chars<'_> {
    let end = literal
        .find(['u', 'i', 'f'])
        .filter(|&i| i > 0)
        .unwrap_or(literal.len());
    literal[..end].chars()
}

fn expected_text(
    span: &Span,
    results: &mut HashMap<String, Value>,
    results_dir: &Path,
) -> Result<String, String> {
    if let Some(rust_file) = &span.rust_file {
        let file = results_dir.join("../..").join(rust_file);
        let code = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let number = rust_const(&code, &span.path)?;
        return Ok(format_number(
            number * span.scale,
            span.decimals,
            span.group_thousands,
        ));
    }
    if !results.contains_key(&span.file) {
        let file = results_dir.join(&span.file);
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not JSON: {e}", file.display()))?;
        results.insert(span.file.clone(), value);
    }
    let value = resolve(&results[&span.file], &span.path)?;
    let number = value
        .as_f64()
        .ok_or_else(|| format!("`{}` is {value}, not a number", span.path))?;
    Ok(format_number(
        number * span.scale,
        span.decimals,
        span.group_thousands,
    ))
}

fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("docs/ is readable") {
            let path = entry.expect("a docs/ entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Checks (or, with `regenerate`, rewrites) every span in `doc`; returns the new text and the
/// problems found.
fn check_doc(
    doc: &str,
    results: &mut HashMap<String, Value>,
    results_dir: &Path,
    regenerate: bool,
) -> (String, Vec<String>, usize) {
    let spans = match parse_spans(doc) {
        Ok(spans) => spans,
        Err(e) => return (doc.to_string(), vec![e], 0),
    };
    let mut problems = Vec::new();
    let mut rewritten = String::with_capacity(doc.len());
    let mut copied_to = 0;
    for span in &spans {
        let shown = &doc[span.text_start..span.text_end];
        match expected_text(span, results, results_dir) {
            Ok(expected) if expected == shown => {}
            Ok(expected) if regenerate => {
                rewritten.push_str(&doc[copied_to..span.text_start]);
                rewritten.push_str(&expected);
                copied_to = span.text_end;
            }
            Ok(expected) => problems.push(format!(
                "`{}` in {}: the text says {shown}, the results say {expected}",
                span.path, span.file
            )),
            Err(e) => problems.push(format!("`{}` in {}: {e}", span.path, span.file)),
        }
    }
    rewritten.push_str(&doc[copied_to..]);
    (rewritten, problems, spans.len())
}

#[test]
fn every_quoted_figure_matches_its_results_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let results_dir = root.join("docs/results");
    let regenerate = std::env::var_os("C10K_DOCS_REGEN").is_some();
    let mut results = HashMap::new();
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in markdown_files(root) {
        let doc = std::fs::read_to_string(&file).expect("a readable markdown file");
        let (rewritten, found, count) = check_doc(&doc, &mut results, &results_dir, regenerate);
        checked += count;
        let name = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        problems.extend(found.into_iter().map(|p| format!("{name}: {p}")));
        if regenerate && rewritten != doc {
            std::fs::write(&file, rewritten).expect("rewrite a markdown file");
        }
    }
    assert!(
        checked >= 20,
        "only {checked} checked figures found: the spans were lost"
    );
    assert!(
        problems.is_empty(),
        "{} figure(s) disagree with docs/results (rerun with C10K_DOCS_REGEN=1 to rewrite them):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn a_changed_figure_is_caught_and_regenerated() {
    let results_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results");
    let mut results = HashMap::new();
    let span = "<!-- num: capacity[subject=epoll,conns=100]/conns fmt=,.0 -->";
    let good = format!("a {span}100<!-- /num --> b");
    let (_, problems, count) = check_doc(&good, &mut results, &results_dir, false);
    assert_eq!((count, problems.len()), (1, 0), "{problems:?}");

    let edited = format!("a {span}101<!-- /num --> b");
    let (_, problems, _) = check_doc(&edited, &mut results, &results_dir, false);
    assert_eq!(problems.len(), 1);
    assert!(problems[0].contains("says 101"), "{problems:?}");

    let (regenerated, problems, _) = check_doc(&edited, &mut results, &results_dir, true);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(regenerated, good);
}

#[test]
fn numbers_format_as_the_docs_write_them() {
    assert_eq!(format_number(1234567.891, 1, true), "1,234,567.9");
    assert_eq!(format_number(999.6, 0, true), "1,000");
    assert_eq!(format_number(2.484, 2, false), "2.48");
    assert_eq!(format_number(-1234.0, 0, true), "-1,234");
    assert_eq!(format_number(41994.5, 0, true), "41,995");
    assert_eq!(format_number(0.25, 1, false), "0.3");
}

#[test]
fn an_example_in_a_code_span_is_not_a_figure() {
    let doc = "write `<!-- num: a/b fmt=.1 -->` before the figure and `<!-- /num -->` after it";
    assert_eq!(parse_spans(doc).map(|s| s.len()), Ok(0));
    let real = "<!-- num: a/b fmt=.1 -->1.0<!-- /num -->";
    assert_eq!(parse_spans(real).map(|s| s.len()), Ok(1));
}

#[test]
fn code_constants_are_read_from_their_source() {
    let code = "pub const OUT: usize = 64 * 1024;\nconst SHIFTED: u64 = 2 + 1 << 4;\n\
                const SHARE: f64 = 0.9;\nconst BIG: u64 = 3_600_000_000u64;\n\
                const GROUPED: usize = (2 + 1) * 4;\nconst CALL: Duration = Duration::from_secs(5);";
    assert_eq!(rust_const(code, "OUT"), Ok(65536.0));
    // `+` binds tighter than `<<` in Rust: (2 + 1) << 4.
    assert_eq!(rust_const(code, "SHIFTED"), Ok(48.0));
    assert_eq!(rust_const(code, "SHARE"), Ok(0.9));
    assert_eq!(rust_const(code, "BIG"), Ok(3_600_000_000.0));
    assert_eq!(rust_const(code, "GROUPED"), Ok(12.0));
    assert!(
        rust_const(code, "CALL").is_err(),
        "a call is not read as a number"
    );
    assert!(rust_const(code, "ABSENT").is_err());

    // A span quoting a constant of this repository's code, in KiB.
    let results_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results");
    let span = "<!-- num: OUTPUT_HIGH_WATER rs=src/proto/mod.rs scale=1/1024 fmt=.0 -->";
    let (_, problems, count) = check_doc(
        &format!("{span}64<!-- /num --> KiB"),
        &mut HashMap::new(),
        &results_dir,
        false,
    );
    assert_eq!((count, problems.len()), (1, 0), "{problems:?}");
    let (_, problems, _) = check_doc(
        &format!("{span}32<!-- /num --> KiB"),
        &mut HashMap::new(),
        &results_dir,
        false,
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
}

#[test]
fn a_null_setting_is_picked_by_null() {
    // blocking.json's runs differ only by `offload`, which is null for a run without it.
    let runs: Value = serde_json::json!({"runs": [
        {"backend": "epoll", "offload": null, "p99": 48991},
        {"backend": "epoll", "offload": 4, "p99": 12647},
    ]});
    let inline = resolve(&runs, "runs[backend=epoll,offload=null]/p99");
    assert_eq!(inline.map(|v| v.as_f64()), Ok(Some(48991.0)));
    let offloaded = resolve(&runs, "runs[backend=epoll,offload=4]/p99");
    assert_eq!(offloaded.map(|v| v.as_f64()), Ok(Some(12647.0)));
}
