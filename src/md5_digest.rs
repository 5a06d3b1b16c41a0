//! MD5 for [`ETagHasher::Md5`](crate::ETagHasher::Md5) at the speed of the best implementation
//! on the machine: RustCrypto's assembly compression function (`md5-asm`) on x86 and x86_64,
//! the pure-Rust `md-5` elsewhere.
//!
//! Why not `md-5` everywhere: measured on 32 KiB bodies (`benches/md5.rs`), `md5-asm` hashes
//! about a fifth faster, on par with OpenSSL's MD5 (what Django's `hashlib.md5` uses), and
//! `md-5` 0.11 no longer offers it as a feature. The padding below is RFC 1321 §3.1–3.2; the
//! output is checked against `md-5` by a property test and against Django by the parity tests.

/// The MD5 digest of `data` (RFC 1321).
pub(crate) fn md5(data: &[u8]) -> [u8; 16] {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        assembly(data)
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64")))]
    {
        portable(data)
    }
}

/// `md-5`, the pure-Rust implementation: the fallback, and the reference in tests and benches.
pub(crate) fn portable(data: &[u8]) -> [u8; 16] {
    use md5::{Digest, Md5};
    Md5::digest(data).into()
}

/// RFC 1321 with `md5-asm`'s compression function over whole 64-byte blocks.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub(crate) fn assembly(data: &[u8]) -> [u8; 16] {
    // §3.3: the initial state, A B C D as little-endian words.
    let mut state = [0x6745_2301_u32, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let (blocks, rest) = data.as_chunks::<64>();
    md5_asm::compress(&mut state, blocks);
    // §3.1–3.2: a 1 bit, zeros to 56 mod 64, then the bit length as a little-endian u64.
    let mut tail = [0_u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let len = if rest.len() < 56 { 64 } else { 128 };
    let bits = u64::try_from(data.len())
        .unwrap_or(u64::MAX)
        .wrapping_mul(8);
    tail[len - 8..len].copy_from_slice(&bits.to_le_bytes());
    let (tail_blocks, _) = tail[..len].as_chunks::<64>();
    md5_asm::compress(&mut state, tail_blocks);
    let mut out = [0_u8; 16];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn rfc_1321_test_suite() {
        // RFC 1321 §A.5.
        let cases: [(&str, &str); 7] = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                "d174ab98d277d9f5a5611c2c9f419d9f",
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, hex) in cases {
            let digest: String = md5(input.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(digest, hex, "{input:?}");
        }
    }

    proptest! {
        /// Every length around the padding boundaries (55, 56, 63, 64, …) and beyond.
        #[test]
        fn agrees_with_md5_crate(data in proptest::collection::vec(any::<u8>(), 0..1100)) {
            prop_assert_eq!(md5(&data), portable(&data));
        }
    }
}
