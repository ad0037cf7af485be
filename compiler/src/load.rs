//! Stage 1, load: files, folders and standard input in; one [`Document`] per YAML document out.
//!
//! Input: paths as the user gave them. Folders are walked recursively for `*.yaml` / `*.yml`,
//! in sorted order; `-` reads standard input. Output: every non-empty document as a
//! `serde_json::Value` together with a line index that maps field paths back to the line they
//! were written on, so later stages can say `file:line` for any field they complain about.
//!
//! The YAML is read twice per file: once as parser events (to find document boundaries and the
//! line of every node) and once per document by serde-saphyr (to build the value). Both use the
//! same parser, so they agree on what a document is.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_saphyr::granit_parser::{Event, Parser};

use crate::diag::{Diagnostic, FieldPath, Location};

/// The text of one input file (or of standard input).
#[derive(Debug, Clone)]
pub struct Source {
    /// The name shown in diagnostics: the path as the user wrote it, or `-`.
    pub name: String,
    /// The file's text.
    pub text: String,
}

/// One YAML document of an input file.
#[derive(Debug, Clone)]
pub struct Document {
    /// Name of the file the document came from.
    pub file: Arc<str>,
    /// Line of the document's first node.
    pub line: usize,
    /// The document's content.
    pub value: serde_json::Value,
    /// The document's source text (empty for generated documents).
    text: Arc<str>,
    /// Line of the file on which `text` starts.
    text_line: usize,
}

impl Document {
    /// Builds a document from a value with no source text (generated or test input).
    pub fn from_value(file: &str, value: serde_json::Value) -> Self {
        Document {
            file: Arc::from(file),
            line: 1,
            value,
            text: Arc::from(""),
            text_line: 1,
        }
    }

    /// The line on which `path` (or its closest written ancestor) appears. Computed on demand
    /// from the document's text: only diagnostics need it, so the happy path never pays for it.
    pub fn line_of(&self, path: &FieldPath) -> usize {
        let lines = index_lines(&self.text, self.text_line);
        let mut segments = path.0.clone();
        loop {
            if let Some(line) = lines.get(&FieldPath(segments.clone())) {
                return *line;
            }
            if segments.pop().is_none() {
                return self.line;
            }
        }
    }

    /// File and line of `path`.
    pub fn location(&self, path: &FieldPath) -> Location {
        Location {
            file: self.file.to_string(),
            line: self.line_of(path),
        }
    }
}

/// Reads every input path. Folders are walked recursively (sorted, `*.yaml` / `*.yml` only);
/// `-` is standard input. A path that cannot be read is an error naming it.
pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<Source>, Diagnostic> {
    let mut sources = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|err| Diagnostic::error(format!("cannot read standard input: {err}")))?;
            sources.push(Source {
                name: "-".into(),
                text,
            });
            continue;
        }
        let meta = std::fs::metadata(path)
            .map_err(|err| Diagnostic::error(format!("cannot read {}: {err}", path.display())))?;
        if meta.is_dir() {
            let mut files = Vec::new();
            collect_yaml_files(path, &mut files)?;
            files.sort();
            for file in files {
                sources.push(read_file(&file)?);
            }
        } else {
            sources.push(read_file(path)?);
        }
    }
    Ok(sources)
}

fn read_file(path: &Path) -> Result<Source, Diagnostic> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| Diagnostic::error(format!("cannot read {}: {err}", path.display())))?;
    Ok(Source {
        name: path.display().to_string(),
        text,
    })
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Diagnostic> {
    let entries = std::fs::read_dir(dir)
        .map_err(|err| Diagnostic::error(format!("cannot read {}: {err}", dir.display())))?;
    for entry in entries {
        let entry = entry
            .map_err(|err| Diagnostic::error(format!("cannot read {}: {err}", dir.display())))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_yaml_files(&path, out)?;
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses every source into documents, files in parallel on the available cores (the result
/// does not depend on it). Empty documents are skipped; a document that is not a mapping, or
/// YAML that does not parse, is an error naming file and line.
pub fn parse_sources(sources: &[Source]) -> (Vec<Document>, Vec<Diagnostic>) {
    let results = crate::parallel::map(sources, parse_source);
    let mut documents = Vec::new();
    let mut diagnostics = Vec::new();
    for result in results {
        match result {
            Ok(mut docs) => documents.append(&mut docs),
            Err(diag) => diagnostics.push(diag),
        }
    }
    (documents, diagnostics)
}

/// One document's lines of a file: `[start, end)` 0-based line indices.
struct Chunk {
    start: usize,
    end: usize,
}

/// Splits a file into documents at its `---` lines. YAML forbids `---` and `...` at the start
/// of a line inside content, so these lines are always document boundaries; directive lines
/// (`%...`) right before a `---` belong to the document it starts.
fn split_documents(lines: &[&str]) -> Vec<Chunk> {
    let is_marker =
        |line: &str| line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
    let mut chunks = Vec::new();
    let mut start = 0;
    for (i, line) in lines.iter().enumerate() {
        if is_marker(line.trim_end_matches('\r')) && i > start {
            let mut end = i;
            while end > start && lines[end - 1].starts_with('%') {
                end -= 1;
            }
            if end > start {
                chunks.push(Chunk { start, end });
            }
            start = end;
        }
    }
    if start < lines.len() {
        chunks.push(Chunk {
            start,
            end: lines.len(),
        });
    }
    chunks
}

/// The 1-based line of the first content of a chunk (not blank, comment, directive or a bare
/// `---`).
fn first_content_line(lines: &[&str], chunk: &Chunk) -> usize {
    (chunk.start..chunk.end)
        .find(|&i| {
            let t = lines[i].trim();
            !(t.is_empty() || t.starts_with('#') || t.starts_with('%') || t == "---" || t == "...")
        })
        .unwrap_or(chunk.start)
        + 1
}

enum Frame {
    Mapping {
        key: Option<(String, usize)>,
        path: FieldPath,
    },
    Sequence {
        next: usize,
        path: FieldPath,
    },
}

/// Maps every field path of one document to its line. A mapping entry's line is its key's
/// line, which is where a reader looks for it.
fn index_lines(text: &str, first_line: usize) -> HashMap<FieldPath, usize> {
    let mut lines = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let offset = first_line.saturating_sub(1);
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else { break };
        let line = span.start.line() + offset;
        let is_key = matches!(stack.last(), Some(Frame::Mapping { key: None, .. }));
        match event {
            Event::Scalar(ref value, ..) if is_key => {
                if let Some(Frame::Mapping { key, .. }) = stack.last_mut() {
                    *key = Some((value.to_string(), line));
                }
            }
            Event::Alias(..) if is_key => {
                if let Some(Frame::Mapping { key, .. }) = stack.last_mut() {
                    *key = Some((String::new(), line));
                }
            }
            Event::Scalar(..) | Event::Alias(..) => {
                let (path, at) = child_path(&mut stack, line);
                lines.entry(path).or_insert(at);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let (path, at) = child_path(&mut stack, line);
                lines.entry(path.clone()).or_insert(at);
                stack.push(match event {
                    Event::MappingStart(..) => Frame::Mapping { key: None, path },
                    _ => Frame::Sequence { next: 0, path },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::DocumentEnd => break,
            _ => {}
        }
    }
    lines
}

/// The path of a node starting at `line` in value position, and the line to report for it.
fn child_path(stack: &mut [Frame], line: usize) -> (FieldPath, usize) {
    match stack.last_mut() {
        None => (FieldPath::root(), line),
        Some(Frame::Mapping { key, path }) => {
            let (name, key_line) = key.take().unwrap_or_default();
            (path.key(&name), key_line)
        }
        Some(Frame::Sequence { next, path }) => {
            let child = path.index(*next);
            *next += 1;
            (child, line)
        }
    }
}

fn parse_source(source: &Source) -> Result<Vec<Document>, Diagnostic> {
    let lines: Vec<&str> = source
        .text
        .split_inclusive('\n')
        .map(|l| l.trim_end_matches('\n'))
        .collect();
    let mut offsets = Vec::with_capacity(lines.len() + 1);
    let mut offset = 0;
    for line in source.text.split_inclusive('\n') {
        offsets.push(offset);
        offset += line.len();
    }
    offsets.push(source.text.len());
    let file: Arc<str> = Arc::from(source.name.as_str());
    let mut documents = Vec::new();
    for chunk in split_documents(&lines) {
        let text = &source.text[offsets[chunk.start]..offsets[chunk.end]];
        let first = first_content_line(&lines, &chunk);
        let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|err| {
            let line = err
                .location()
                .map(|l| chunk.start + l.line() as usize)
                .unwrap_or(first);
            Diagnostic::error(format!(
                "invalid YAML: {}",
                yaml_error_text(&err.to_string())
            ))
            .at(Some(Location {
                file: source.name.clone(),
                line,
            }))
        })?;
        if value.is_null() {
            continue;
        }
        if !value.is_object() {
            return Err(
                Diagnostic::error("a document must be a mapping with apiVersion and kind").at(
                    Some(Location {
                        file: source.name.clone(),
                        line: first,
                    }),
                ),
            );
        }
        documents.push(Document {
            file: file.clone(),
            line: first,
            value,
            text: Arc::from(text),
            text_line: chunk.start + 1,
        });
    }
    Ok(documents)
}

/// The parser's message without the location prefix it carries (the diagnostic has its own).
fn yaml_error_text(text: &str) -> String {
    let first = first_line(text);
    let re = regex::Regex::new(r"^(error: )?line \d+ column (\d+): ").ok();
    match re.as_ref().and_then(|re| re.captures(first)) {
        Some(caps) => format!("{} (column {})", &first[caps[0].len()..], &caps[2]),
        None => first.to_string(),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Document> {
        let (docs, diags) = parse_sources(&[Source {
            name: "t.yaml".into(),
            text: text.into(),
        }]);
        assert!(diags.is_empty(), "{diags:?}");
        docs
    }

    #[test]
    fn splits_documents_and_skips_empty_ones() {
        let docs =
            parse("---\n# only a comment\n---\nkind: A\nmetadata:\n  name: a\n---\n---\nkind: B\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value["kind"], "A");
        assert_eq!(docs[0].line, 4);
        assert_eq!(docs[1].value["kind"], "B");
        assert_eq!(docs[1].line, 9);
    }

    #[test]
    fn maps_field_paths_to_lines() {
        let docs = parse(
            "kind: A\nspec:\n  rules:\n  - name: one\n    backendRefs:\n    - name: x\n      weight: 3\n---\nkind: B\nspec: {a: [1, 2]}\n",
        );
        let a = &docs[0];
        assert_eq!(
            a.line_of(&FieldPath::parse("spec.rules[0].backendRefs[0].weight")),
            7
        );
        assert_eq!(a.line_of(&FieldPath::parse("spec.rules[0].name")), 4);
        // A missing field points at its closest ancestor.
        assert_eq!(
            a.line_of(&FieldPath::parse("spec.rules[0].backendRefs[0].priority")),
            6
        );
        assert_eq!(docs[1].line_of(&FieldPath::parse("spec.a[1]")), 10);
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let (_, diags) = parse_sources(&[Source {
            name: "bad.yaml".into(),
            text: "kind: A\nspec:\n  a: [1, 2\n  b: 3\n".into(),
        }]);
        assert_eq!(diags.len(), 1);
        let text = diags[0].to_string();
        assert!(text.starts_with("error: bad.yaml:"), "{text}");
        assert!(text.contains("invalid YAML"), "{text}");
    }

    #[test]
    fn scalars_follow_yaml_core_schema() {
        let docs = parse("kind: A\ndata:\n  a: 'no'\n  b: 010\n  c: \"1.0\"\n  d: true\n  e: 12\n");
        let data = &docs[0].value["data"];
        assert_eq!(data["a"], "no");
        assert_eq!(data["c"], "1.0");
        assert_eq!(data["d"], true);
        assert_eq!(data["e"], 12);
    }

    #[test]
    fn non_mapping_documents_are_errors() {
        let (_, diags) = parse_sources(&[Source {
            name: "list.yaml".into(),
            text: "- a\n- b\n".into(),
        }]);
        assert_eq!(diags.len(), 1);
        assert!(diags[0].to_string().contains("list.yaml:1"));
    }
}
