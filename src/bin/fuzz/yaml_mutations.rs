//! Mutations of pipeline YAML: byte edits, line edits (delete, duplicate,
//! swap, re-indent), scalar values replaced by hostile ones, and the
//! classic parser attacks (alias expansion, deep nesting, huge scalars).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Values a user (or a broken editor) might leave where a scalar was.
const VALUES: [&str; 30] = [
    "-1",
    "0",
    "1e309",
    "-1e309",
    ".nan",
    ".inf",
    "18446744073709551616",
    "-9223372036854775809",
    "4294967296",
    "[]",
    "{}",
    "~",
    "null",
    "\"\"",
    "''",
    "[1, [2, [3]]]",
    "{a: 1}",
    "!!binary aGVsbG8=",
    "!!float x",
    "*undefined",
    "&a 1",
    "yes",
    "0x10",
    "1_000",
    "\"\\u0000\"",
    "\"../../../../etc/passwd\"",
    "\"/**/*.root\"",
    "\"data/delphes/*.root\"",
    "[0, 18446744073709551615]",
    "\"{label}\"",
];

/// A mutated text and what was done to it.
pub fn mutate(text: &str, rng: &mut ChaCha8Rng, stack: usize) -> (String, Vec<String>) {
    let mut out = text.to_string();
    let mut description = Vec::new();
    for _ in 0..stack {
        let (next, what) = match rng.random_range(0..12) {
            0 | 1 => byte_edit(&out, rng),
            2..=4 => line_edit(&out, rng),
            5..=8 => scalar(&out, rng),
            9 => alias_bomb(&out, rng),
            10 => deep_nesting(&out, rng),
            _ => huge_scalar(&out, rng),
        };
        out = next;
        description.push(what);
    }
    (out, description)
}

fn byte_edit(text: &str, rng: &mut ChaCha8Rng) -> (String, String) {
    let mut bytes = text.as_bytes().to_vec();
    if bytes.is_empty() {
        return (":".into(), "replaced the empty text by `:`".into());
    }
    let at = rng.random_range(0..bytes.len());
    let what = match rng.random_range(0..4) {
        0 => {
            let bit = rng.random_range(0..8);
            bytes[at] ^= 1 << bit;
            format!("flipped bit {bit} of byte {at}")
        }
        1 => {
            const SPECIAL: &[u8] = b":-[]{}#&*!|>'\"%@`,?\t\n \\";
            let c = SPECIAL[rng.random_range(0..SPECIAL.len())];
            bytes.insert(at, c);
            format!("inserted {:?} at byte {at}", c as char)
        }
        2 => {
            let n = rng.random_range(1..=16).min(bytes.len() - at);
            bytes.drain(at..at + n);
            format!("deleted bytes {at}..{}", at + n)
        }
        _ => {
            let n = rng.random_range(1..=32).min(bytes.len() - at);
            let chunk = bytes[at..at + n].to_vec();
            let to = rng.random_range(0..bytes.len());
            bytes.splice(to..to, chunk);
            format!("copied bytes {at}..{} to {to}", at + n)
        }
    };
    // Invalid UTF-8 is a case too: the loader reads text, so keep the bytes
    // lossily (as `read_to_string` would refuse them earlier).
    (String::from_utf8_lossy(&bytes).into_owned(), what)
}

fn line_edit(text: &str, rng: &mut ChaCha8Rng) -> (String, String) {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return (String::new(), "empty".into());
    }
    let i = rng.random_range(0..lines.len());
    let what = match rng.random_range(0..5) {
        0 => {
            lines.remove(i);
            format!("deleted line {}", i + 1)
        }
        1 => {
            let l = lines[i].clone();
            lines.insert(i, l);
            format!("duplicated line {}", i + 1)
        }
        2 => {
            let j = rng.random_range(0..lines.len());
            lines.swap(i, j);
            format!("swapped lines {} and {}", i + 1, j + 1)
        }
        3 => {
            lines[i] = format!("  {}", lines[i]);
            format!("indented line {}", i + 1)
        }
        _ => {
            lines[i] = lines[i].trim_start().to_string();
            format!("dedented line {}", i + 1)
        }
    };
    (lines.join("\n") + "\n", what)
}

/// Replaces the value after a `key: ` (or a `- ` item) by a hostile one.
fn scalar(text: &str, rng: &mut ChaCha8Rng) -> (String, String) {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let candidates: Vec<usize> = (0..lines.len())
        .filter(|&i| {
            let t = lines[i].trim_start();
            !t.starts_with('#') && (t.contains(": ") || t.starts_with("- "))
        })
        .collect();
    if candidates.is_empty() {
        return byte_edit(text, rng);
    }
    let i = candidates[rng.random_range(0..candidates.len())];
    let value = VALUES[rng.random_range(0..VALUES.len())];
    let line = &lines[i];
    let cut = line
        .find(": ")
        .map(|p| p + 2)
        .unwrap_or_else(|| line.find("- ").expect("candidate") + 2);
    lines[i] = format!("{}{value}", &line[..cut]);
    (
        lines.join("\n") + "\n",
        format!("line {}: value -> {value}", i + 1),
    )
}

/// Puts `value` where the parser will expand it: as a parameter of a
/// stage (inline `params: { … }` lines are replaced), else at the top.
fn inject(text: &str, rng: &mut ChaCha8Rng, key: &str, value: &str) -> (String, &'static str) {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let params: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with("params:"))
        .collect();
    if params.is_empty() || rng.random_bool(0.2) {
        return (format!("{text}\n{key}: {value}\n"), "at the top level");
    }
    let i = params[rng.random_range(0..params.len())];
    let indent = lines[i].len() - lines[i].trim_start().len();
    lines[i] = format!("{}params: {{ {key}: {value} }}", " ".repeat(indent));
    (lines.join("\n") + "\n", "as a stage parameter")
}

/// The "billion laughs": nine levels of aliases, each repeating the one
/// below nine times (9^8 copies once expanded).
fn alias_bomb(text: &str, rng: &mut ChaCha8Rng) -> (String, String) {
    let mut bomb = String::from("{l0: &a0 [lol]");
    for level in 1..9 {
        let refs = vec![format!("*a{}", level - 1); 9].join(", ");
        bomb.push_str(&format!(", l{level}: &a{level} [{refs}]"));
    }
    bomb.push('}');
    let (out, place) = inject(text, rng, "bomb", &bomb);
    (out, format!("alias expansion bomb {place}"))
}

fn deep_nesting(text: &str, rng: &mut ChaCha8Rng) -> (String, String) {
    let depth = [100, 10_000, 100_000][rng.random_range(0..3)];
    let (open, close) = if rng.random_bool(0.5) {
        ("[", "]")
    } else {
        ("{a: ", "}")
    };
    let nest = format!("{}1{}", open.repeat(depth), close.repeat(depth));
    let (out, place) = inject(text, rng, "deep", &nest);
    (out, format!("nesting {depth} deep {place}"))
}

fn huge_scalar(text: &str, rng: &mut ChaCha8Rng) -> (String, String) {
    let n = [1 << 10, 1 << 20, 1 << 24][rng.random_range(0..3)];
    let (out, place) = inject(text, rng, "huge", &format!("\"{}\"", "x".repeat(n)));
    (out, format!("a {n}-byte scalar {place}"))
}
