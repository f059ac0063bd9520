//! Control side: parsing of byte sizes such as `"64KiB"` or `"1MiB"`.

/// Parses `"<integer>[B|KiB|MiB]"`; a bare integer is bytes.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("\"{text}\" does not start with a whole number"))?;
    let scale = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1024,
        "MiB" | "M" => 1024 * 1024,
        other => return Err(format!("unknown unit \"{other}\" (use B, KiB or MiB)")),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("\"{text}\" is too large"))
}

/// Formats a size the way the configuration accepts it.
pub fn format_size(bytes: usize) -> String {
    if bytes >= 1024 * 1024 && bytes.is_multiple_of(1024 * 1024) {
        format!("{}MiB", bytes / (1024 * 1024))
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("KiB").is_err());
        for n in [4096, 65536, 1 << 20, 1000] {
            assert_eq!(parse_size(&format_size(n)), Ok(n));
        }
    }
}
