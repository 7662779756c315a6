//! JavaScript value semantics for JSON values, as far as imgmanifest's checks and node's
//! `util.format` (node 20) depend on them.

use serde_json::{Map, Number, Value};

/// JS truthiness: `null`, `false`, `0`, `-0` and `""` are falsy.
pub(crate) fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => number_value(n) != 0.0,
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

pub(crate) fn number_value(number: &Number) -> f64 {
    number.as_f64().unwrap_or(f64::NAN)
}

/// The length JS reports for a string (UTF-16 code units).
pub(crate) fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// `value.length > max`: strings and arrays have a length; an object may carry a
/// `length` key; everything else has `undefined`, which compares false.
pub(crate) fn length_exceeds(value: &Value, max: usize) -> bool {
    match value {
        Value::String(s) => utf16_len(s) > max,
        Value::Array(items) => items.len() > max,
        Value::Object(map) => map.get("length").is_some_and(|len| to_number(len) > max as f64),
        _ => false,
    }
}

/// `Number(value)`.
pub(crate) fn to_number(value: &Value) -> f64 {
    match value {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => number_value(n),
        Value::String(s) => string_to_number(s),
        // Arrays convert through their `toString()` (`[5]` is 5, `[]` is 0).
        Value::Array(_) => string_to_number(&to_string(value)),
        Value::Object(_) => f64::NAN,
    }
}

/// The whitespace `Number("…")` trims: WhiteSpace and LineTerminator.
fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}' | '\u{feff}'
    )
}

/// `Number(s)` for a string (ECMAScript StringToNumber).
pub(crate) fn string_to_number(s: &str) -> f64 {
    let trimmed = s.trim_matches(is_js_whitespace);
    if trimmed.is_empty() {
        return 0.0;
    }
    let bytes = trimmed.as_bytes();
    if bytes.len() >= 2 && bytes[0] == b'0' {
        let radix = match bytes[1] {
            b'x' | b'X' => Some(16),
            b'o' | b'O' => Some(8),
            b'b' | b'B' => Some(2),
            _ => None,
        };
        if let Some(radix) = radix {
            return radix_integer_to_number(&trimmed[2..], radix);
        }
    }
    let unsigned = trimmed.strip_prefix(['+', '-']).unwrap_or(trimmed);
    if unsigned == "Infinity" {
        return if trimmed.starts_with('-') { f64::NEG_INFINITY } else { f64::INFINITY };
    }
    if !is_decimal_literal(unsigned) {
        return f64::NAN;
    }
    trimmed.parse::<f64>().unwrap_or(f64::NAN)
}

/// `0x…`, `0o…`, `0b…` digits (no sign, no separators).
fn radix_integer_to_number(digits: &str, radix: u32) -> f64 {
    if digits.is_empty() {
        return f64::NAN;
    }
    let mut value = 0.0_f64;
    for c in digits.chars() {
        match c.to_digit(radix) {
            Some(d) => value = value * f64::from(radix) + f64::from(d),
            None => return f64::NAN,
        }
    }
    value
}

/// StrUnsignedDecimalLiteral without "Infinity": `1`, `1.`, `.5`, `1.5e-3`.
fn is_decimal_literal(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut i = 0;
    let digits_from = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let int_end = digits_from(i);
    let mut has_digits = int_end > i;
    i = int_end;
    if i < bytes.len() && bytes[i] == b'.' {
        let frac_end = digits_from(i + 1);
        has_digits |= frac_end > i + 1;
        i = frac_end;
    }
    if !has_digits {
        return false;
    }
    if i < bytes.len() && matches!(bytes[i], b'e' | b'E') {
        i += 1;
        if i < bytes.len() && matches!(bytes[i], b'+' | b'-') {
            i += 1;
        }
        let exp_end = digits_from(i);
        if exp_end == i {
            return false;
        }
        i = exp_end;
    }
    i == bytes.len()
}

/// `String(number)` (Number::toString, shortest round-trip digits).
pub(crate) fn number_to_string(number: f64) -> String {
    if number.is_nan() {
        return "NaN".to_owned();
    }
    if number == 0.0 {
        return "0".to_owned();
    }
    if number.is_infinite() {
        return if number > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let sign = if number < 0.0 { "-" } else { "" };
    // Rust's `{:e}` gives the same shortest digits; only the layout differs.
    let scientific = format!("{:e}", number.abs());
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent: i64 = exponent.parse().unwrap_or(0);
    let digit_count = digits.len() as i64;
    // JS's `n`: the value is 0.<digits> × 10^point.
    let point = exponent + 1;
    let body = if digit_count <= point && point <= 21 {
        format!("{digits}{}", "0".repeat((point - digit_count) as usize))
    } else if 0 < point && point <= 21 {
        let (int_part, frac_part) = digits.split_at(point as usize);
        format!("{int_part}.{frac_part}")
    } else if -6 < point && point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else {
        let exp = point - 1;
        let exp_sign = if exp >= 0 { "+" } else { "-" };
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        format!("{first}{fraction}e{exp_sign}{}", exp.abs())
    };
    format!("{sign}{body}")
}

/// `String(value)`; arrays join their elements with "," (null elements become "").
pub(crate) fn to_string(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number_to_string(number_value(n)),
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|item| if item.is_null() { String::new() } else { to_string(item) })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".to_owned(),
    }
}

/// An array index key ("0", "7", not "07"): JS lists these first, in numeric order.
fn array_index(key: &str) -> Option<u32> {
    let canonical = key == "0" || (!key.starts_with('0') && !key.is_empty());
    if !canonical || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse::<u32>().ok().filter(|index| *index != u32::MAX)
}

/// An object's entries in JS property order (`Object.keys`, `for…in`, JSON.stringify):
/// array-index keys ascending, then the other keys in insertion order.
pub(crate) fn own_entries(map: &Map<String, Value>) -> Vec<(&str, &Value)> {
    let mut indexed: Vec<(u32, &str, &Value)> = Vec::new();
    let mut named: Vec<(&str, &Value)> = Vec::new();
    for (key, value) in map {
        match array_index(key) {
            Some(index) => indexed.push((index, key, value)),
            None => named.push((key, value)),
        }
    }
    indexed.sort_by_key(|(index, _, _)| *index);
    indexed.into_iter().map(|(_, k, v)| (k, v)).chain(named).collect()
}

/// `JSON.stringify(value)` (what `%j` prints).
pub(crate) fn json_stringify(value: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, value);
    out
}

fn write_json(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&number_to_string(number_value(n))),
        Value::String(s) => write_json_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in own_entries(map).into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, key);
                out.push(':');
                write_json(out, item);
            }
            out.push('}');
        }
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// What node's `util.format('%s', value)` prints: strings as-is, numbers as
/// `formatNumber` does (`-0` stays "-0"), objects and arrays through `util.inspect`
/// with depth 0.
pub(crate) fn format_s(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format_number(number_value(n)),
        Value::String(s) => s.clone(),
        Value::Array(_) | Value::Object(_) => inspect::inspect(value),
    }
}

/// util.inspect's number format.
fn format_number(number: f64) -> String {
    if number == 0.0 && number.is_sign_negative() {
        "-0".to_owned()
    } else {
        number_to_string(number)
    }
}

/// node 20's `util.inspect(value, {depth: 0, compact: 3})` (breakLength 80) for JSON
/// objects and arrays: the top level is listed, non-empty nested containers become
/// `[Object]` / `[Array]`.
mod inspect {
    use super::{format_number, number_value, own_entries, utf16_len};
    use serde_json::Value;

    const BREAK_LENGTH: usize = 80;
    const COMPACT: usize = 3;
    const MAX_ARRAY_LENGTH: usize = 100;
    const MAX_STRING_LENGTH: usize = 10_000;
    /// Children of the top level are formatted two columns in.
    const CHILD_INDENTATION: usize = 2;

    pub(crate) fn inspect(value: &Value) -> String {
        match value {
            Value::Array(items) if items.is_empty() => "[]".to_owned(),
            Value::Array(items) => {
                let shown = items.len().min(MAX_ARRAY_LENGTH);
                let mut output: Vec<String> = items[..shown].iter().map(format_child).collect();
                let remaining = items.len() - shown;
                if remaining > 0 {
                    let plural = if remaining > 1 { "s" } else { "" };
                    output.push(format!("... {remaining} more item{plural}"));
                }
                reduce_to_single_string(output, ("[", "]"), Some(items))
            }
            Value::Object(map) if map.is_empty() => "{}".to_owned(),
            Value::Object(map) => {
                let output = own_entries(map)
                    .into_iter()
                    .map(|(key, item)| format!("{}: {}", format_key(key), format_child(item)))
                    .collect();
                reduce_to_single_string(output, ("{", "}"), None)
            }
            scalar => format_child(scalar),
        }
    }

    fn format_key(key: &str) -> String {
        let bare = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if bare {
            key.to_owned()
        } else if key == "__proto__" {
            "['__proto__']".to_owned()
        } else {
            quote_string(key)
        }
    }

    /// A value one level down (beyond depth 0).
    fn format_child(value: &Value) -> String {
        match value {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => format_number(number_value(n)),
            Value::String(s) => format_string(s),
            Value::Array(items) if items.is_empty() => "[]".to_owned(),
            Value::Array(_) => "[Array]".to_owned(),
            Value::Object(map) if map.is_empty() => "{}".to_owned(),
            Value::Object(_) => "[Object]".to_owned(),
        }
    }

    /// formatPrimitive for a nested string: truncated past maxStringLength, and split
    /// after each newline into `'…' +` lines when long.
    fn format_string(s: &str) -> String {
        let units: Vec<u16> = s.encode_utf16().collect();
        let (shown, trailer) = if units.len() > MAX_STRING_LENGTH {
            let remaining = units.len() - MAX_STRING_LENGTH;
            let plural = if remaining > 1 { "s" } else { "" };
            (
                String::from_utf16_lossy(&units[..MAX_STRING_LENGTH]),
                format!("... {remaining} more character{plural}"),
            )
        } else {
            (s.to_owned(), String::new())
        };
        let length = utf16_len(&shown);
        // (node also requires more than kMinLineLength (16), implied by this bound.)
        if length > BREAK_LENGTH - CHILD_INDENTATION - 4 {
            let separator = format!(" +\n{}", " ".repeat(CHILD_INDENTATION + 2));
            let lines: Vec<String> = shown.split_inclusive('\n').map(quote_string).collect();
            return lines.join(&separator) + &trailer;
        }
        quote_string(&shown) + &trailer
    }

    /// strEscape: single quotes unless the text has one, then double quotes or
    /// backticks; control characters as `\xNN`.
    fn quote_string(s: &str) -> String {
        let quote = if !s.contains('\'') {
            '\''
        } else if !s.contains('"') {
            '"'
        } else if !s.contains('`') && !s.contains("${") {
            '`'
        } else {
            '\''
        };
        let mut out = String::with_capacity(s.len() + 2);
        out.push(quote);
        for c in s.chars() {
            match c {
                '\'' if quote == '\'' => out.push_str("\\'"),
                '\\' => out.push_str("\\\\"),
                '\u{8}' => out.push_str("\\b"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\u{c}' => out.push_str("\\f"),
                '\r' => out.push_str("\\r"),
                c if c < ' ' || ('\u{7f}'..='\u{9f}').contains(&c) => {
                    out.push_str(&format!("\\x{:02X}", u32::from(c)));
                }
                c => out.push(c),
            }
        }
        out.push(quote);
        out
    }

    fn reduce_to_single_string(
        output: Vec<String>,
        braces: (&str, &str),
        array: Option<&Vec<Value>>,
    ) -> String {
        let entries = output.len();
        let output = match array {
            Some(items) if entries > 6 => group_array_elements(output, items),
            _ => output,
        };
        if entries == output.len() {
            let start = output.len() + braces.0.len() + 10;
            if is_below_break_length(&output, start) {
                let joined = output.join(", ");
                if !joined.contains('\n') {
                    return format!("{} {joined} {}", braces.0, braces.1);
                }
            }
        }
        format!("{}\n  {}\n{}", braces.0, output.join(",\n  "), braces.1)
    }

    fn is_below_break_length(output: &[String], start: usize) -> bool {
        let mut total = output.len() + start;
        if total + output.len() > BREAK_LENGTH {
            return false;
        }
        for entry in output {
            total += utf16_len(entry);
            if total > BREAK_LENGTH {
                return false;
            }
        }
        true
    }

    /// groupArrayElements: lay out many short array entries in aligned columns.
    fn group_array_elements(output: Vec<String>, items: &[Value]) -> Vec<String> {
        const SEPARATOR_SPACE: usize = 2;
        let has_more_items = items.len() > MAX_ARRAY_LENGTH;
        let output_length = if has_more_items { output.len() - 1 } else { output.len() };
        let data_len: Vec<usize> = output[..output_length].iter().map(|s| string_width(s)).collect();
        let total_length: usize = data_len.iter().map(|len| len + SEPARATOR_SPACE).sum();
        let max_length = data_len.iter().copied().max().unwrap_or(0);
        let actual_max = max_length + SEPARATOR_SPACE;
        if !(actual_max * 3 < BREAK_LENGTH
            && (total_length as f64 / actual_max as f64 > 5.0 || max_length <= 6))
        {
            return output;
        }
        let average_bias = (actual_max as f64 - total_length as f64 / output.len() as f64).sqrt();
        let biased_max = (actual_max as f64 - 3.0 - average_bias).max(1.0);
        let columns = [
            ((2.5 * biased_max * output_length as f64).sqrt() / biased_max).round(),
            (BREAK_LENGTH / actual_max) as f64,
            (COMPACT * 4) as f64,
            15.0,
        ]
        .into_iter()
        .fold(f64::INFINITY, f64::min);
        if columns <= 1.0 {
            return output;
        }
        let columns = columns as usize;
        let max_line_length: Vec<usize> = (0..columns)
            .map(|column| {
                (column..output_length).step_by(columns).map(|j| data_len[j]).max().unwrap_or(0)
                    + SEPARATOR_SPACE
            })
            .collect();
        // Numbers are right-aligned, anything else left-aligned.
        let pad_start = items.iter().take(output.len()).all(Value::is_number);
        let mut grouped = Vec::new();
        for row_start in (0..output_length).step_by(columns) {
            let row_end = (row_start + columns).min(output_length);
            let mut line = String::new();
            for j in row_start..row_end {
                let is_last = j + 1 == row_end;
                let cell = if is_last { output[j].clone() } else { format!("{}, ", output[j]) };
                // The target is in string-length units, corrected for wide characters.
                let column_width = max_line_length[j - row_start] as i64;
                let wide_correction = utf16_len(&output[j]) as i64 - data_len[j] as i64;
                let target = match (is_last, pad_start) {
                    (false, _) => column_width + wide_correction,
                    (true, true) => column_width + wide_correction - SEPARATOR_SPACE as i64,
                    (true, false) => 0,
                };
                let fill_width = (target - utf16_len(&cell) as i64).max(0) as usize;
                let fill = " ".repeat(fill_width);
                if pad_start {
                    line.push_str(&fill);
                    line.push_str(&cell);
                } else {
                    line.push_str(&cell);
                    line.push_str(&fill);
                }
            }
            grouped.push(line);
        }
        if has_more_items {
            if let Some(more) = output.last() {
                grouped.push(more.clone());
            }
        }
        grouped
    }

    /// getStringWidth, approximately: East Asian wide characters count two columns,
    /// combining marks and zero-width characters none.
    fn string_width(s: &str) -> usize {
        s.chars()
            .map(|c| {
                let code = u32::from(c);
                if is_zero_width(code) {
                    0
                } else if is_full_width(code) {
                    2
                } else {
                    1
                }
            })
            .sum()
    }

    fn is_zero_width(code: u32) -> bool {
        code <= 0x1f
            || (0x7f..=0x9f).contains(&code)
            || (0x300..=0x36f).contains(&code)
            || (0x200b..=0x200f).contains(&code)
            || (0x20d0..=0x20ff).contains(&code)
            || (0xfe00..=0xfe0f).contains(&code)
            || (0xfe20..=0xfe2f).contains(&code)
            || (0xe0100..=0xe01ef).contains(&code)
    }

    fn is_full_width(code: u32) -> bool {
        code >= 0x1100
            && (code <= 0x115f
                || code == 0x2329
                || code == 0x232a
                || ((0x2e80..=0x3247).contains(&code) && code != 0x303f)
                || (0x3250..=0x4dbf).contains(&code)
                || (0x4e00..=0xa4c6).contains(&code)
                || (0xa960..=0xa97c).contains(&code)
                || (0xac00..=0xd7a3).contains(&code)
                || (0xf900..=0xfaff).contains(&code)
                || (0xfe10..=0xfe19).contains(&code)
                || (0xfe30..=0xfe6b).contains(&code)
                || (0xff01..=0xff60).contains(&code)
                || (0xffe0..=0xffe6).contains(&code)
                || (0x1b000..=0x1b001).contains(&code)
                || (0x1f200..=0x1f251).contains(&code)
                || (0x1f300..=0x1f64f).contains(&code)
                || (0x20000..=0x3fffd).contains(&code))
    }
}
