//! What an operation reports about the things it could not handle while
//! it went on with the others: damaged stored objects ([`Damage`]) and
//! files or entries that failed ([`FileErrors`]). Plain records, below
//! `error` and `catalog`, so both can name them without importing each
//! other.

/// A stored object that failed verification, and what is wrong with it.
/// In JSON it is `{"object": ..., "why": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Damage {
    /// The object: its store key, or its name below the tenant
    /// (`index/<id>`, `snapshots/<id>`) where the list says so.
    pub object: String,
    /// What is wrong, one line.
    pub why: String,
}

impl Damage {
    /// `object` is damaged because of `why`.
    pub fn new(object: impl Into<String>, why: impl Into<String>) -> Self {
        Self { object: object.into(), why: why.into() }
    }
}

/// One file or directory entry an operation could not handle while it went
/// on with the others (a backup's unreadable file, a restore's unwritable
/// one). In JSON it is a `[path, error]` pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The path, as the operation names it (relative to the snapshot or
    /// the source).
    pub path: String,
    /// What went wrong, one line.
    pub error: String,
}

impl serde::Serialize for FileError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.path, &self.error).serialize(s)
    }
}

/// The per-file errors of one operation, in the order they happened. In
/// JSON it is an array of `[path, error]` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct FileErrors(Vec<FileError>);

impl FileErrors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Records that `path` failed with `error`.
    pub fn push(&mut self, path: impl Into<String>, error: impl std::fmt::Display) {
        self.0.push(FileError { path: path.into(), error: error.to_string() });
    }
    /// Appends another operation's errors.
    pub fn extend(&mut self, other: FileErrors) {
        self.0.extend(other.0);
    }
    /// The same errors with `prefix` before each path (the errors of a
    /// subdirectory, named from its parent).
    pub fn prefixed(&self, prefix: &str) -> FileErrors {
        self.iter().map(|e| FileError { path: format!("{prefix}{}", e.path), error: e.error.clone() }).collect()
    }
    /// Whether nothing failed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// How many entries failed.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// The errors, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, FileError> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a FileErrors {
    type Item = &'a FileError;
    type IntoIter = std::slice::Iter<'a, FileError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for FileErrors {
    type Item = FileError;
    type IntoIter = std::vec::IntoIter<FileError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<FileError> for FileErrors {
    fn from_iter<I: IntoIterator<Item = FileError>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}
