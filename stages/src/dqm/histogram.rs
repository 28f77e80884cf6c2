//! ROOT histograms decoded from an object's bytes, as a library: TH1, TH2
//! and TH3 of every storage type (C, S, I, F, D) and TProfile, the classes
//! DQM monitoring elements are written as.
//!
//! The streamers are ROOT 6's (the class versions ROOT 6 and uproot write):
//! TH1 v8 = TNamed, TAttLine, TAttFill, TAttMarker, fNcells, three TAxis
//! (v10: TNamed, TAttAxis, fNbins, fXmin, fXmax, fXbins, ...), fBarOffset,
//! fBarWidth, fEntries, fTsumw, fTsumw2, ..., fContour, fSumw2, then
//! members this reader skips; TH2 v5 and TH3 v6 add sums; TH1X/TH2X/TH3X
//! (v3/v4/v4) add the bin contents as a TArray; TProfile v7 is a TH1D plus
//! fBinEntries, fErrorMode, its y range and sums, and fBinSumw2. Every
//! class block carries its byte count, so what follows the members read
//! here (functions, labels, buffers) is skipped by it, never parsed. Any
//! other class or class version is refused by name: its layout is unknown
//! and guessing would give wrong numbers.

use super::root_file::Cursor;

pub type Error = String;
pub type Result<T> = std::result::Result<T, Error>;

/// ROOT's byte-count flag in a class header.
const BYTE_COUNT_MASK: u32 = 0x4000_0000;
/// The version bit of a member-wise streamed object (not read here).
const MEMBERWISE: u16 = 0x4000;
/// TObject's fBits flag: 2 more bytes (a process id) follow.
const IS_REFERENCED: u32 = 1 << 4;

/// One axis: `bins` bins from `low` to `high`; `edges` (bins + 1 values)
/// when the bins are not uniform.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub bins: usize,
    pub low: f64,
    pub high: f64,
    pub edges: Option<Vec<f64>>,
}

/// A histogram's contents and the statistics DQM uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// `TH1F`, `TH2D`, `TProfile`, ...
    pub class: String,
    /// Axes used: x, then y (2-D, 3-D), then z (3-D).
    pub axes: Vec<Axis>,
    /// Every bin including under- and overflow, x fastest (ROOT's global
    /// bin order): ∏(bins + 2) values. For a TProfile: Σ w·y per bin.
    pub contents: Vec<f64>,
    /// fEntries: values filled.
    pub entries: f64,
    /// fTsumw: sum of the weights inside the axes' ranges.
    pub sum_w: f64,
    /// fSumw2 per bin (Σ w², or Σ w·y² for a TProfile); empty when the
    /// histogram was filled without it.
    pub sumw2: Vec<f64>,
    /// TProfile: Σ w per bin (fBinEntries); `None` for other classes.
    pub bin_entries: Option<Vec<f64>>,
}

impl Histogram {
    pub fn dimension(&self) -> usize {
        self.axes.len()
    }
}

/// Storage of a class's bin contents.
#[derive(Debug, Clone, Copy)]
enum Storage {
    I8,
    I16,
    I32,
    F32,
    F64,
}

impl Storage {
    fn size(self) -> usize {
        match self {
            Storage::I8 => 1,
            Storage::I16 => 2,
            Storage::I32 | Storage::F32 => 4,
            Storage::F64 => 8,
        }
    }
}

/// (dimension, storage) of a supported histogram class; `None` otherwise.
fn class_layout(class: &str) -> Option<(usize, Storage)> {
    if class == "TProfile" {
        return Some((1, Storage::F64));
    }
    let rest = class.strip_prefix("TH")?;
    let (dim, kind) = rest.split_at_checked(1)?;
    let dim = match dim {
        "1" => 1,
        "2" => 2,
        "3" => 3,
        _ => return None,
    };
    let storage = match kind {
        "C" => Storage::I8,
        "S" => Storage::I16,
        "I" => Storage::I32,
        "F" => Storage::F32,
        "D" => Storage::F64,
        _ => return None,
    };
    Some((dim, storage))
}

/// Whether [`decode`] reads objects of `class`.
pub fn is_supported(class: &str) -> bool {
    class_layout(class).is_some()
}

/// The classes [`decode`] reads, for messages.
pub const SUPPORTED: &str = "TH1C/S/I/F/D, TH2C/S/I/F/D, TH3C/S/I/F/D, TProfile (ROOT 6 streamers)";

/// A class header: where its block ends (from the byte count); its version
/// is checked when read.
struct Header {
    end: usize,
}

fn header(c: &mut Cursor<'_>, class: &str, known: &[u16]) -> Result<Header> {
    let start = c.pos;
    let count = c.u32()?;
    if count & BYTE_COUNT_MASK == 0 {
        return Err(format!(
            "{class} at byte {start} has no byte count (a layout older than ROOT 3, not read)"
        ));
    }
    let end = start + 4 + (count & !BYTE_COUNT_MASK) as usize;
    if end > c.len() {
        return Err(format!(
            "{class} at byte {start} claims {} bytes, past the {}-byte object (truncated or corrupt)",
            end - start,
            c.len()
        ));
    }
    let version = c.u16()?;
    if version & MEMBERWISE != 0 {
        return Err(format!("{class} is streamed member-wise (not read)"));
    }
    if !known.contains(&version) {
        return Err(format!(
            "{class} streamer version {version} is not one this reader knows (knows {known:?}): the file was written by another ROOT release"
        ));
    }
    Ok(Header { end })
}

/// Skips a block with a byte count (an attribute class, a list, an axis's
/// remaining members), whatever its version.
fn skip_block(c: &mut Cursor<'_>, class: &str) -> Result<()> {
    let start = c.pos;
    let count = c.u32()?;
    if count & BYTE_COUNT_MASK == 0 {
        return Err(format!("{class} at byte {start} has no byte count"));
    }
    c.seek(start + 4 + (count & !BYTE_COUNT_MASK) as usize)
}

fn tobject(c: &mut Cursor<'_>) -> Result<()> {
    let version = c.i16()?;
    if version as u16 & MEMBERWISE != 0 {
        c.skip(4)?;
    }
    let _unique_id = c.u32()?;
    let bits = c.u32()?;
    if bits & IS_REFERENCED != 0 {
        c.skip(2)?;
    }
    Ok(())
}

fn tnamed(c: &mut Cursor<'_>) -> Result<String> {
    let h = header(c, "TNamed", &[1])?;
    tobject(c)?;
    let name = c.string()?;
    let _title = c.string()?;
    c.seek(h.end)?;
    Ok(name)
}

/// A TArray's length, checked against the bytes left before anything is
/// allocated.
fn array_len(c: &mut Cursor<'_>, what: &str, size: usize) -> Result<usize> {
    let n = c.i32()?;
    let n = usize::try_from(n).map_err(|_| format!("{what} has length {n}"))?;
    if n > c.remaining() / size {
        return Err(format!(
            "{what} claims {n} values, more than the {} bytes left (truncated or corrupt)",
            c.remaining()
        ));
    }
    Ok(n)
}

fn tarray(c: &mut Cursor<'_>, what: &str, storage: Storage) -> Result<Vec<f64>> {
    let n = array_len(c, what, storage.size())?;
    let bytes = c.bytes(n * storage.size())?;
    Ok(match storage {
        Storage::I8 => bytes.iter().map(|&b| f64::from(b as i8)).collect(),
        Storage::I16 => bytes
            .chunks_exact(2)
            .map(|b| f64::from(i16::from_be_bytes([b[0], b[1]])))
            .collect(),
        Storage::I32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Storage::F32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Storage::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_be_bytes(b.try_into().expect("8 bytes")))
            .collect(),
    })
}

fn taxis(c: &mut Cursor<'_>, which: char) -> Result<Axis> {
    let what = format!("TAxis f{which}axis");
    let h = header(c, &what, &[10])?;
    tnamed(c)?;
    skip_block(c, "TAttAxis")?;
    let bins = c.i32()?;
    let low = c.f64()?;
    let high = c.f64()?;
    let bins = usize::try_from(bins)
        .ok()
        .filter(|&b| b >= 1)
        .ok_or_else(|| format!("{what} has {bins} bins"))?;
    let edges = tarray(c, &format!("{what} fXbins"), Storage::F64)?;
    let edges = match edges.len() {
        0 => None,
        n if n == bins + 1 => Some(edges),
        n => {
            return Err(format!(
                "{what}: {n} bin edges for {bins} bins (expected {})",
                bins + 1
            ));
        }
    };
    c.seek(h.end)?;
    Ok(Axis {
        bins,
        low,
        high,
        edges,
    })
}

/// The TH1 members this reader uses.
struct Th1 {
    /// The axes used (x, then y and z by dimension).
    axes: Vec<Axis>,
    /// fNcells: bins with under/overflow.
    cells: usize,
    entries: f64,
    sum_w: f64,
    sumw2: Vec<f64>,
}

/// TH1's members; the cursor ends after the TH1 block.
fn th1(c: &mut Cursor<'_>, dim: usize) -> Result<Th1> {
    let h = header(c, "TH1", &[8])?;
    tnamed(c)?;
    for attribute in ["TAttLine", "TAttFill", "TAttMarker"] {
        skip_block(c, attribute)?;
    }
    let cells = c.i32()?;
    let axes = [taxis(c, 'X')?, taxis(c, 'Y')?, taxis(c, 'Z')?];
    let _bar_offset = c.i16()?;
    let _bar_width = c.i16()?;
    let entries = c.f64()?;
    let sum_w = c.f64()?;
    c.skip(6 * 8)?; // fTsumw2, fTsumwx, fTsumwx2, fMaximum, fMinimum, fNormFactor
    let _contour = tarray(c, "TH1 fContour", Storage::F64)?;
    let sumw2 = tarray(c, "TH1 fSumw2", Storage::F64)?;
    c.seek(h.end)?;
    let cells = usize::try_from(cells).map_err(|_| format!("TH1 has fNcells {cells}"))?;
    Ok(Th1 {
        axes: axes.into_iter().take(dim).collect(),
        cells,
        entries,
        sum_w,
        sumw2,
    })
}

/// Decodes a histogram of `class` from its object bytes (a key's object,
/// decompressed).
pub fn decode(class: &str, object: &[u8]) -> Result<Histogram> {
    let (dim, storage) = class_layout(class).ok_or_else(|| {
        format!("class {class} is not a histogram this reader knows ({SUPPORTED})")
    })?;
    let mut c = Cursor::new(object);
    let c = &mut c;
    let profile = class == "TProfile";
    let (top, top_versions): (&str, &[u16]) = match (profile, dim) {
        (true, _) => ("TProfile", &[7]),
        (false, 1) => (class, &[3]),
        (false, _) => (class, &[4]),
    };
    let outer = header(c, top, top_versions)?;
    // A TProfile wraps a TH1D; TH2x and TH3x wrap a TH2 or TH3 around TH1.
    let inner = if profile {
        Some(header(c, "TH1D", &[3])?)
    } else {
        None
    };
    let wrapper = match dim {
        2 => Some(header(c, "TH2", &[5])?),
        3 => Some(header(c, "TH3", &[6])?),
        _ => None,
    };
    let Th1 {
        axes,
        cells,
        entries,
        sum_w,
        sumw2,
    } = th1(c, dim)?;
    if let Some(w) = wrapper {
        // TH2's and TH3's moments (and TH3's TAtt3D): not used here.
        c.seek(w.end)?;
    }
    let contents = tarray(c, &format!("{class} contents"), storage)?;
    if let Some(h) = inner {
        c.seek(h.end)?;
    }
    let bin_entries = if profile {
        let e = tarray(c, "TProfile fBinEntries", Storage::F64)?;
        Some(e)
    } else {
        None
    };
    c.seek(outer.end)?;
    // Checked: corrupt axes can claim ~2^31 bins each.
    let expected = axes
        .iter()
        .try_fold(1usize, |n, a| n.checked_mul(a.bins + 2))
        .ok_or_else(|| {
            format!(
                "{class}: axes of {:?} bins overflow the number of cells",
                axes.iter().map(|a| a.bins).collect::<Vec<_>>()
            )
        })?;
    if cells != expected || contents.len() != expected {
        return Err(format!(
            "{class}: {} bin contents and fNcells {cells} for axes of {:?} bins (expected {expected} with under/overflow)",
            contents.len(),
            axes.iter().map(|a| a.bins).collect::<Vec<_>>()
        ));
    }
    if !sumw2.is_empty() && sumw2.len() != expected {
        return Err(format!(
            "{class}: fSumw2 has {} values for {expected} bins",
            sumw2.len()
        ));
    }
    if let Some(e) = &bin_entries
        && e.len() != expected
    {
        return Err(format!(
            "TProfile: fBinEntries has {} values for {expected} bins",
            e.len()
        ));
    }
    Ok(Histogram {
        class: class.to_string(),
        axes,
        contents,
        entries,
        sum_w,
        sumw2,
        bin_entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_named_by_dimension_and_storage() {
        for class in [
            "TH1F", "TH1D", "TH1I", "TH2F", "TH2D", "TH3F", "TH3D", "TProfile",
        ] {
            assert!(is_supported(class), "{class}");
        }
        for class in [
            "TH2Poly",
            "TGraph",
            "TProfile2D",
            "TH1",
            "TH4F",
            "TH1K",
            "TObjString",
        ] {
            assert!(!is_supported(class), "{class}");
            let err = decode(class, &[]).unwrap_err();
            assert!(
                err.contains(class) && err.contains("not a histogram"),
                "{err}"
            );
        }
    }

    #[test]
    fn truncated_and_unknown_versions_are_refused_by_name() {
        // A TH1F header claiming 1000 bytes in a 10-byte object.
        let mut bytes = (BYTE_COUNT_MASK | 1000).to_be_bytes().to_vec();
        bytes.extend(3u16.to_be_bytes());
        bytes.extend([0; 4]);
        let err = decode("TH1F", &bytes).unwrap_err();
        assert!(err.contains("past the 10-byte object"), "{err}");
        // A TH1F of version 9.
        let mut bytes = (BYTE_COUNT_MASK | 6).to_be_bytes().to_vec();
        bytes.extend(9u16.to_be_bytes());
        bytes.extend([0; 4]);
        let err = decode("TH1F", &bytes).unwrap_err();
        assert!(err.contains("TH1F streamer version 9"), "{err}");
        // An array length beyond the bytes left is refused before allocating.
        let mut c = Cursor::new(&[0x7f, 0xff, 0xff, 0xff, 0, 0]);
        let err = tarray(&mut c, "x", Storage::F64).unwrap_err();
        assert!(err.contains("claims 2147483647 values"), "{err}");
    }
}
