//! Deterministic bodies of any size (no RNG state to share: a seed and a
//! length name a body) and SHA-1 digests to compare them without keeping
//! them in memory.

use std::io::{Read, Write};
use std::path::Path;

/// A reader of `len` pseudo-random bytes derived from `seed` (xorshift64*).
pub struct PatternReader {
    state: u64,
    remaining: u64,
    pending: [u8; 8],
    pending_len: usize,
}

impl PatternReader {
    pub fn new(seed: u64, len: u64) -> PatternReader {
        PatternReader {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            remaining: len,
            pending: [0; 8],
            pending_len: 0,
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes()
    }
}

impl Read for PatternReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining) as usize;
        let mut i = 0;
        while i < n {
            if self.pending_len == 0 {
                self.pending = self.next_word();
                self.pending_len = 8;
            }
            let take = (n - i).min(self.pending_len);
            let start = 8 - self.pending_len;
            buf[i..i + take].copy_from_slice(&self.pending[start..start + take]);
            self.pending_len -= take;
            i += take;
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// `len` bytes of the pattern `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    PatternReader::new(seed, len as u64)
        .read_to_end(&mut v)
        .expect("pattern");
    v
}

/// Writes `len` bytes of the pattern `seed` to `path`; returns their SHA-1.
pub fn write_pattern_file(path: &Path, seed: u64, len: u64) -> String {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    );
    let mut reader = PatternReader::new(seed, len);
    let mut sha = sha1_smol::Sha1::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).expect("pattern");
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        file.write_all(&buf[..n]).expect("write pattern file");
    }
    file.flush().expect("flush");
    sha.digest().to_string()
}

/// SHA-1 (hex) of the pattern `seed` of `len` bytes.
pub fn pattern_sha1(seed: u64, len: u64) -> String {
    let mut reader = PatternReader::new(seed, len);
    sha1_reader(&mut reader)
}

/// SHA-1 (hex) of `bytes`.
pub fn sha1_hex(bytes: &[u8]) -> String {
    sha1_smol::Sha1::from(bytes).digest().to_string()
}

/// SHA-1 (hex) of everything `reader` yields.
pub fn sha1_reader(reader: &mut impl Read) -> String {
    let mut sha = sha1_smol::Sha1::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    sha.digest().to_string()
}

/// SHA-1 (hex) of a file.
pub fn file_sha1(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sha1_reader(&mut f)
}

/// Panics unless `got == want`, describing a difference by lengths, first
/// differing offset and digests (never by dumping the bytes).
#[track_caller]
pub fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: {} bytes (sha1 {}), want {} bytes (sha1 {}); first difference at offset {first}",
        got.len(),
        sha1_hex(got),
        want.len(),
        sha1_hex(want)
    );
}

/// Standard base64 (with padding), for WebSocket keys.
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_chunking_independent() {
        let whole = pattern(7, 1000);
        let mut r = PatternReader::new(7, 1000);
        let mut parts = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            parts.extend_from_slice(&buf[..n]);
        }
        assert_eq!(whole, parts);
        assert_ne!(pattern(8, 1000), whole);
        assert_eq!(pattern_sha1(7, 1000), sha1_hex(&whole));
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
