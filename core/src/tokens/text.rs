//! Fast estimate of how many tokens a prompt costs, without vocabulary tables.
//!
//! BPE tokenizers (cl100k_base, o200k_base) first split text with a regex into
//! words, digit groups, punctuation runs and whitespace runs, then merge bytes
//! inside each piece. We mimic the split with a byte-class transition model:
//! each byte adds the cost of going from the previous byte's class to its own
//! (a word start costs ~1 token, a letter inside a word ~0, a space before a
//! digit ~1, ...), looked up in one 256-entry table. Costs are in 1/64 token
//! and were fitted (linear program) on `tests/corpus` so that the estimate is
//! at or above the exact count of both encodings with the lowest mean
//! over-estimate; `tests/token_estimator_accuracy.rs` checks the result.

// Byte classes. ASCII maps to 0..=6, UTF-8 continuation bytes to CONT, and
// lead bytes of multi-byte chars to a script group (8..=14) with its own
// per-character cost: cl100k/o200k spend very different amounts per char on
// CJK, Cyrillic or emoji.
const LOWER: u8 = 0;
const UPPER: u8 = 1;
const DIGIT: u8 = 2;
const SPACE: u8 = 3;
const NEWLINE: u8 = 4;
const TAB: u8 = 5;
const PUNCT: u8 = 6;
const CONT: u8 = 7;
/// Latin-1/Latin Extended, IPA, Armenian, Hebrew, Arabic (2-byte chars).
const LATIN_EXT: u8 = 8;
/// Greek and Cyrillic: both vocabularies merge these well.
const GREEK_CYRILLIC: u8 = 9;
/// U+0800..U+2FFF: Indic, Thai, general punctuation, arrows, math, dingbats.
const BMP_MISC: u8 = 10;
/// U+3000..U+3FFF (CJK punctuation, kana) and U+E000..U+FFFF (full-width forms).
const KANA: u8 = 11;
/// U+4000..U+9FFF: CJK ideographs.
const HAN: u8 = 12;
/// U+A000..U+DFFF: mostly Hangul syllables.
const HANGUL: u8 = 13;
/// 4-byte chars: emoji and rare scripts.
const ASTRAL: u8 = 14;

const fn class_of(b: u8) -> u8 {
    match b {
        b'a'..=b'z' => LOWER,
        b'A'..=b'Z' => UPPER,
        b'0'..=b'9' => DIGIT,
        b' ' => SPACE,
        b'\n' | b'\r' => NEWLINE,
        b'\t' | 0x0b | 0x0c => TAB,
        0x00..=0x7f => PUNCT,
        0x80..=0xbf => CONT,
        0xc0..=0xcd | 0xd5..=0xdf => LATIN_EXT,
        0xce..=0xd4 => GREEK_CYRILLIC,
        0xe0..=0xe2 => BMP_MISC,
        0xe3 | 0xee | 0xef => KANA,
        0xe4..=0xe9 => HAN,
        0xea..=0xed => HANGUL,
        _ => ASTRAL,
    }
}

/// Per byte: bits 0-3 its class as the current byte, bits 4-6 its class as
/// the previous byte (a lead byte is always followed by a continuation byte,
/// so it only needs the CONT row), bit 7 set for a space (used two bytes
/// later to tell where a run of spaces starts). 256 bytes.
static BYTE_INFO: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let class = class_of(b as u8);
        let as_prev = if class > CONT { CONT } else { class };
        let space_flag = if class == SPACE { 0x80 } else { 0 };
        t[b] = class | (as_prev << 4) | space_flag;
        b += 1;
    }
    t
};

// Fitted costs in 1/64 token.
/// A word after one space: the space merges into the word's token.
const WORD_AFTER_SPACE: u8 = 63;
/// A word at the start of a line or after a tab.
const WORD_AFTER_WS: u8 = 58;
/// A word glued to punctuation (`"name`, `.get`, `_id`).
const WORD_AFTER_PUNCT: u8 = 31;
/// A word glued to digits (`4o`, `12ms`, hex ids).
const WORD_AFTER_DIGIT: u8 = 32;
/// ASCII letters right after a non-ASCII char (mixed-script text).
const WORD_AFTER_NON_ASCII: u8 = 45;
/// Letters from the 3rd on (2nd when not after a space): long and non-English
/// words split into several tokens.
const LETTER_CONT: u8 = 10;
/// ALL-CAPS words split more than lower-case ones.
const UPPER_AFTER_UPPER: u8 = 13;
/// camelCase humps start a new token (o200k's regex splits there).
const UPPER_AFTER_LOWER: u8 = 51;
/// Numbers are split into groups of up to 3 digits.
const DIGIT_START: u8 = 87;
/// A space before a number is a token of its own.
const DIGIT_AFTER_SPACE: u8 = 115;
const DIGIT_CONT: u8 = 17;
/// Punctuation runs merge (`":`, `});`), so later chars are cheap.
const PUNCT_START: u8 = 40;
const PUNCT_AFTER_SPACE: u8 = 81;
const PUNCT_CONT: u8 = 6;
/// Indentation right after a newline.
const SPACE_AFTER_NEWLINE: u8 = 33;
/// A run of 2+ spaces (alignment, indentation) is mostly one token.
const SPACE_RUN_START: u8 = 32;
/// Newlines are free after punctuation (`{\n` is one token) or spaces.
const NEWLINE_AFTER_TEXT: u8 = 52;
const TAB_START: u8 = 19;
/// Per-character costs of non-ASCII script groups.
const CHAR_LATIN_EXT: u8 = 92;
const CHAR_GREEK_CYRILLIC: u8 = 33;
const CHAR_BMP_MISC: u8 = 80;
const CHAR_KANA: u8 = 59;
const CHAR_HAN: u8 = 102;
const CHAR_HANGUL: u8 = 94;
const CHAR_ASTRAL: u8 = 139;

/// Cost of a byte given (was the byte before the previous one a space,
/// previous byte's class, current class), indexed by
/// `space_flag(pprev) | as_prev(prev) << 4 | class(cur)`. 256 bytes.
static COST: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = cost((i & 0x80) != 0, (i >> 4) as u8 & 7, i as u8 & 15);
        i += 1;
    }
    t
};

const fn cost(pprev_space: bool, prev: u8, cur: u8) -> u8 {
    let prev_letter = prev == LOWER || prev == UPPER;
    match cur {
        LOWER | UPPER if prev_letter => match (prev, cur) {
            (UPPER, UPPER) => UPPER_AFTER_UPPER,
            (LOWER, UPPER) => UPPER_AFTER_LOWER,
            _ if pprev_space => 0,
            _ => LETTER_CONT,
        },
        LOWER | UPPER => match prev {
            SPACE => WORD_AFTER_SPACE,
            NEWLINE | TAB => WORD_AFTER_WS,
            PUNCT => WORD_AFTER_PUNCT,
            DIGIT => WORD_AFTER_DIGIT,
            _ => WORD_AFTER_NON_ASCII,
        },
        DIGIT => match prev {
            DIGIT => DIGIT_CONT,
            SPACE => DIGIT_AFTER_SPACE,
            _ => DIGIT_START,
        },
        PUNCT => match prev {
            PUNCT => PUNCT_CONT,
            SPACE => PUNCT_AFTER_SPACE,
            _ => PUNCT_START,
        },
        // A single space merges into the next piece.
        SPACE => match prev {
            NEWLINE => SPACE_AFTER_NEWLINE,
            SPACE if !pprev_space => SPACE_RUN_START,
            _ => 0,
        },
        NEWLINE => match prev {
            PUNCT | SPACE | NEWLINE => 0,
            _ => NEWLINE_AFTER_TEXT,
        },
        TAB => {
            if prev == TAB {
                0
            } else {
                TAB_START
            }
        }
        LATIN_EXT => CHAR_LATIN_EXT,
        GREEK_CYRILLIC => CHAR_GREEK_CYRILLIC,
        BMP_MISC => CHAR_BMP_MISC,
        KANA => CHAR_KANA,
        HAN => CHAR_HAN,
        HANGUL => CHAR_HANGUL,
        ASTRAL => CHAR_ASTRAL,
        _ => 0, // CONT: paid for by the lead byte.
    }
}

/// Estimated token count of `text` for modern BPE tokenizers (cl100k/o200k-like).
/// Biased to over-estimate: never more than 10% under the exact count of either encoding on realistic text.
pub fn estimate_text(text: &str) -> u32 {
    // Start of text behaves like the start of a line.
    let mut prev = u32::from(NEWLINE) << 4;
    let mut pprev = 0u32;
    let mut step = |b: u8| {
        let info = u32::from(BYTE_INFO[usize::from(b)]);
        let index = (info & 0x0f) | (prev & 0x70) | (pprev & 0x80);
        pprev = prev;
        prev = info;
        u64::from(COST[index as usize])
    };
    // Eight bytes per iteration with a local sum keeps the add chain short.
    let mut total: u64 = 0;
    let mut chunks = text.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        total += chunk.iter().map(|&b| step(b)).sum::<u64>();
    }
    total += chunks.remainder().iter().map(|&b| step(b)).sum::<u64>();
    u32::try_from(total.div_ceil(64)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_zero() {
        assert_eq!(estimate_text(""), 0);
    }

    /// Estimate within [exact, 1.5 * exact] for short snippets whose exact
    /// cl100k/o200k count is given (the pieces are noted).
    fn assert_close(text: &str, exact: u32) {
        let n = estimate_text(text);
        assert!(
            n >= exact && 2 * n <= 3 * exact,
            "{text:?}: {n} vs exact {exact}"
        );
    }

    #[test]
    fn short_snippets_are_close() {
        // "Hello" "," " world" "!"
        assert_close("Hello, world!", 4);
        // "The" " quick" " brown" " fox" " jumps" " over" " the" " lazy" " dog" "."
        assert_close("The quick brown fox jumps over the lazy dog.", 10);
        // "{\"" "role" "\":" " \"" "user" "\"," " \"" "content" "\":" " \"" "hi" "\"}"
        assert_close(r#"{"role": "user", "content": "hi"}"#, 12);
        // "   " " let" " x" " =" " " "5" ";\n"
        assert_close("    let x = 5;\n", 7);
    }

    #[test]
    fn numbers_split_in_groups_of_three() {
        // "1234567" -> "123" "456" "7".
        let n = estimate_text("1234567");
        assert!((3..=4).contains(&n), "{n}");
    }

    #[test]
    fn cjk_costs_at_least_one_per_char() {
        let text = "今天天气很好我们去公园散步吧";
        let chars = text.chars().count() as u32;
        assert!(estimate_text(text) >= chars);
    }

    #[test]
    fn appending_never_decreases() {
        let text = "fn main() {\n    println!(\"héllo, 世界 🌍 {}\", 42);\n}\n";
        let mut last = 0;
        for (i, _) in text.char_indices().skip(1) {
            let n = estimate_text(&text[..i]);
            assert!(n >= last, "estimate dropped at byte {i}");
            last = n;
        }
    }

    #[test]
    fn grows_roughly_linearly() {
        let para = "The gateway checks every request against the team budget. ";
        let one = estimate_text(para);
        let ten = estimate_text(&para.repeat(10));
        assert!(ten >= 9 * one && ten <= 11 * one, "{one} {ten}");
    }
}
