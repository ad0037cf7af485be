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

    /// The document as written in its file, without a leading `---` line or a trailing `...`:
    /// what is passed through byte for byte when re-serialising would change its meaning (a
    /// SOPS-encrypted Secret, whose MAC covers the order of its keys).
    pub fn source_text(&self) -> String {
        let is_marker = |line: &str, marker: &str| {
            let line = line.trim_end();
            line == marker || line.is_empty()
        };
        let lines: Vec<&str> = self.text.split_inclusive('\n').collect();
        let start = lines.iter().take_while(|l| is_marker(l, "---")).count();
        let end = lines.len()
            - lines[start..]
                .iter()
                .rev()
                .take_while(|l| is_marker(l, "..."))
                .count();
        let mut text: String = lines[start..end].concat();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text
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
/// `-` is standard input. What cannot be read (a missing path, a file that is not UTF-8, a
/// folder that a symbolic link leads back into) is reported, and the rest is still read, so a
/// user sees every problem in one run.
pub fn read_sources(paths: &[PathBuf]) -> (Vec<Source>, Vec<Diagnostic>) {
    let mut reader = Reader::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            match std::io::stdin().read_to_end(&mut bytes) {
                Ok(_) => reader.add("-".into(), bytes),
                Err(err) => reader.diagnostics.push(Diagnostic::error(format!(
                    "cannot read standard input: {err}"
                ))),
            }
            continue;
        }
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                let mut ancestors = Vec::new();
                let mut files = Vec::new();
                reader.walk(path, &mut ancestors, &mut files);
                files.sort();
                for file in files {
                    reader.read_file(&file);
                }
            }
            Ok(_) => reader.read_file(path),
            Err(err) => reader.diagnostics.push(Diagnostic::error(format!(
                "cannot read {}: {err}",
                path.display()
            ))),
        }
    }
    (reader.sources, reader.diagnostics)
}

#[derive(Default)]
struct Reader {
    sources: Vec<Source>,
    diagnostics: Vec<Diagnostic>,
    /// Files read so far, by their real path, with the name they were read under.
    seen: HashMap<PathBuf, String>,
}

impl Reader {
    fn read_file(&mut self, path: &Path) {
        let name = path.display().to_string();
        if let Ok(real) = std::fs::canonicalize(path) {
            if let Some(first) = self.seen.get(&real) {
                self.diagnostics.push(
                    Diagnostic::warning(format!(
                        "skipped: the same file as {first}, read already (through a symbolic link)"
                    ))
                    .at(Some(Location {
                        file: name,
                        line: 1,
                    })),
                );
                return;
            }
            self.seen.insert(real, name.clone());
        }
        match std::fs::read(path) {
            Ok(bytes) => self.add(name, bytes),
            Err(err) => self
                .diagnostics
                .push(Diagnostic::error(format!("cannot read {name}: {err}"))),
        }
    }

    /// Adds a file's text, or says where it stops being UTF-8.
    fn add(&mut self, name: String, bytes: Vec<u8>) {
        match String::from_utf8(bytes) {
            Ok(text) => self.sources.push(Source { name, text }),
            Err(err) => {
                let bytes = err.as_bytes();
                let valid = err.utf8_error().valid_up_to();
                let line = bytes[..valid].iter().filter(|&&b| b == b'\n').count() + 1;
                let line_start = bytes[..valid]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let column = valid - line_start + 1;
                self.diagnostics.push(
                    Diagnostic::error(format!(
                        "the file is not UTF-8 text (byte 0x{:02x} at column {column}); YAML input must be UTF-8",
                        bytes[valid]
                    ))
                    .at(Some(Location { file: name, line })),
                );
            }
        }
    }

    /// Collects the YAML files under `dir`. `ancestors` holds the real paths of the folders
    /// being walked: a symbolic link back into one of them would repeat the walk forever.
    fn walk(&mut self, dir: &Path, ancestors: &mut Vec<PathBuf>, out: &mut Vec<PathBuf>) {
        let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        if ancestors.contains(&real) {
            self.diagnostics.push(Diagnostic::warning(format!(
                "skipped folder {}: a symbolic link leads back to {}, which is being read already",
                dir.display(),
                real.display()
            )));
            return;
        }
        let cannot_read = |err: std::io::Error| {
            Diagnostic::error(format!("cannot read {}: {err}", dir.display()))
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) => return self.diagnostics.push(cannot_read(err)),
        };
        ancestors.push(real);
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    self.diagnostics.push(cannot_read(err));
                    continue;
                }
            };
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() && crate::write::is_output_dir(&path) {
                self.diagnostics.push(Diagnostic::warning(format!(
                    "skipped folder {}: aigw's own output (pass its files explicitly to read them)",
                    path.display()
                )));
            } else if path.is_dir() {
                self.walk(&path, ancestors, out);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                out.push(path);
            }
        }
        ancestors.pop();
    }
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

/// Parses one source into its documents (see [`parse_sources`]).
pub fn parse_source(source: &Source) -> Result<Vec<Document>, Diagnostic> {
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

/// The parser's message without the location prefix it carries (the diagnostic has its own),
/// in aigw's words where the library's would point at its own options.
fn yaml_error_text(text: &str) -> String {
    let first = first_line(text);
    let re = regex::Regex::new(r"^(error: )?line \d+ column (\d+): ").ok();
    let (message, column) = match re.as_ref().and_then(|re| re.captures(first)) {
        Some(caps) => (&first[caps[0].len()..], Some(caps[2].to_string())),
        None => (first, None),
    };
    let message = match message.strip_prefix("duplicate mapping key: ") {
        Some(rest) => {
            let key = rest.split(", set ").next().unwrap_or(rest);
            format!(
                "the key {} appears twice in one mapping; keep one",
                crate::diag::quoted(key)
            )
        }
        None => message.to_string(),
    };
    match column {
        Some(column) => format!("{message} (column {column})"),
        None => message,
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documents and diagnostics of one file `name` holding `text`.
    fn parse_file(name: &str, text: &str) -> (Vec<Document>, Vec<Diagnostic>) {
        parse_sources(&[Source {
            name: name.into(),
            text: text.into(),
        }])
    }

    fn parse(text: &str) -> Vec<Document> {
        let (docs, diags) = parse_file("t.yaml", text);
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
        let (_, diags) = parse_file("bad.yaml", "kind: A\nspec:\n  a: [1, 2\n  b: 3\n");
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
    fn a_document_as_written_keeps_its_bytes() {
        let docs = parse("---\r\nkind: A\r\n# note\r\nb:   1\r\n...\r\n---\nkind: B\n");
        assert_eq!(docs[0].source_text(), "kind: A\r\n# note\r\nb:   1\r\n");
        assert_eq!(docs[1].source_text(), "kind: B\n");
    }

    #[test]
    fn duplicate_keys_are_reported_in_plain_words() {
        let (_, diags) = parse_file("dup.yaml", "kind: A\nmetadata:\n  name: a\n  name: b\n");
        assert_eq!(
            diags.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "error: dup.yaml:4: invalid YAML: the key \"name\" appears twice in one mapping; keep one (column 3)"
            ]
        );
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aigw-load-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn every_unreadable_file_is_reported_and_the_rest_still_read() {
        let dir = temp_dir("utf8");
        std::fs::write(
            dir.join("a.yaml"),
            b"kind: A\nmetadata:\n  name: \"x\xffy\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("b.yaml"), b"kind: B\n").unwrap();
        std::fs::write(dir.join("c.yaml"), b"\xfe\n").unwrap();
        let (sources, diags) = read_sources(&[dir.clone(), dir.join("missing.yaml")]);
        let names: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec![dir.join("b.yaml").display().to_string()]);
        let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].ends_with("a.yaml:3: the file is not UTF-8 text (byte 0xff at column 11); YAML input must be UTF-8"), "{text:?}");
        assert!(text[1].ends_with("c.yaml:1: the file is not UTF-8 text (byte 0xfe at column 1); YAML input must be UTF-8"), "{text:?}");
        assert!(
            text[2].contains("cannot read") && text[2].contains("missing.yaml"),
            "{text:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_link_loops_are_walked_once() {
        let dir = temp_dir("loop");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a.yaml"), b"kind: A\n").unwrap();
        std::os::unix::fs::symlink("..", dir.join("sub/loop")).unwrap();
        std::os::unix::fs::symlink("sub", dir.join("again")).unwrap();
        let (sources, diags) = read_sources(std::slice::from_ref(&dir));
        assert_eq!(sources.len(), 1, "{sources:?}");
        assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
        let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("a symbolic link leads back")),
            "{text:?}"
        );
        assert!(
            text.iter().any(|t| t.contains("the same file as")),
            "{text:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn non_mapping_documents_are_errors() {
        let (_, diags) = parse_file("list.yaml", "- a\n- b\n");
        assert_eq!(diags.len(), 1);
        assert!(diags[0].to_string().contains("list.yaml:1"));
    }
}
