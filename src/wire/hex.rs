//! Lower-case hex: how keys, fingerprints, digests and configuration versions are written to
//! Redis, the journal, the admin view and logs. The encoding and decoding are `const-hex`'s
//! (already in the tree through OpenTelemetry); this module fixes the shapes the gateway uses.

pub fn hex(bytes: &[u8]) -> String {
    const_hex::encode(bytes)
}

/// `bytes` in hex, written into `out`: for a caller that formats many and allocates for none
/// (the journal's writer, two per keyed record).
pub fn hex32_into<'a>(bytes: &[u8; 32], out: &'a mut [u8; 64]) -> &'a str {
    const_hex::encode_to_slice(bytes, out).expect("64 bytes hold 32 in hex");
    std::str::from_utf8(out).expect("hex digits are ASCII")
}

/// The 32 bytes written as exactly 64 hex digits (either case); `None` for anything else (a
/// sign, a `0x` prefix, another length).
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    const_hex::decode_to_array(s).ok()
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
        assert_eq!(unhex32(&text.to_ascii_uppercase()), Some(bytes));
        assert_eq!(unhex32(&text[1..]), None);
        assert_eq!(hex(&[0x00, 0xff, 0x0a]), "00ff0a");
    }

    /// Issue 29: `u8::from_str_radix` took `+f` for a digit pair.
    #[test]
    fn a_sign_or_a_prefix_is_not_hex() {
        let good = "0".repeat(64);
        assert!(unhex32(&good).is_some());
        for bad in [
            format!("+f{}", &good[2..]),
            format!("0x{}", &good[2..]),
            format!("-0{}", &good[2..]),
            format!("{} ", &good[1..]),
        ] {
            assert_eq!(unhex32(&bad), None, "{bad}");
        }
    }
}
