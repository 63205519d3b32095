//! Redis's glob patterns (`KEYS`, `SCAN ... MATCH`, `CONFIG GET`): `*` any
//! run of bytes, `?` one byte, `[abc]`, `[^abc]` and `[a-z]` one byte of a
//! class, and `\` making the next byte literal. As in Redis, an unclosed
//! class ends with the pattern, and a `\` at the very end is literal.
//!
//! Matching is iterative with one backtrack point (the last `*`), so it is
//! linear in practice and never recursive, whatever a client sends.

/// True when `text` matches `pattern`; `nocase` compares ASCII letters
/// without case (CONFIG GET), keys are compared exactly.
pub fn matches(pattern: &[u8], text: &[u8], nocase: bool) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            while pattern.get(p) == Some(&b'*') {
                p += 1;
            }
            if p == pattern.len() {
                return true;
            }
            star = Some((p, t));
            continue;
        }
        if p < pattern.len() {
            let (ok, next) = one(pattern, p, text[t], nocase);
            if ok {
                p = next;
                t += 1;
                continue;
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether the pattern element at `p` matches byte `c`, and where the next
/// element starts.
fn one(pattern: &[u8], p: usize, c: u8, nocase: bool) -> (bool, usize) {
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    match pattern[p] {
        b'?' => (true, p + 1),
        b'\\' if p + 1 < pattern.len() => (eq(pattern[p + 1], c), p + 2),
        b'[' => {
            let mut i = p + 1;
            let negate = pattern.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut hit = false;
            while i < pattern.len() {
                match pattern[i] {
                    b']' => break,
                    b'\\' if i + 1 < pattern.len() => {
                        i += 1;
                        hit |= eq(pattern[i], c);
                    }
                    lo if i + 2 < pattern.len() && pattern[i + 1] == b'-' => {
                        let hi = pattern[i + 2];
                        let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                        let (lo, hi, c) = if nocase {
                            (
                                lo.to_ascii_lowercase(),
                                hi.to_ascii_lowercase(),
                                c.to_ascii_lowercase(),
                            )
                        } else {
                            (lo, hi, c)
                        };
                        hit |= lo <= c && c <= hi;
                        i += 2;
                    }
                    other => hit |= eq(other, c),
                }
                i += 1;
            }
            // Past the `]`, or at the end of an unclosed class.
            (hit != negate, (i + 1).min(pattern.len()))
        }
        other => (eq(other, c), p + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        matches(p.as_bytes(), t.as_bytes(), false)
    }

    #[test]
    fn stars_and_question_marks() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("user:*", "user:1"));
        assert!(!m("user:*", "users:1"));
        assert!(m("*:1", "user:1"));
        assert!(m("u*r*1", "user:1"));
        assert!(m("h?llo", "hello"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("**a**", "bab"));
        assert!(!m("a*b", "acbd"));
        assert!(m("a*b", "acbdb"));
    }

    #[test]
    fn classes_ranges_negation_and_escapes() {
        assert!(m("h[ae]llo", "hello") && m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo") && !m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hbllo") && !m("h[a-b]llo", "hcllo"));
        assert!(m("h[b-a]llo", "hallo"), "a reversed range");
        assert!(m("h\\*llo", "h*llo") && !m("h\\*llo", "hello"));
        assert!(m("[\\]]", "]"));
        assert!(m("a[bc", "ab"), "an unclosed class ends with the pattern");
        assert!(m("a\\", "a\\"), "a trailing backslash is literal");
        assert!(!m("[]", "a"));
        assert!(!m("KEY", "key"));
        assert!(matches(b"KEY*", b"keys", true));
        assert!(matches(b"[A-C]x", b"bx", true));
    }

    #[test]
    fn a_hostile_pattern_is_linear() {
        let p = "*a".repeat(500) + "b";
        let t = "a".repeat(5000);
        assert!(!m(&p, &t));
    }
}
