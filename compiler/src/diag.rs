//! Diagnostics: every error or warning the compiler reports, with the file, line, object and
//! field it concerns. Stages collect diagnostics instead of stopping at the first one, so a user
//! sees every problem of an input set in one run.

use std::fmt;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The build cannot produce output.
    Error,
    /// The build produces output, but something deserves attention.
    Warning,
}

/// One segment of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathSegment {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path to a field inside one document, such as `spec.rules[0].backendRefs[1].weight`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(pub Vec<PathSegment>);

impl FieldPath {
    /// The document root.
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// Parses a dotted path with `[i]` indices (`spec.rules[0].name`).
    pub fn parse(text: &str) -> Self {
        let mut segments = Vec::new();
        for part in text.split('.').filter(|p| !p.is_empty()) {
            let mut rest = part;
            if let Some(open) = rest.find('[') {
                let key = &rest[..open];
                if !key.is_empty() {
                    segments.push(PathSegment::Key(key.to_string()));
                }
                rest = &rest[open..];
                while let Some(stripped) = rest.strip_prefix('[') {
                    let Some(close) = stripped.find(']') else {
                        break;
                    };
                    if let Ok(index) = stripped[..close].parse() {
                        segments.push(PathSegment::Index(index));
                    }
                    rest = &stripped[close + 1..];
                }
            } else {
                segments.push(PathSegment::Key(rest.to_string()));
            }
        }
        FieldPath(segments)
    }

    /// Parses a JSON pointer (`/spec/rules/0/name`); numeric segments are indices.
    pub fn from_pointer(pointer: &str) -> Self {
        let segments = pointer
            .split('/')
            .skip(1)
            .map(|raw| {
                let seg = raw.replace("~1", "/").replace("~0", "~");
                match seg.parse::<usize>() {
                    Ok(index) => PathSegment::Index(index),
                    Err(_) => PathSegment::Key(seg),
                }
            })
            .collect();
        FieldPath(segments)
    }

    /// This path with one more key.
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Key(key.to_string()));
        next
    }

    /// This path with one more index.
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Index(index));
        next
    }

    /// True for the document root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for segment in &self.0 {
            match segment {
                PathSegment::Key(key) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(key)?;
                }
                PathSegment::Index(index) => write!(f, "[{index}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// Where a diagnostic points: a file and line, when known.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    /// The file as the user named it (`-` for standard input).
    pub file: String,
    /// 1-based line.
    pub line: usize,
}

/// What a diagnostic is about, where a stage decides on it by kind rather than by its text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DiagnosticKind {
    /// Any other diagnostic.
    #[default]
    General,
    /// A Secret kept out of the Kubernetes output; moot for the standalone target, which
    /// writes the Secrets it needs as files.
    SecretNotWritten,
    /// An object defined twice in the input.
    DuplicateObject,
}

/// One error or warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// File and line.
    pub location: Option<Location>,
    /// The object, as `Kind namespace/name`.
    pub object: Option<String>,
    /// The field inside the object.
    pub field: Option<FieldPath>,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
    /// What the diagnostic is about, for the stages that filter on it.
    pub kind: DiagnosticKind,
}

impl Diagnostic {
    /// An error with only a message.
    pub fn error(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            location: None,
            object: None,
            field: None,
            message: shorten(message.into()),
            kind: DiagnosticKind::General,
        }
    }

    /// A warning with only a message.
    pub fn warning(message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message)
        }
    }

    /// Sets the kind.
    pub fn kind(mut self, kind: DiagnosticKind) -> Self {
        self.kind = kind;
        self
    }

    /// Sets the location.
    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }

    /// Sets the object.
    pub fn object(mut self, object: impl Into<String>) -> Self {
        self.object = Some(object.into());
        self
    }

    /// Sets the field.
    pub fn field(mut self, field: FieldPath) -> Self {
        self.field = if field.is_root() { None } else { Some(field) };
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.severity {
            Severity::Error => "error: ",
            Severity::Warning => "warning: ",
        })?;
        if let Some(location) = &self.location {
            write!(f, "{}:{}: ", location.file, location.line)?;
        }
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Longest quoted value a message shows in full.
const QUOTED_MAX: usize = 80;
/// Longest message shown in full.
const MESSAGE_MAX: usize = 2048;

/// `value` in double quotes, escaped as JSON, cut to its first characters when it is long (an
/// input value may be megabytes; a diagnostic never repeats it whole).
pub fn quoted(value: &str) -> String {
    let count = value.chars().count();
    if count <= QUOTED_MAX {
        return serde_json::Value::from(value).to_string();
    }
    let head: String = value.chars().take(QUOTED_MAX / 2).collect();
    let head = serde_json::Value::from(head).to_string();
    format!("{}…\" ({count} characters)", &head[..head.len() - 1])
}

/// Cuts long quoted values inside a message (libraries quote the values they reject) and the
/// message itself to a readable length.
fn shorten(message: String) -> String {
    if message.len() <= QUOTED_MAX {
        return message;
    }
    let mut out = String::with_capacity(message.len().min(MESSAGE_MAX + 64));
    let mut rest = message.as_str();
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = quoted_end(after);
        match close {
            Some(close) if after[..close].chars().count() > QUOTED_MAX => {
                let head: String = after[..close].chars().take(QUOTED_MAX / 2).collect();
                let count = after[..close].chars().count();
                out.push_str(&format!("\"{head}…\" ({count} characters)"));
                rest = &after[close + 1..];
            }
            Some(close) => {
                out.push_str(&rest[open..open + 1 + close + 1]);
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    if out.len() > MESSAGE_MAX {
        let mut end = MESSAGE_MAX;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        let more = out.len() - end;
        out.truncate(end);
        out.push_str(&format!("… ({more} more bytes)"));
    }
    out
}

/// Index of the `"` closing a quoted value that starts at `text[0]` (backslash escapes
/// skipped).
fn quoted_end(text: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

/// Sorts diagnostics into a stable order (file, line, then text) and removes exact repeats.
pub fn normalize(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| {
        (a.severity, &a.location, &a.object, a.to_string()).cmp(&(
            b.severity,
            &b.location,
            &b.object,
            b.to_string(),
        ))
    });
    diagnostics.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_print_both_ways() {
        let path = FieldPath::parse("spec.rules[0].backendRefs[12].weight");
        assert_eq!(path.to_string(), "spec.rules[0].backendRefs[12].weight");
        assert_eq!(
            FieldPath::from_pointer("/spec/rules/0/backendRefs/12/weight"),
            path
        );
        assert_eq!(
            FieldPath::from_pointer("/metadata/annotations/a~1b").to_string(),
            "metadata.annotations.a/b"
        );
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let value = "x".repeat(5_000_000);
        let d = Diagnostic::error(format!(
            "unsupported value \"{value}\": must be one of A, B"
        ));
        assert!(d.message.len() < 200, "{}", d.message.len());
        assert!(
            d.message.starts_with("unsupported value \"xxxx"),
            "{}",
            d.message
        );
        assert!(
            d.message
                .ends_with("(5000000 characters): must be one of A, B"),
            "{}",
            d.message
        );
        let d = Diagnostic::error("y".repeat(100_000));
        assert!(d.message.len() < MESSAGE_MAX + 40, "{}", d.message.len());
        assert!(d.message.ends_with("more bytes)"), "{}", d.message);
        assert_eq!(quoted("a\"b"), "\"a\\\"b\"");
        assert!(quoted(&"é".repeat(1000)).ends_with("…\" (1000 characters)"));
        // Short messages and short quoted values are left as they are.
        let text = "value \"abc\" and \"unterminated";
        assert_eq!(Diagnostic::error(text).message, text);
    }

    #[test]
    fn display_names_every_part() {
        let d = Diagnostic::error("weight must be at least 0")
            .at(Some(Location {
                file: "r.yaml".into(),
                line: 7,
            }))
            .object("AIGatewayRoute default/chat")
            .field(FieldPath::parse("spec.rules[0].backendRefs[0].weight"));
        assert_eq!(
            d.to_string(),
            "error: r.yaml:7: AIGatewayRoute default/chat: spec.rules[0].backendRefs[0].weight: weight must be at least 0"
        );
    }
}
