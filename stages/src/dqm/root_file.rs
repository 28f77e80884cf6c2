//! ROOT files of objects, as a library: the file header, the directory
//! tree (DQM files nest `DQMData/Run <n>/<Subsystem>/Run summary/...`),
//! every key with its class and path, and an object's bytes, decompressed.
//!
//! A small reader beside the vendored oxyroot rather than inside it:
//! oxyroot reads trees through a factory of its own types, opens only the
//! top directory, and many of its paths panic on corrupt input; this one
//! needs keys, directories and byte ranges only, checks every length
//! against the file before it allocates, and returns errors. It
//! decompresses with oxyroot's checked `rcompress` (vendor fix 6), so both
//! readers share one implementation of ZLIB, LZMA, LZ4 and ZSTD records.
//!
//! Layout (ROOT's "Format of the root directory", "TDirectory", "TKey" and
//! "KeysList" records): big-endian; the header holds fBEGIN and
//! fNbytesName; the top directory record sits at fBEGIN + fNbytesName; a
//! directory record points at its keys list (a key header, a count, then
//! one key header per object); a key of class `TDirectory(File)` holds a
//! subdirectory's record; a key version above 1000, or a directory version
//! above 1000, means 64-bit seeks.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A failure reading the file's structure, said in a sentence (the caller
/// names the file).
pub type Error = String;
pub type Result<T> = std::result::Result<T, Error>;

/// The largest object or keys list read (ROOT's own limit is 1 GiB).
const MAX_RECORD: u64 = 1 << 30;

/// The deepest directory nesting followed (a loop in a corrupt file ends here).
const MAX_DEPTH: usize = 64;

/// An open ROOT file.
pub struct RootFile {
    path: PathBuf,
    file: File,
    size: u64,
    /// The top directory's keys list: (seek, bytes).
    top_keys: (u64, u64),
}

/// One object of the file (directories are walked, not listed).
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// Directories and name, `/`-separated (`DQMData/Run 1/Hcal/...`).
    pub path: String,
    /// The object's class (`TH1F`, ...).
    pub class: String,
    /// ROOT's cycle: a name written again gets a higher one.
    pub cycle: i16,
    seek: u64,
    n_bytes: u64,
    obj_len: u64,
    key_len: u64,
}

/// Big-endian reads from a slice, each checked against its end.
pub struct Cursor<'a> {
    data: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes left after the current position.
    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(format!(
                "needs {n} bytes at byte {} of a {}-byte record (truncated or corrupt)",
                self.pos,
                self.data.len()
            ));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.bytes(N)?.try_into().expect("N bytes"))
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    pub fn skip(&mut self, n: usize) -> Result<()> {
        self.bytes(n).map(|_| ())
    }

    /// Moves to `pos` (forward or back), within the record.
    pub fn seek(&mut self, pos: usize) -> Result<()> {
        if pos > self.data.len() {
            return Err(format!(
                "a length points to byte {pos}, past the {}-byte record",
                self.data.len()
            ));
        }
        self.pos = pos;
        Ok(())
    }

    /// A TString: one length byte (255: a 4-byte length follows), then the bytes.
    pub fn string(&mut self) -> Result<String> {
        let short = self.u8()?;
        let n = if short == 255 {
            let long = self.i32()?;
            usize::try_from(long).map_err(|_| format!("a string of length {long}"))?
        } else {
            short as usize
        };
        Ok(String::from_utf8_lossy(self.bytes(n)?).into_owned())
    }

    /// A 32-bit seek (as i32) or, with `wide`, a 64-bit one; never negative.
    fn seek_value(&mut self, wide: bool) -> Result<u64> {
        let v = if wide {
            self.i64()?
        } else {
            i64::from(self.i32()?)
        };
        u64::try_from(v).map_err(|_| format!("a negative file position ({v})"))
    }
}

/// A key header at the cursor.
fn read_key(c: &mut Cursor<'_>, dir: &str) -> Result<Key> {
    let n_bytes = c.i32()?;
    let version = c.i16()?;
    let obj_len = c.i32()?;
    let _datime = c.u32()?;
    let key_len = c.i16()?;
    let cycle = c.i16()?;
    let wide = version > 1000;
    let seek = c.seek_value(wide)?;
    let _seek_parent = c.seek_value(wide)?;
    let class = c.string()?;
    let name = c.string()?;
    let _title = c.string()?;
    let (Ok(n_bytes), Ok(obj_len), Ok(key_len)) = (
        u64::try_from(n_bytes),
        u64::try_from(obj_len),
        u64::try_from(key_len),
    ) else {
        return Err(format!(
            "key `{name}` has negative lengths (Nbytes {n_bytes}, ObjLen {obj_len}, KeyLen {key_len})"
        ));
    };
    if key_len > n_bytes || obj_len > MAX_RECORD {
        return Err(format!(
            "key `{name}` has inconsistent lengths (Nbytes {n_bytes}, KeyLen {key_len}, ObjLen {obj_len})"
        ));
    }
    let path = if dir.is_empty() {
        name
    } else {
        format!("{dir}/{name}")
    };
    Ok(Key {
        path,
        class,
        cycle,
        seek,
        n_bytes,
        obj_len,
        key_len,
    })
}

/// A directory record at the cursor: (seek, bytes) of its keys list.
fn read_directory(c: &mut Cursor<'_>) -> Result<(u64, u64)> {
    let version = c.i16()?;
    let _ctime = c.u32()?;
    let _mtime = c.u32()?;
    let n_bytes_keys = c.i32()?;
    let _n_bytes_name = c.i32()?;
    let wide = version > 1000;
    let _seek_dir = c.seek_value(wide)?;
    let _seek_parent = c.seek_value(wide)?;
    let seek_keys = c.seek_value(wide)?;
    let n_bytes_keys = u64::try_from(n_bytes_keys)
        .map_err(|_| format!("a directory's keys list has {n_bytes_keys} bytes"))?;
    Ok((seek_keys, n_bytes_keys))
}

fn is_directory(class: &str) -> bool {
    matches!(class, "TDirectory" | "TDirectoryFile")
}

impl RootFile {
    /// Opens `path` and reads its header and top directory.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let size = file.metadata().map_err(|e| e.to_string())?.len();
        let mut f = Self {
            path: path.to_path_buf(),
            file,
            size,
            top_keys: (0, 0),
        };
        let head = f.read_at(0, 64.min(size))?;
        let mut c = Cursor::new(&head);
        if c.bytes(4).ok() != Some(b"root".as_slice()) {
            return Err("not a ROOT file (it does not start with `root`)".into());
        }
        let version = c.i32()?;
        let begin = c.i32()?;
        let wide = version >= 1_000_000;
        let end = c.seek_value(wide)?;
        if end > size {
            return Err(format!(
                "the file is truncated: its header says {end} bytes, it has {size}"
            ));
        }
        let _seek_free = c.seek_value(wide)?;
        let _n_bytes_free = c.i32()?;
        let _n_free = c.i32()?;
        let n_bytes_name = c.i32()?;
        let (Ok(begin), Ok(n_bytes_name)) = (u64::try_from(begin), u64::try_from(n_bytes_name))
        else {
            return Err(format!(
                "corrupt header (fBEGIN {begin}, fNbytesName {n_bytes_name})"
            ));
        };
        // The top directory record, with room for 64-bit seeks and its UUID.
        let at = begin + n_bytes_name;
        let record = f.read_at(at, 64.min(size.saturating_sub(at)))?;
        f.top_keys = read_directory(&mut Cursor::new(&record))?;
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `len` bytes at `at`, refused before allocating when past the end.
    fn read_at(&self, at: u64, len: u64) -> Result<Vec<u8>> {
        if at.checked_add(len).is_none_or(|end| end > self.size) || len > MAX_RECORD {
            return Err(format!(
                "a record of {len} bytes at byte {at} lies past the end of the {}-byte file (truncated or corrupt)",
                self.size
            ));
        }
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, at)
            .map_err(|e| format!("reading {len} bytes at byte {at}: {e}"))?;
        Ok(buf)
    }

    /// Every object of the file with its directory path, subdirectories
    /// walked; of several cycles of one name, the highest (ROOT's default).
    /// In directory order.
    pub fn keys(&self) -> Result<Vec<Key>> {
        let mut out: Vec<Key> = Vec::new();
        self.walk(self.top_keys, "", 0, &mut out)?;
        let mut best: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, k) in out.iter().enumerate() {
            let e = best.entry(&k.path).or_insert(i);
            if out[*e].cycle < k.cycle {
                *e = i;
            }
        }
        let keep: std::collections::HashSet<usize> = best.into_values().collect();
        Ok(out
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, k)| k)
            .collect())
    }

    fn walk(
        &self,
        (seek, len): (u64, u64),
        dir: &str,
        depth: usize,
        out: &mut Vec<Key>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "directories nest deeper than {MAX_DEPTH} at `{dir}`"
            ));
        }
        if len == 0 {
            return Ok(()); // an empty directory has no keys list
        }
        let list = self.read_at(seek, len)?;
        let mut c = Cursor::new(&list);
        read_key(&mut c, dir)?; // the keys list's own key
        let n = c.i32()?;
        // Every key header takes at least 26 bytes: a count beyond that is corrupt.
        if n < 0 || n as usize > c.remaining() / 26 {
            return Err(format!(
                "directory `{dir}` claims {n} keys in a {len}-byte list"
            ));
        }
        for _ in 0..n {
            let key = read_key(&mut c, dir)?;
            if is_directory(&key.class) {
                let record = self.object(&key)?;
                let keys = read_directory(&mut Cursor::new(&record))
                    .map_err(|e| format!("directory `{}`: {e}", key.path))?;
                self.walk(keys, &key.path, depth + 1, out)?;
            } else {
                out.push(key);
            }
        }
        Ok(())
    }

    /// The object of `key`, decompressed.
    pub fn object(&self, key: &Key) -> Result<Vec<u8>> {
        let stored = key.n_bytes - key.key_len;
        let data = self.read_at(key.seek + key.key_len, stored)?;
        if key.obj_len <= stored {
            return Ok(data);
        }
        let fail = |e: oxyroot::rcompress::Error| {
            let oxyroot::rcompress::Error::Io(e) = e;
            format!("`{}`: {e}", key.path)
        };
        oxyroot::rcompress::check_chunks(key.obj_len as usize, &data).map_err(fail)?;
        let mut out = vec![0u8; key.obj_len as usize];
        oxyroot::rcompress::decompress(&mut out, &data).map_err(fail)?;
        Ok(out)
    }
}
