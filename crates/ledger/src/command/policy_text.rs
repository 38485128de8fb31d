//! What a policy text must be before any replica gives it to Cedar: not
//! empty, not too long, not nested deeper than Cedar's parser survives.

use super::{MAX_POLICY_BYTES, Refusal};

/// The deepest nesting of brackets a policy text may have. Cedar's parser
/// recurses once per level and does not check its stack: a few hundred
/// nested parentheses abort the process that parses them. Real policies
/// nest a handful of levels.
pub const MAX_POLICY_NESTING: usize = 32;

/// How deeply `text` nests `(`, `[` and `{`, outside Cedar string literals
/// and `//` comments: what must be at most [`MAX_POLICY_NESTING`] before
/// Cedar is given the text. A closer without an opener counts as nothing
/// (Cedar's parser says what is wrong with it).
pub fn policy_nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '(' | '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    deepest
}

/// Why a policy text cannot be stored whatever its Cedar says: too long,
/// nested too deeply to parse safely, or empty. The ledger checks this when
/// applying, so no replica ever holds a text that would abort a broker that
/// parses it; brokers check it too, before parsing anything.
pub fn policy_text_refusal(text: &str) -> Option<Refusal> {
    if text.len() > MAX_POLICY_BYTES {
        return Some(Refusal::PolicyTooLarge {
            length: text.len(),
            max: MAX_POLICY_BYTES,
        });
    }
    let depth = policy_nesting(text);
    if depth > MAX_POLICY_NESTING {
        return Some(Refusal::PolicyTooDeep {
            depth,
            max: MAX_POLICY_NESTING,
        });
    }
    if text.trim().is_empty() {
        return Some(Refusal::PolicyEmpty);
    }
    None
}
