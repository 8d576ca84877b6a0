//! Path globs for `persistent.paths` (SPEC section 2).
//!
//! A glob is matched against the request path as raw bytes (the
//! request-target up to, not including, `?`; not percent-decoded),
//! case-sensitively:
//!
//! - `*` matches any run of bytes, including `/` and the empty run;
//! - `?` matches exactly one byte;
//! - `[...]` matches one byte from a class: `[abc]`, ranges `[a-z]`, and
//!   negation with `[!a]` or `[^a]`; a `]` right after the opening `[` (or
//!   after `!`/`^`) is a member, and a `-` first or last is a member;
//! - every other byte matches itself. There are no escapes: write `[*]`,
//!   `[?]` or `[[]` to match those bytes literally.
//!
//! A valid glob is non-empty and starts with `/` or `*` (a path always
//! starts with `/`, so anything else could never match).
//!
//! Matching is iterative with backtracking to the last `*` only, so its cost
//! is at most `O(pattern × path)` and never exponential. The common shapes
//! (`*.pphp`, `/exact`, `/prefix/*`) take a fast path with no backtracking.

use std::fmt;

/// A compiled path glob. Compares equal when written the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGlob {
    source: String,
    shape: Shape,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// No wildcard at all: the path must equal these bytes.
    Exact(Vec<u8>),
    /// `*` followed by literal bytes.
    Suffix(Vec<u8>),
    /// Literal bytes followed by `*`.
    Prefix(Vec<u8>),
    /// Anything else.
    General(Vec<Token>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Byte(u8),
    AnyByte,
    Star,
    Class(Class),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    negated: bool,
    /// Inclusive byte ranges; a single byte `b` is `(b, b)`.
    ranges: Vec<(u8, u8)>,
}

impl Class {
    fn matches(&self, b: u8) -> bool {
        let hit = self.ranges.iter().any(|&(lo, hi)| lo <= b && b <= hi);
        hit != self.negated
    }
}

/// Why a glob was refused. Byte offsets count from the start of the glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("the glob is empty")]
    Empty,
    #[error("a path glob must start with \"/\" or \"*\" (request paths always start with \"/\")")]
    BadStart,
    #[error("the \"[\" at position {0} is never closed with \"]\"")]
    UnclosedClass(usize),
    #[error("the range \"{0}-{1}\" is backwards; write the lower end first")]
    BackwardsRange(char, char),
    #[error("character classes [...] may only hold ASCII characters")]
    NonAsciiClass,
}

impl PathGlob {
    /// Compiles a glob; see the module documentation for the syntax.
    pub fn new(glob: &str) -> Result<PathGlob, GlobError> {
        if glob.is_empty() {
            return Err(GlobError::Empty);
        }
        if !(glob.starts_with('/') || glob.starts_with('*')) {
            return Err(GlobError::BadStart);
        }
        let tokens = tokenize(glob.as_bytes())?;
        Ok(PathGlob {
            source: glob.to_string(),
            shape: Shape::from_tokens(tokens),
        })
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `path` (raw bytes, no query) matches this glob.
    pub fn matches(&self, path: &[u8]) -> bool {
        match &self.shape {
            Shape::Exact(lit) => path == lit.as_slice(),
            Shape::Suffix(lit) => path.ends_with(lit),
            Shape::Prefix(lit) => path.starts_with(lit),
            Shape::General(tokens) => match_tokens(tokens, path),
        }
    }
}

impl fmt::Display for PathGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Shape {
    fn from_tokens(tokens: Vec<Token>) -> Shape {
        let literal = |ts: &[Token]| -> Option<Vec<u8>> {
            ts.iter()
                .map(|t| match t {
                    Token::Byte(b) => Some(*b),
                    _ => None,
                })
                .collect()
        };
        if let Some(lit) = literal(&tokens) {
            return Shape::Exact(lit);
        }
        match tokens.as_slice() {
            [Token::Star, rest @ ..] => {
                if let Some(lit) = literal(rest) {
                    return Shape::Suffix(lit);
                }
            }
            [rest @ .., Token::Star] => {
                if let Some(lit) = literal(rest) {
                    return Shape::Prefix(lit);
                }
            }
            _ => {}
        }
        Shape::General(tokens)
    }
}

fn tokenize(glob: &[u8]) -> Result<Vec<Token>, GlobError> {
    let mut tokens = Vec::with_capacity(glob.len());
    let mut i = 0;
    while i < glob.len() {
        match glob[i] {
            b'*' => {
                // Consecutive stars mean the same as one.
                if tokens.last() != Some(&Token::Star) {
                    tokens.push(Token::Star);
                }
                i += 1;
            }
            b'?' => {
                tokens.push(Token::AnyByte);
                i += 1;
            }
            b'[' => {
                let (class, next) = parse_class(glob, i)?;
                tokens.push(Token::Class(class));
                i = next;
            }
            b => {
                tokens.push(Token::Byte(b));
                i += 1;
            }
        }
    }
    Ok(tokens)
}

/// Parses the class opening at `open`; returns it and the index after `]`.
fn parse_class(glob: &[u8], open: usize) -> Result<(Class, usize), GlobError> {
    let mut i = open + 1;
    let negated = matches!(glob.get(i), Some(b'!') | Some(b'^'));
    if negated {
        i += 1;
    }
    let first = i;
    let mut ranges = Vec::new();
    loop {
        let Some(&b) = glob.get(i) else {
            return Err(GlobError::UnclosedClass(open));
        };
        if b == b']' && i > first {
            return Ok((Class { negated, ranges }, i + 1));
        }
        if !b.is_ascii() {
            return Err(GlobError::NonAsciiClass);
        }
        // `a-z`, unless the `-` is the last member (`[a-]`).
        if glob.get(i + 1) == Some(&b'-') && glob.get(i + 2).is_some_and(|&c| c != b']') {
            let hi = glob[i + 2];
            if !hi.is_ascii() {
                return Err(GlobError::NonAsciiClass);
            }
            if hi < b {
                return Err(GlobError::BackwardsRange(b as char, hi as char));
            }
            ranges.push((b, hi));
            i += 3;
        } else {
            ranges.push((b, b));
            i += 1;
        }
    }
}

fn token_matches(token: &Token, b: u8) -> bool {
    match token {
        Token::Byte(t) => *t == b,
        Token::AnyByte => true,
        Token::Class(class) => class.matches(b),
        Token::Star => false,
    }
}

/// The classic wildcard matcher: on a mismatch, go back to the last `*`
/// and let it swallow one more byte. Earlier stars never need revisiting,
/// which bounds the work by `tokens × path`.
fn match_tokens(tokens: &[Token], path: &[u8]) -> bool {
    let (mut t, mut p) = (0, 0);
    // (token index after the last star, path index that star resumes at)
    let mut backtrack: Option<(usize, usize)> = None;
    while p < path.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                t += 1;
                backtrack = Some((t, p));
            }
            Some(token) if token_matches(token, path[p]) => {
                t += 1;
                p += 1;
            }
            _ => match backtrack {
                Some((star_t, star_p)) => {
                    t = star_t;
                    p = star_p + 1;
                    backtrack = Some((star_t, star_p + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|token| *token == Token::Star)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(glob: &str, path: &str) -> bool {
        PathGlob::new(glob).unwrap().matches(path.as_bytes())
    }

    #[test]
    fn suffix_glob_of_the_spec() {
        assert!(m("*.pphp", "/chat.pphp"));
        assert!(m("*.pphp", "/app/x/chat.pphp"));
        assert!(!m("*.pphp", "/chat.pphpx"));
        assert!(!m("*.pphp", "/chat.PPHP"));
        assert!(m("*.pphp", "/.pphp"));
        assert!(!m("*.pphp", "/chat.php"));
    }

    #[test]
    fn exact_and_prefix() {
        assert!(m("/chat", "/chat"));
        assert!(!m("/chat", "/chat/"));
        assert!(!m("/chat", "/Chat"));
        assert!(m("/live/*", "/live/"));
        assert!(m("/live/*", "/live/a/b/c"));
        assert!(!m("/live/*", "/live"));
        assert!(m("*", "/"));
        assert!(m("**", "/anything/at/all"));
    }

    #[test]
    fn question_mark_is_one_byte() {
        assert!(m("/v?/chat", "/v1/chat"));
        assert!(!m("/v?/chat", "/v/chat"));
        assert!(!m("/v?/chat", "/v12/chat"));
        assert!(m("/v?/chat", "/v//chat"));
    }

    #[test]
    fn classes() {
        assert!(m("/v[12]/*", "/v1/x"));
        assert!(m("/v[12]/*", "/v2/x"));
        assert!(!m("/v[12]/*", "/v3/x"));
        assert!(m("/[a-c]x", "/bx"));
        assert!(!m("/[a-c]x", "/dx"));
        assert!(m("/[!a]x", "/bx"));
        assert!(!m("/[!a]x", "/ax"));
        assert!(m("/[^a]x", "/bx"));
        assert!(!m("/[^a]x", "/ax"));
        assert!(m("/[]]", "/]"));
        assert!(m("/[!]]", "/a"));
        assert!(!m("/[!]]", "/]"));
        assert!(m("/[a-]", "/-"));
        assert!(m("/[-a]", "/-"));
        assert!(m("/[*]", "/*"));
        assert!(!m("/[*]", "/a"));
        assert!(m("/[[]", "/["));
    }

    #[test]
    fn stars_in_the_middle() {
        assert!(m("/a/*/b/*.pphp", "/a/x/y/b/z.pphp"));
        assert!(!m("/a/*/b/*.pphp", "/a/x/y/c/z.pphp"));
        assert!(m("*/chat/*", "/app/chat/room"));
        assert!(m("*a*b*c", "/xaxbxc"));
        assert!(!m("*a*b*c", "/xaxcxb"));
        assert!(m("/*.[pP]php", "/x.Pphp"));
    }

    #[test]
    fn raw_bytes_are_compared() {
        let g = PathGlob::new("/caf*").unwrap();
        assert!(g.matches(b"/caf\xc3\xa9"));
        // é is two bytes: `?` takes only one of them.
        assert!(!m("/caf?", "/caf\u{e9}"));
        assert!(m("/caf??", "/caf\u{e9}"));
    }

    #[test]
    fn no_exponential_blowup() {
        let glob = PathGlob::new(&format!("/{}b", "*a".repeat(30))).unwrap();
        let path = format!("/{}", "a".repeat(10_000));
        let start = std::time::Instant::now();
        assert!(!glob.matches(path.as_bytes()));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn invalid_globs() {
        assert_eq!(PathGlob::new(""), Err(GlobError::Empty));
        assert_eq!(PathGlob::new("chat.pphp"), Err(GlobError::BadStart));
        assert_eq!(PathGlob::new("/[ab"), Err(GlobError::UnclosedClass(1)));
        assert_eq!(PathGlob::new("/[]"), Err(GlobError::UnclosedClass(1)));
        assert_eq!(PathGlob::new("/[!]"), Err(GlobError::UnclosedClass(1)));
        assert_eq!(
            PathGlob::new("/[z-a]"),
            Err(GlobError::BackwardsRange('z', 'a'))
        );
        assert_eq!(PathGlob::new("/[\u{e9}]"), Err(GlobError::NonAsciiClass));
    }

    #[test]
    fn keeps_its_source() {
        let g = PathGlob::new("*.pphp").unwrap();
        assert_eq!(g.as_str(), "*.pphp");
        assert_eq!(g.to_string(), "*.pphp");
        assert_eq!(g, PathGlob::new("*.pphp").unwrap());
    }
}
