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

use crate::diag::{Diagnostic, FieldPath, Location, PathSegment};

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
    lines: HashMap<FieldPath, usize>,
}

impl Document {
    /// Builds a document from a value with no source text (generated or test input).
    pub fn from_value(file: &str, value: serde_json::Value) -> Self {
        Document {
            file: Arc::from(file),
            line: 1,
            value,
            lines: HashMap::new(),
        }
    }

    /// The line on which `path` (or its closest written ancestor) appears.
    pub fn line_of(&self, path: &FieldPath) -> usize {
        let mut segments = path.0.clone();
        loop {
            if let Some(line) = self.lines.get(&FieldPath(segments.clone())) {
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

/// Parses every source into documents. Empty documents are skipped; a document that is not a
/// mapping, or YAML that does not parse, is an error naming file and line.
pub fn parse_sources(sources: &[Source]) -> (Vec<Document>, Vec<Diagnostic>) {
    let mut documents = Vec::new();
    let mut diagnostics = Vec::new();
    for source in sources {
        match parse_source(source) {
            Ok(mut docs) => documents.append(&mut docs),
            Err(diag) => diagnostics.push(diag),
        }
    }
    (documents, diagnostics)
}

/// Per-document facts gathered from the parser events of one file.
struct DocumentOutline {
    start_line: usize,
    first_node_line: usize,
    empty: bool,
    lines: HashMap<FieldPath, usize>,
}

enum Frame {
    Mapping {
        key: Option<String>,
        path: FieldPath,
    },
    Sequence {
        next: usize,
        path: FieldPath,
    },
}

fn outline(source: &Source) -> Result<Vec<DocumentOutline>, Diagnostic> {
    let mut docs: Vec<DocumentOutline> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    for event in Parser::new_from_str(&source.text) {
        let (event, span) = event.map_err(|err| {
            Diagnostic::error(format!("invalid YAML: {}", err.info())).at(Some(Location {
                file: source.name.clone(),
                line: err.marker().line(),
            }))
        })?;
        let line = span.start.line();
        match event {
            Event::DocumentStart(..) => {
                stack.clear();
                docs.push(DocumentOutline {
                    start_line: line,
                    first_node_line: line,
                    empty: true,
                    lines: HashMap::new(),
                });
            }
            Event::Scalar(ref value, ..) => {
                if let Some(Frame::Mapping { key, .. }) = stack.last_mut()
                    && key.is_none()
                {
                    *key = Some(value.to_string());
                    continue;
                }
                let is_root_null = stack.is_empty() && value.is_empty();
                node_at(&mut docs, &mut stack, line, !is_root_null);
            }
            Event::Alias(..) => {
                if let Some(Frame::Mapping { key, .. }) = stack.last_mut()
                    && key.is_none()
                {
                    *key = Some(String::new());
                    continue;
                }
                node_at(&mut docs, &mut stack, line, true);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = node_at(&mut docs, &mut stack, line, true);
                stack.push(match event {
                    Event::MappingStart(..) => Frame::Mapping { key: None, path },
                    _ => Frame::Sequence { next: 0, path },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            _ => {}
        }
    }
    Ok(docs)
}

/// Records a node starting at `line` in value position; returns its path.
fn node_at(
    docs: &mut [DocumentOutline],
    stack: &mut [Frame],
    line: usize,
    content: bool,
) -> FieldPath {
    let path = match stack.last_mut() {
        None => FieldPath::root(),
        Some(Frame::Mapping { key, path }) => path.key(key.take().as_deref().unwrap_or_default()),
        Some(Frame::Sequence { next, path }) => {
            let child = path.index(*next);
            *next += 1;
            child
        }
    };
    if let Some(doc) = docs.last_mut() {
        if path.is_root() {
            doc.first_node_line = line;
            doc.empty = !content;
        }
        doc.lines.entry(path.clone()).or_insert(line);
    }
    path
}

fn parse_source(source: &Source) -> Result<Vec<Document>, Diagnostic> {
    let outlines = outline(source)?;
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(source.text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset_of_line = |line: usize| -> usize {
        line_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(source.text.len())
    };
    let file: Arc<str> = Arc::from(source.name.as_str());
    let mut documents = Vec::new();
    for (i, doc) in outlines.iter().enumerate() {
        if doc.empty {
            continue;
        }
        let start = offset_of_line(doc.start_line);
        let end = outlines
            .get(i + 1)
            .map(|next| offset_of_line(next.start_line))
            .unwrap_or(source.text.len())
            .max(start);
        let text = source.text.get(start..end).unwrap_or_default();
        let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|err| {
            Diagnostic::error(format!("invalid YAML: {}", first_line(&err.to_string()))).at(Some(
                Location {
                    file: source.name.clone(),
                    line: doc.first_node_line,
                },
            ))
        })?;
        if value.is_null() {
            continue;
        }
        if !value.is_object() {
            return Err(
                Diagnostic::error("a document must be a mapping with apiVersion and kind").at(
                    Some(Location {
                        file: source.name.clone(),
                        line: doc.first_node_line,
                    }),
                ),
            );
        }
        let mut lines = doc.lines.clone();
        lines.retain(|path, _| {
            !path
                .0
                .iter()
                .any(|s| matches!(s, PathSegment::Key(k) if k.is_empty()))
        });
        documents.push(Document {
            file: file.clone(),
            line: doc.first_node_line,
            value,
            lines,
        });
    }
    Ok(documents)
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
