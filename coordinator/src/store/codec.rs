//! The compact encoding of one result. A `HistoryEntry` is split into a [`Row`], what changes from
//! probe to probe (time, region, agent, status, HTTP status, stage timings in µs, the
//! certificate's days left and health), and a residual: the entry with those fields taken out
//! (certificate facts and chain, TLS parameters, backends, a failure's text, flags). Results of
//! one target mostly share their residual, so it is stored once per distinct value per target and
//! day (`FACTS`, keyed by a hash of its bytes) and the row refers to it by that hash.
//!
//! A row is stored alone while its hour is open (`RECENT`: varints, the hash as 8 bytes); once
//! the hour is closed, housekeeping seals a target's rows of it into a [`block`]: rows sorted by
//! region and time, each time as the change of the interval since the previous row, the meta
//! fields written only when they differ from the previous row's, hashes once per block. A
//! healthy result then takes about 15 bytes.
//!
//! Kept exactly: every field, except the probe's time (to the millisecond: it is the key) and the
//! timings (to the microsecond). What cannot be kept that way (a timing that is not a finite
//! number of µs, a result whose time differs from its key, a URL other than the target's) stays
//! in the residual, whole.

use prost::Message;
use prost::bytes::Buf;
use prost::encoding::{decode_varint, encode_varint};
use vantage_proto::v1::{HistoryEntry, Timings};

use super::db::{StoreError, corrupt};
use crate::clock::{ms, timestamp};

/// The entry has a result (nearly all do).
const RESULT: u32 = 1;
/// `checked_at` is the row's time.
const CHECKED: u32 = 1 << 1;
/// The result's URL is the target's.
const URL: u32 = 1 << 2;
/// Timings are in the row: total always, then each stage whose bit is set.
const TIMINGS: u32 = 1 << 3;
const STAGE_BITS: [u32; 4] = [1 << 4, 1 << 5, 1 << 6, 1 << 7];
/// The residual holds a certificate whose days left and health are in the row.
const CERT: u32 = 1 << 8;
/// A residual is referred to.
const RESIDUAL: u32 = 1 << 9;

/// Most a timing in µs may be to stay in the row (about 285 years; anything larger is not a
/// timing an agent measured, and is kept whole in the residual).
const MAX_TIMING_US: f64 = 9.0e15;

/// What changes from probe to probe, with its region and agent interned. Equal meta between two
/// rows of a block is written once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Meta {
    pub flags: u32,
    pub region: u32,
    pub agent: u32,
    pub status: i32,
    pub http_status: u32,
    pub cert_days: i64,
    pub cert_health: i32,
    /// The residual's hash (`FACTS`), when `RESIDUAL`.
    pub residual: u64,
}

impl Meta {
    /// The residual's hash, if the row refers to one.
    pub(super) fn residual(&self) -> Option<u64> {
        (self.flags & RESIDUAL != 0).then_some(self.residual)
    }
}

/// One result, compact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Row {
    pub at_ms: i64,
    pub meta: Meta,
    /// µs: total, dns, connect, tls, ttfb (the stages present by `STAGE_BITS`).
    pub timings: [i64; 5],
}

/// The residual's key in `FACTS`: the first 8 bytes of its SHA-256.
pub(super) fn hash(residual: &[u8]) -> u64 {
    let digest = ring::digest::digest(&ring::digest::SHA256, residual);
    u64::from_le_bytes(digest.as_ref()[..8].try_into().expect("8 bytes"))
}

fn micros(ms: f64) -> Option<i64> {
    let us = (ms * 1000.0).round();
    (us.is_finite() && us.abs() <= MAX_TIMING_US).then_some(us as i64)
}

/// Splits `entry` (of target `url`, probed at `at_ms`) into its row (region and agent still 0:
/// the caller interns them) and its residual's bytes, if any is left.
pub(super) fn split(entry: &HistoryEntry, url: &str, at_ms: i64) -> (Row, Option<Vec<u8>>) {
    let mut rest = entry.clone();
    rest.region.clear();
    rest.agent.clear();
    let mut row = Row { at_ms, ..Row::default() };
    if let Some(result) = rest.result.as_mut() {
        row.meta.flags |= RESULT;
        row.meta.status = std::mem::take(&mut result.status);
        row.meta.http_status = std::mem::take(&mut result.http_status);
        if result.url == url {
            row.meta.flags |= URL;
            result.url.clear();
        }
        if result.checked_at.as_ref().is_some_and(|t| ms(t) == at_ms) {
            row.meta.flags |= CHECKED;
            result.checked_at = None;
        }
        if let Some(t) = &result.timings {
            let stages = [t.dns_ms, t.connect_ms, t.tls_ms, t.ttfb_ms];
            let total = micros(t.total_ms);
            let parts: Vec<Option<Option<i64>>> = stages.iter().map(|s| s.map(micros)).collect();
            if let (Some(total), true) = (total, parts.iter().all(|p| p.is_none_or(|us| us.is_some()))) {
                row.meta.flags |= TIMINGS;
                row.timings[0] = total;
                for (i, part) in parts.iter().enumerate() {
                    if let Some(Some(us)) = part {
                        row.meta.flags |= STAGE_BITS[i];
                        row.timings[i + 1] = *us;
                    }
                }
                result.timings = None;
            }
        }
        if let Some(cert) = result.cert.as_mut() {
            row.meta.flags |= CERT;
            row.meta.cert_days = std::mem::take(&mut cert.days_remaining);
            row.meta.cert_health = std::mem::take(&mut cert.health);
        }
        if *result == Default::default() {
            rest.result = None;
        }
    }
    if rest == HistoryEntry::default() {
        return (row, None);
    }
    let bytes = rest.encode_to_vec();
    row.meta.flags |= RESIDUAL;
    row.meta.residual = hash(&bytes);
    (row, Some(bytes))
}

/// The entry `row` was split from, given its target's URL, its names and its residual's bytes.
pub(super) fn join(
    row: &Row,
    url: &str,
    region: &str,
    agent: &str,
    residual: Option<&[u8]>,
) -> Result<HistoryEntry, StoreError> {
    let flags = row.meta.flags;
    let mut entry = match residual {
        Some(bytes) => HistoryEntry::decode(bytes).map_err(corrupt)?,
        None if flags & RESIDUAL != 0 => return Err(corrupt("a result's shared facts are missing")),
        None => HistoryEntry::default(),
    };
    region.clone_into(&mut entry.region);
    agent.clone_into(&mut entry.agent);
    if flags & RESULT != 0 {
        let result = entry.result.get_or_insert_with(Default::default);
        result.status = row.meta.status;
        result.http_status = row.meta.http_status;
        if flags & URL != 0 {
            url.clone_into(&mut result.url);
        }
        if flags & CHECKED != 0 {
            result.checked_at = Some(timestamp(row.at_ms));
        }
        if flags & TIMINGS != 0 {
            let stage = |i: usize| (flags & STAGE_BITS[i] != 0).then(|| row.timings[i + 1] as f64 / 1000.0);
            result.timings = Some(Timings {
                dns_ms: stage(0),
                connect_ms: stage(1),
                tls_ms: stage(2),
                ttfb_ms: stage(3),
                total_ms: row.timings[0] as f64 / 1000.0,
            });
        }
        if flags & CERT != 0 {
            let cert = result.cert.get_or_insert_with(Default::default);
            cert.days_remaining = row.meta.cert_days;
            cert.health = row.meta.cert_health;
        }
    }
    Ok(entry)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put(out: &mut Vec<u8>, v: u64) {
    encode_varint(v, out);
}

fn get(buf: &mut &[u8]) -> Result<u64, StoreError> {
    decode_varint(buf).map_err(corrupt)
}

fn get_u32(buf: &mut &[u8]) -> Result<u32, StoreError> {
    u32::try_from(get(buf)?).map_err(corrupt)
}

fn get_i32(buf: &mut &[u8]) -> Result<i32, StoreError> {
    i32::try_from(unzigzag(get(buf)?)).map_err(corrupt)
}

/// The meta fields but the residual, which alone and in a block are written differently.
fn put_meta(out: &mut Vec<u8>, meta: &Meta) {
    put(out, u64::from(meta.flags));
    put(out, u64::from(meta.region));
    put(out, u64::from(meta.agent));
    if meta.flags & RESULT != 0 {
        put(out, zigzag(i64::from(meta.status)));
        put(out, u64::from(meta.http_status));
    }
    if meta.flags & CERT != 0 {
        put(out, zigzag(meta.cert_days));
        put(out, zigzag(i64::from(meta.cert_health)));
    }
}

fn get_meta(buf: &mut &[u8]) -> Result<Meta, StoreError> {
    let mut meta = Meta { flags: get_u32(buf)?, region: get_u32(buf)?, agent: get_u32(buf)?, ..Meta::default() };
    if meta.flags & RESULT != 0 {
        meta.status = get_i32(buf)?;
        meta.http_status = get_u32(buf)?;
    }
    if meta.flags & CERT != 0 {
        meta.cert_days = unzigzag(get(buf)?);
        meta.cert_health = get_i32(buf)?;
    }
    Ok(meta)
}

fn put_timings(out: &mut Vec<u8>, row: &Row) {
    if row.meta.flags & TIMINGS == 0 {
        return;
    }
    put(out, zigzag(row.timings[0]));
    for (i, bit) in STAGE_BITS.iter().enumerate() {
        if row.meta.flags & bit != 0 {
            put(out, zigzag(row.timings[i + 1]));
        }
    }
}

fn get_timings(buf: &mut &[u8], row: &mut Row) -> Result<(), StoreError> {
    if row.meta.flags & TIMINGS == 0 {
        return Ok(());
    }
    row.timings[0] = unzigzag(get(buf)?);
    for (i, bit) in STAGE_BITS.iter().enumerate() {
        if row.meta.flags & bit != 0 {
            row.timings[i + 1] = unzigzag(get(buf)?);
        }
    }
    Ok(())
}

/// A row alone (`RECENT`'s value; its time is in the key).
pub(super) fn encode_row(row: &Row) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    put_meta(&mut out, &row.meta);
    put_timings(&mut out, row);
    if row.meta.flags & RESIDUAL != 0 {
        out.extend_from_slice(&row.meta.residual.to_le_bytes());
    }
    out
}

pub(super) fn decode_row(at_ms: i64, mut bytes: &[u8]) -> Result<Row, StoreError> {
    let buf = &mut bytes;
    let mut row = Row { at_ms, meta: get_meta(buf)?, timings: [0; 5] };
    get_timings(buf, &mut row)?;
    if row.meta.flags & RESIDUAL != 0 {
        if buf.remaining() < 8 {
            return Err(corrupt("a result row is cut short"));
        }
        row.meta.residual = buf.get_u64_le();
    }
    Ok(row)
}

/// Sealed blocks: a closed hour's rows of one target.
pub(super) mod block {
    use super::*;

    /// Most bytes one part of a block holds, so a part fills one 4 KiB page of redb's at most
    /// (its leaf header, key and offsets take the rest): a larger value would take a leaf of two
    /// pages, half of it empty.
    pub const PART_BYTES: usize = 4_000;

    /// Writes rows (sorted by region, then time) into one part.
    struct Part {
        body: Vec<u8>,
        hashes: Vec<u64>,
        rows: u64,
        base: i64,
        previous: Option<(Row, i64)>,
    }

    impl Part {
        fn new(base: i64) -> Part {
            Part { body: Vec::new(), hashes: Vec::new(), rows: 0, base, previous: None }
        }

        /// Bytes the part takes once finished (the varints' lengths bounded by 10).
        fn len(&self) -> usize {
            self.body.len() + 8 * self.hashes.len() + 30
        }

        fn push(&mut self, row: &Row) {
            let (previous_at, previous_interval, previous_meta) = match &self.previous {
                Some((p, interval)) if p.meta.region == row.meta.region => (p.at_ms, *interval, Some(p.meta)),
                Some((p, _)) => (self.base, 0, Some(p.meta)),
                None => (self.base, 0, None),
            };
            let interval = row.at_ms.wrapping_sub(previous_at);
            let same = previous_meta == Some(row.meta);
            put(&mut self.body, (zigzag(interval.wrapping_sub(previous_interval)) << 1) | u64::from(same));
            if !same {
                put_meta(&mut self.body, &row.meta);
                let index = if row.meta.flags & RESIDUAL != 0 {
                    match self.hashes.iter().position(|h| *h == row.meta.residual) {
                        Some(i) => i,
                        None => {
                            self.hashes.push(row.meta.residual);
                            self.hashes.len() - 1
                        }
                    }
                } else {
                    0
                };
                put(&mut self.body, index as u64);
            }
            put_timings(&mut self.body, row);
            self.rows += 1;
            self.previous = Some((*row, interval));
        }

        fn finish(self) -> Vec<u8> {
            let mut out = Vec::with_capacity(self.len());
            put(&mut out, self.rows);
            put(&mut out, zigzag(self.base));
            put(&mut out, self.hashes.len() as u64);
            for h in &self.hashes {
                out.extend_from_slice(&h.to_le_bytes());
            }
            out.extend_from_slice(&self.body);
            out
        }
    }

    /// Sorts `rows` (region, then time) and encodes them as parts of at most [`PART_BYTES`]
    /// (a part holds at least one row, whatever its size).
    pub fn encode(rows: &mut [Row], base: i64) -> Vec<Vec<u8>> {
        rows.sort_by_key(|r| (r.meta.region, r.at_ms));
        let mut parts = Vec::new();
        let mut part = Part::new(base);
        for row in rows.iter() {
            let undo = (part.body.len(), part.hashes.len(), part.rows, part.previous);
            part.push(row);
            if part.len() > PART_BYTES && undo.2 > 0 {
                part.body.truncate(undo.0);
                part.hashes.truncate(undo.1);
                (part.rows, part.previous) = (undo.2, undo.3);
                parts.push(std::mem::replace(&mut part, Part::new(base)).finish());
                part.push(row);
            }
        }
        if part.rows > 0 {
            parts.push(part.finish());
        }
        parts
    }

    /// How many rows a part holds, from its first bytes alone.
    pub fn rows(mut bytes: &[u8]) -> Result<u64, StoreError> {
        get(&mut bytes)
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Vec<Row>, StoreError> {
        let buf = &mut bytes;
        let count = get(buf)?;
        let base = unzigzag(get(buf)?);
        let hashes = get(buf)?;
        if buf.remaining() as u64 / 8 < hashes {
            return Err(corrupt("a sealed block is cut short"));
        }
        let hashes: Vec<u64> = (0..hashes).map(|_| buf.get_u64_le()).collect();
        let mut rows = Vec::with_capacity(count.min(1 << 16) as usize);
        let mut previous: Option<(Row, i64)> = None;
        for _ in 0..count {
            let head = get(buf)?;
            let change = unzigzag(head >> 1);
            let mut row = Row::default();
            if head & 1 == 1 {
                row.meta = previous.as_ref().ok_or_else(|| corrupt("a sealed block starts with a repeat"))?.0.meta;
            } else {
                row.meta = get_meta(buf)?;
                let index = get(buf)? as usize;
                if row.meta.flags & RESIDUAL != 0 {
                    row.meta.residual =
                        *hashes.get(index).ok_or_else(|| corrupt("a sealed block's hash is missing"))?;
                }
            }
            let (previous_at, previous_interval) = match &previous {
                Some((p, interval)) if p.meta.region == row.meta.region => (p.at_ms, *interval),
                _ => (base, 0),
            };
            let interval = previous_interval.wrapping_add(change);
            row.at_ms = previous_at.wrapping_add(interval);
            get_timings(buf, &mut row)?;
            previous = Some((row, interval));
            rows.push(row);
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use vantage_proto::v1::{Backend, Certificate, ChainCertificate, Failure, ProbeResult, ProbeStatus};

    use super::*;

    const URL_A: &str = "https://a.example/";

    /// An entry with every field a user reads set.
    fn full(at_ms: i64) -> HistoryEntry {
        HistoryEntry {
            region: "eu".into(),
            agent: "agent-eu".into(),
            result: Some(ProbeResult {
                url: URL_A.into(),
                status: ProbeStatus::Down as i32,
                failure: Some(Failure {
                    stage: 5,
                    code: "http_status".into(),
                    message: "HTTP 503".into(),
                    hint: "look at the server".into(),
                    detail: "Service Unavailable".into(),
                }),
                cert: Some(Certificate {
                    subject: "CN=a.example".into(),
                    issuer: "CN=CA".into(),
                    sans: vec!["a.example".into(), "www.a.example".into()],
                    not_before: Some(timestamp(1_000)),
                    not_after: Some(timestamp(9_000_000_000)),
                    days_remaining: 42,
                    health: 2,
                    sha256: "ab".repeat(32),
                    earliest_expiry: Some(timestamp(8_000_000_000)),
                    key: "EC P-256".into(),
                    signature_algorithm: "ecdsa-with-SHA256".into(),
                    chain: vec![ChainCertificate {
                        subject: "CN=CA".into(),
                        issuer: "CN=Root".into(),
                        not_after: Some(timestamp(8_000_000_000)),
                        sha256: "cd".repeat(32),
                    }],
                }),
                tls_version: "TLSv1.3".into(),
                tls_cipher: "TLS13_AES_128_GCM_SHA256".into(),
                alpn: "h2".into(),
                http_status: 503,
                timings: Some(Timings {
                    dns_ms: Some(1.234),
                    connect_ms: None,
                    tls_ms: Some(12.5),
                    ttfb_ms: Some(40.001),
                    total_ms: 60.25,
                }),
                backends: vec![Backend {
                    address: "192.0.2.1:443".into(),
                    status: ProbeStatus::Up as i32,
                    failure: None,
                    cert_sha256: "ab".repeat(32),
                }],
                checked_at: Some(timestamp(at_ms)),
            }),
            retried: true,
            run_now_id: "run-1".into(),
            first_failure_code: "connect_timeout".into(),
        }
    }

    fn round_trip(entry: &HistoryEntry, at_ms: i64) -> HistoryEntry {
        let (mut row, residual) = split(entry, URL_A, at_ms);
        row.meta.region = 3;
        row.meta.agent = 4;
        let alone = decode_row(at_ms, &encode_row(&row)).unwrap();
        assert_eq!(alone, row);
        let sealed = block::decode(&block::encode(&mut [row], 0)[0]).unwrap();
        assert_eq!(sealed, [row]);
        join(&row, URL_A, &entry.region, &entry.agent, residual.as_deref()).unwrap()
    }

    #[test]
    fn every_field_a_user_reads_survives_the_round_trip() {
        let entry = full(1_700_000_000_123);
        assert_eq!(round_trip(&entry, 1_700_000_000_123), entry);
        // Timings to the µs.
        let mut precise = full(5);
        precise.result.as_mut().unwrap().timings.as_mut().unwrap().total_ms = 60.250_4;
        let back = round_trip(&precise, 5);
        assert_eq!(back.result.unwrap().timings.unwrap().total_ms, 60.25);
        // What does not fit the row is kept whole: a time other than the key, another URL, no
        // result at all, a timing that is not a number.
        let mut odd = full(5);
        let r = odd.result.as_mut().unwrap();
        r.url = "https://b.example/".into();
        r.timings.as_mut().unwrap().dns_ms = Some(f64::NAN);
        let back = round_trip(&odd, 7);
        assert_eq!(back.result.as_ref().unwrap().checked_at, Some(timestamp(5)));
        assert_eq!(back.result.as_ref().unwrap().url, "https://b.example/");
        assert!(back.result.unwrap().timings.unwrap().dns_ms.unwrap().is_nan());
        let bare = HistoryEntry { region: "eu".into(), agent: "a".into(), ..Default::default() };
        assert_eq!(round_trip(&bare, 0), bare);
    }

    #[test]
    fn healthy_results_share_their_residual_and_seal_into_a_few_bytes_each() {
        let healthy = |at: i64, total: f64| {
            let mut e = full(at);
            let r = e.result.as_mut().unwrap();
            r.status = ProbeStatus::Up as i32;
            r.failure = None;
            r.http_status = 200;
            r.timings.as_mut().unwrap().total_ms = total;
            e.retried = false;
            e.run_now_id.clear();
            e.first_failure_code.clear();
            e
        };
        let hour = 3_600_000;
        let mut rows = Vec::new();
        let mut residuals = std::collections::BTreeSet::new();
        for (region, offset) in [(1u32, 0i64), (2, 17_000), (3, 39_000)] {
            for i in 0..60 {
                let at = hour + offset + i * 60_000 + (i * 7 % 13);
                let (mut row, residual) = split(&healthy(at, 50.0 + i as f64 * 1.37), URL_A, at);
                residuals.insert(residual.unwrap());
                row.meta.region = region;
                row.meta.agent = region + 10;
                rows.push(row);
            }
        }
        assert_eq!(residuals.len(), 1, "one residual for every healthy result");
        let mut sorted = rows.clone();
        let parts = block::encode(&mut sorted, hour);
        let bytes: usize = parts.iter().map(Vec::len).sum();
        assert!(bytes / rows.len() <= 20, "{bytes} bytes for {} rows", rows.len());
        let mut back: Vec<Row> = parts.iter().flat_map(|p| block::decode(p).unwrap()).collect();
        back.sort_by_key(|r| (r.at_ms, r.meta.region));
        rows.sort_by_key(|r| (r.at_ms, r.meta.region));
        assert_eq!(back, rows);
        assert_eq!(parts.iter().map(|p| block::rows(p).unwrap()).sum::<u64>(), 180);
    }

    #[test]
    fn a_large_block_is_cut_into_parts_of_a_page_and_garbage_is_an_error() {
        let mut rows: Vec<Row> = (0..2_000)
            .map(|i| Row {
                at_ms: i * 1_000,
                meta: Meta { flags: RESULT | RESIDUAL, region: 1, residual: i as u64, ..Meta::default() },
                timings: [0; 5],
            })
            .collect();
        let parts = block::encode(&mut rows, 0);
        assert!(parts.len() > 1 && parts.iter().all(|p| p.len() <= block::PART_BYTES));
        let back: Vec<Row> = parts.iter().flat_map(|p| block::decode(p).unwrap()).collect();
        assert_eq!(back, rows);
        assert!(block::decode(&parts[0][..parts[0].len() / 2]).is_err());
        assert!(decode_row(0, &[0xff; 3]).is_err());
    }
}
