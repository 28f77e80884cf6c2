//! Structure-aware mutations of ROOT files: the file header, the key header
//! of any record, the 9-byte compression header of a compressed record, a
//! basket's own header fields (sizes, entry count), the payload of a basket
//! or of the streamer record (decompressed, mutated, recompressed in place),
//! truncation and plain bit flips. Each mutation is a [`Patch`] of the
//! original bytes, so a finding is stored as a few byte writes against a
//! file of the corpus.

use std::io::{Read, Write};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Byte writes (offset, new bytes) and an optional truncation, applied to
/// one corpus file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Patch {
    /// What was done, one line per mutation.
    pub description: Vec<String>,
    /// Keep only the first this many bytes (after the writes).
    pub truncate: Option<usize>,
    /// (offset, bytes as hex) written over the original.
    pub writes: Vec<(usize, String)>,
}

impl Patch {
    /// The mutated bytes.
    pub fn apply(&self, original: &[u8]) -> Vec<u8> {
        let mut out = original.to_vec();
        for (at, hex) in &self.writes {
            let bytes = from_hex(hex);
            let end = at + bytes.len();
            if end > out.len() {
                out.resize(end, 0);
            }
            out[*at..end].copy_from_slice(&bytes);
        }
        if let Some(n) = self.truncate {
            out.truncate(n);
        }
        out
    }

    fn write(&mut self, at: usize, bytes: &[u8]) {
        self.writes.push((at, to_hex(bytes)));
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

/// One record (key header + object) of the file.
#[derive(Debug, Clone)]
pub struct Record {
    pub start: usize,
    pub nbytes: usize,
    pub keylen: usize,
    pub objlen: usize,
    /// 64-bit seek fields (key version > 1000).
    pub big: bool,
    pub class: String,
    pub name: String,
    /// Offset just after the key's title, where a basket's own header starts.
    pub after_strings: usize,
}

impl Record {
    pub fn compressed(&self) -> bool {
        self.nbytes - self.keylen < self.objlen
    }
    fn data(&self) -> std::ops::Range<usize> {
        self.start + self.keylen..self.start + self.nbytes
    }
}

/// The records of a well-formed file, walked from `fBEGIN` to `fEND`.
pub struct Layout {
    pub records: Vec<Record>,
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A ROOT `TString` at `at`: (text, offset after it).
fn tstring(b: &[u8], at: usize) -> (String, usize) {
    let (len, from) = if b[at] == 255 {
        (be_i32(b, at + 1) as usize, at + 5)
    } else {
        (b[at] as usize, at + 1)
    };
    (
        String::from_utf8_lossy(&b[from..from + len]).into_owned(),
        from + len,
    )
}

impl Layout {
    /// Walks the records of an unmodified corpus file.
    pub fn read(b: &[u8]) -> Result<Self, String> {
        if b.len() < 64 || &b[..4] != b"root" {
            return Err("not a ROOT file".into());
        }
        let version = be_i32(b, 4);
        let begin = be_i32(b, 8) as usize;
        let end = if version >= 1_000_000 {
            be_i64(b, 12) as usize
        } else {
            be_i32(b, 12) as usize
        };
        let mut records = Vec::new();
        let mut pos = begin;
        while pos + 4 <= end.min(b.len()) {
            let nbytes = be_i32(b, pos);
            if nbytes < 0 {
                pos += (-nbytes) as usize;
                continue;
            }
            if nbytes == 0 {
                break;
            }
            let key_version = be_i16(b, pos + 4);
            let objlen = be_i32(b, pos + 6) as usize;
            let keylen = be_i16(b, pos + 14) as usize;
            let big = key_version > 1000;
            let strings = pos + 18 + if big { 16 } else { 8 };
            let (class, at) = tstring(b, strings);
            let (name, at) = tstring(b, at);
            let (_title, after) = tstring(b, at);
            records.push(Record {
                start: pos,
                nbytes: nbytes as usize,
                keylen,
                objlen,
                big,
                class,
                name,
                after_strings: after,
            });
            pos += nbytes as usize;
        }
        if records.is_empty() {
            return Err("no records".into());
        }
        Ok(Self { records })
    }

    fn pick<'a>(
        &'a self,
        rng: &mut ChaCha8Rng,
        keep: impl Fn(&Record) -> bool,
    ) -> Option<&'a Record> {
        let chosen: Vec<&Record> = self.records.iter().filter(|r| keep(r)).collect();
        (!chosen.is_empty()).then(|| chosen[rng.random_range(0..chosen.len())])
    }

    /// A record, baskets as often as all other classes together.
    fn any_record(&self, rng: &mut ChaCha8Rng) -> &Record {
        let basket = rng.random_bool(0.5);
        self.pick(rng, |r| (r.class == "TBasket") == basket)
            .or_else(|| self.pick(rng, |_| true))
            .expect("records")
    }
}

/// A value a corrupt length field might hold, given the original.
fn nasty_i32(rng: &mut ChaCha8Rng, original: i32) -> i32 {
    match rng.random_range(0..10) {
        0 => 0,
        1 => -1,
        2 => i32::MAX,
        3 => i32::MIN,
        4 => original.wrapping_add(1),
        5 => original.wrapping_sub(1),
        6 => original.wrapping_mul(2),
        7 => original ^ (1 << rng.random_range(0..31)),
        8 => rng.random_range(0..1 << 24),
        _ => rng.random(),
    }
}

/// A mutation of the corpus file `b` (with its layout); `stack` mutations in a row.
pub fn mutate(b: &[u8], layout: &Layout, rng: &mut ChaCha8Rng, stack: usize) -> Patch {
    let mut patch = Patch::default();
    for _ in 0..stack {
        match rng.random_range(0..16) {
            0 | 1 => truncate(b, layout, rng, &mut patch),
            2 | 3 => file_header(b, rng, &mut patch),
            4..=6 => key_field(b, layout, rng, &mut patch),
            7 | 8 => compression_header(b, layout, rng, &mut patch),
            9 | 10 if layout.records.iter().any(|r| r.class == "TBasket") => {
                basket_header(b, layout, rng, &mut patch)
            }
            9 | 10 => object_words(b, layout, rng, &mut patch),
            11 | 12 => {
                let r = layout.pick(rng, |r| r.compressed() && is_data_object(r));
                let what = r.map_or("basket", |r| {
                    if r.class == "TBasket" {
                        "basket"
                    } else {
                        "histogram"
                    }
                });
                payload(b, r, what, rng, &mut patch)
            }
            13 | 14 => {
                let r = layout.pick(rng, |r| r.name == "StreamerInfo" && r.compressed());
                payload(b, r, "streamer record", rng, &mut patch)
            }
            _ => bit_flips(b, rng, &mut patch),
        }
    }
    patch
}

/// A record holding data a reader decodes field by field: a TTree's
/// basket, or a histogram (DQM files).
fn is_data_object(r: &Record) -> bool {
    r.class == "TBasket" || r.class.starts_with("TH") || r.class == "TProfile"
}

/// Words or bits inside an uncompressed object (a directory, a keys list,
/// a histogram stored raw): the fields a reader trusts for lengths, counts
/// and versions. Files without baskets (DQM histogram files) get these
/// instead of basket-header edits.
fn object_words(b: &[u8], layout: &Layout, rng: &mut ChaCha8Rng, patch: &mut Patch) {
    let Some(r) = layout.pick(rng, |r| !r.compressed() && r.nbytes > r.keylen + 4) else {
        return bit_flips(b, rng, patch);
    };
    let data = r.data();
    let mut changes = Vec::new();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(data.start..data.end - 4);
        if rng.random_bool(0.5) {
            let old = be_i32(b, at);
            let v = nasty_i32(rng, old);
            patch.write(at, &v.to_be_bytes());
            changes.push(format!("word at {at}: {old} -> {v}"));
        } else {
            let bit = rng.random_range(0..8);
            patch.write(at, &[b[at] ^ (1 << bit)]);
            changes.push(format!("bit {bit} of byte {at}"));
        }
    }
    patch.description.push(format!(
        "{} `{}` at {}: object {}",
        r.class,
        r.name,
        r.start,
        changes.join(", ")
    ));
}

fn truncate(b: &[u8], layout: &Layout, rng: &mut ChaCha8Rng, patch: &mut Patch) {
    let at = if rng.random_bool(0.5) {
        rng.random_range(0..b.len())
    } else {
        let r = layout.any_record(rng);
        r.start + rng.random_range(0..r.nbytes.max(1))
    };
    let at = patch.truncate.map_or(at, |t| t.min(at));
    patch.truncate = Some(at);
    patch
        .description
        .push(format!("truncated to {at} of {} bytes", b.len()));
}

fn file_header(b: &[u8], rng: &mut ChaCha8Rng, patch: &mut Patch) {
    // Fields of the (64-bit) header: fVersion, fBEGIN, fEND, fSeekFree,
    // fNbytesFree, nfree, fNbytesName, fUnits, fCompress, fSeekInfo, fNbytesInfo.
    const FIELDS: [(&str, usize, usize); 11] = [
        ("fVersion", 4, 4),
        ("fBEGIN", 8, 4),
        ("fEND", 12, 8),
        ("fSeekFree", 20, 8),
        ("fNbytesFree", 28, 4),
        ("nfree", 32, 4),
        ("fNbytesName", 36, 4),
        ("fUnits", 40, 1),
        ("fCompress", 41, 4),
        ("fSeekInfo", 45, 8),
        ("fNbytesInfo", 53, 4),
    ];
    let (name, at, width) = FIELDS[rng.random_range(0..FIELDS.len())];
    let bytes: Vec<u8> = match width {
        1 => vec![rng.random()],
        4 => nasty_i32(rng, be_i32(b, at)).to_be_bytes().to_vec(),
        _ => {
            let v = be_i64(b, at);
            let nasty = match rng.random_range(0..4) {
                0 => i64::MAX,
                1 => -1,
                2 => v + rng.random_range(-64..64),
                _ => nasty_i32(rng, v as i32) as i64,
            };
            nasty.to_be_bytes().to_vec()
        }
    };
    patch.write(at, &bytes);
    patch
        .description
        .push(format!("file header {name} set to {}", to_hex(&bytes)));
}

fn key_field(b: &[u8], layout: &Layout, rng: &mut ChaCha8Rng, patch: &mut Patch) {
    let r = layout.any_record(rng);
    let seek = if r.big { 8 } else { 4 };
    let fields: [(&str, usize, usize); 8] = [
        ("Nbytes", 0, 4),
        ("Version", 4, 2),
        ("ObjLen", 6, 4),
        ("Datime", 10, 4),
        ("KeyLen", 14, 2),
        ("Cycle", 16, 2),
        ("SeekKey", 18, seek),
        ("SeekPdir", 18 + seek, seek),
    ];
    let (name, offset, width) = fields[rng.random_range(0..fields.len())];
    let at = r.start + offset;
    let original = match width {
        2 => be_i16(b, at) as i32,
        4 => be_i32(b, at),
        _ => be_i64(b, at) as i32,
    };
    let v = nasty_i32(rng, original);
    let bytes = match width {
        2 => (v as i16).to_be_bytes().to_vec(),
        4 => v.to_be_bytes().to_vec(),
        _ => (v as i64).to_be_bytes().to_vec(),
    };
    patch.write(at, &bytes);
    patch.description.push(format!(
        "{} `{}` at {}: key {name} {original} -> {}",
        r.class, r.name, r.start, v
    ));
}

fn compression_header(b: &[u8], layout: &Layout, rng: &mut ChaCha8Rng, patch: &mut Patch) {
    let Some(r) = layout.pick(rng, Record::compressed) else {
        return bit_flips(b, rng, patch);
    };
    let at = r.data().start;
    let (what, offset, bytes): (&str, usize, Vec<u8>) = match rng.random_range(0..4) {
        0 => {
            const TAGS: [&[u8; 2]; 7] = [b"ZL", b"ZS", b"L4", b"XZ", b"CS", b"ZZ", b"\0\0"];
            (
                "algorithm",
                0,
                TAGS[rng.random_range(0..TAGS.len())].to_vec(),
            )
        }
        1 => ("method", 2, vec![rng.random()]),
        k => {
            let size = match rng.random_range(0..5) {
                0 => 0,
                1 => 0xFF_FFFF,
                2 => 1,
                3 => rng.random_range(0..0x100_0000),
                _ => {
                    let o = (k as usize - 2) * 3 + 3;
                    let old = u32::from_le_bytes([b[at + o], b[at + o + 1], b[at + o + 2], 0]);
                    old ^ (1 << rng.random_range(0..24))
                }
            };
            let name = if k == 2 {
                "compressed size"
            } else {
                "uncompressed size"
            };
            (name, 3 * (k as usize - 1), size.to_le_bytes()[..3].to_vec())
        }
    };
    patch.write(at + offset, &bytes);
    patch.description.push(format!(
        "{} `{}` at {}: compression header {what} -> {}",
        r.class,
        r.name,
        r.start,
        to_hex(&bytes)
    ));
}

fn basket_header(b: &[u8], layout: &Layout, rng: &mut ChaCha8Rng, patch: &mut Patch) {
    let Some(r) = layout.pick(rng, |r| r.class == "TBasket") else {
        return bit_flips(b, rng, patch);
    };
    // After the key's strings: Version (2), BufferSize, NevBufSize, NevBuf, Last (4 each), flag (1).
    const FIELDS: [(&str, usize, usize); 6] = [
        ("fVersion", 0, 2),
        ("fBufferSize", 2, 4),
        ("fNevBufSize", 6, 4),
        ("fNevBuf", 10, 4),
        ("fLast", 14, 4),
        ("flag", 18, 1),
    ];
    let (name, offset, width) = FIELDS[rng.random_range(0..FIELDS.len())];
    let at = r.after_strings + offset;
    let bytes = match width {
        1 => vec![rng.random()],
        2 => (nasty_i32(rng, be_i16(b, at) as i32) as i16)
            .to_be_bytes()
            .to_vec(),
        _ => nasty_i32(rng, be_i32(b, at)).to_be_bytes().to_vec(),
    };
    patch.write(at, &bytes);
    patch.description.push(format!(
        "basket `{}` at {}: {name} -> {}",
        r.name,
        r.start,
        to_hex(&bytes)
    ));
}

/// Decompresses a single-chunk zlib record, mutates its object bytes and
/// writes it back compressed in the same place (padded with zeros).
fn payload(b: &[u8], record: Option<&Record>, what: &str, rng: &mut ChaCha8Rng, patch: &mut Patch) {
    let Some(r) = record else {
        return bit_flips(b, rng, patch);
    };
    let data = &b[r.data()];
    if &data[..2] != b"ZL" || r.objlen > 0xFF_FFFF {
        return compression_header(
            b,
            &Layout {
                records: vec![r.clone()],
            },
            rng,
            patch,
        );
    }
    let mut object = Vec::with_capacity(r.objlen);
    if flate2::read::ZlibDecoder::new(&data[9..])
        .read_to_end(&mut object)
        .is_err()
        || object.len() != r.objlen
    {
        return bit_flips(b, rng, patch);
    }
    let n = object.len();
    let mut changes = Vec::new();
    for _ in 0..rng.random_range(1..=4) {
        // Half of the edits land in the last quarter (a basket's entry
        // offsets) or the first 64 bytes (byte counts, versions).
        let at = match rng.random_range(0..4) {
            0 => rng.random_range(n - n / 4..n),
            1 => rng.random_range(0..n.min(64)),
            _ => rng.random_range(0..n),
        };
        if rng.random_bool(0.5) && at + 4 <= n {
            let old = be_i32(&object, at);
            let v = nasty_i32(rng, old);
            object[at..at + 4].copy_from_slice(&v.to_be_bytes());
            changes.push(format!("word at {at}: {old} -> {v}"));
        } else {
            let bit = rng.random_range(0..8);
            object[at] ^= 1 << bit;
            changes.push(format!("bit {bit} of byte {at}"));
        }
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&object).expect("in memory");
    let body = z.finish().expect("in memory");
    if 9 + body.len() > data.len() {
        return bit_flips(b, rng, patch);
    }
    let mut block = Vec::with_capacity(data.len());
    block.extend_from_slice(b"ZL\x08");
    block.extend_from_slice(&(body.len() as u32).to_le_bytes()[..3]);
    block.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
    block.extend_from_slice(&body);
    block.resize(data.len(), 0);
    patch.write(r.data().start, &block);
    patch.description.push(format!(
        "{what} `{}` at {}: object bytes changed ({}), recompressed in place",
        r.name,
        r.start,
        changes.join(", ")
    ));
}

fn bit_flips(b: &[u8], rng: &mut ChaCha8Rng, patch: &mut Patch) {
    let mut at_list = Vec::new();
    for _ in 0..rng.random_range(1..=8) {
        let at = rng.random_range(0..b.len());
        let byte = b[at] ^ (1 << rng.random_range(0..8));
        patch.write(at, &[byte]);
        at_list.push(at.to_string());
    }
    patch
        .description
        .push(format!("bit flips at {}", at_list.join(", ")));
}
