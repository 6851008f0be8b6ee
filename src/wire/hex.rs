//! Lower-case hex: how keys, fingerprints, digests and configuration versions are written to
//! Redis, the journal, the admin view and logs.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// `bytes` in hex, written into `out`: for a caller that formats many and allocates for none
/// (the journal's writer, two per keyed record).
pub fn hex32_into<'a>(bytes: &[u8; 32], out: &'a mut [u8; 64]) -> &'a str {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    std::str::from_utf8(out).expect("hex digits are ASCII")
}

/// The 32 bytes written as 64 hex digits (either case); `None` for anything else.
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_on_the_stack_and_in_a_string_agree_and_read_back() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let mut out = [0u8; 64];
        let text = hex32_into(&bytes, &mut out);
        assert_eq!(text, hex(&bytes));
        assert_eq!(&text[..8], "052a4f74");
        assert_eq!(unhex32(text), Some(bytes));
        assert_eq!(unhex32(&text[1..]), None);
        assert_eq!(hex(&[0x00, 0xff, 0x0a]), "00ff0a");
    }
}
