//! Minutiae templates (ISO/IEC 19794-2 style) and their compact binary form.
//!
//! A template is the feature data of one finger capture: the image geometry
//! and up to [`MAX_MINUTIAE`] minutiae. It is a secret (R-BIO-5): the
//! [`Template`] type zeroizes its minutiae on drop, its `Debug` shows only the
//! image geometry and the minutiae count, and [`Template::encode`] returns a
//! zeroizing buffer.
//!
//! # Encoding (version 1)
//!
//! All integers big-endian. The minutia record is the 6-byte record of
//! ISO/IEC 19794-2:2005 §7.4.1.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `CAMT` |
//! | 4 | 1 | version, `1` |
//! | 5 | 1 | flags, must be `0` |
//! | 6 | 2 | image width in pixels, `1..=MAX_IMAGE_DIM` |
//! | 8 | 2 | image height in pixels, `1..=MAX_IMAGE_DIM` |
//! | 10 | 2 | resolution in dots per inch, `MIN_RESOLUTION_DPI..=MAX_RESOLUTION_DPI` |
//! | 12 | 1 | number of minutiae `n`, `0..=MAX_MINUTIAE` |
//! | 13 | 6·n | minutiae |
//!
//! Each minutia: `type (2 bits) | x (14 bits)`, `reserved (2 bits, 0) | y (14
//! bits)`, angle (1 byte), quality (1 byte). Type codes as in ISO 19794-2:
//! `00` other, `01` ridge ending, `10` bifurcation (`11` is rejected). `x` must
//! be below the width, `y` below the height, quality at most 100.
//!
//! Decoding is strict: a wrong length, trailing bytes, a non-zero reserved
//! field or any out-of-range value is a typed [`TemplateError`].

use core::fmt;

use zeroize::{DefaultIsZeroes, Zeroize, ZeroizeOnDrop, Zeroizing};

/// Most minutiae a template may hold.
pub const MAX_MINUTIAE: usize = 128;
/// Largest image side in pixels (about 4 inches at 500 dpi).
pub const MAX_IMAGE_DIM: u16 = 2048;
/// Lowest accepted capture resolution.
pub const MIN_RESOLUTION_DPI: u16 = 250;
/// Highest accepted capture resolution.
pub const MAX_RESOLUTION_DPI: u16 = 1000;
/// Highest minutia quality (ISO 19794-2: 0..=100).
pub const MAX_QUALITY: u8 = 100;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 13;
/// Length of one minutia record.
pub const MINUTIA_LEN: usize = 6;
/// Longest valid encoding.
pub const MAX_ENCODED_LEN: usize = HEADER_LEN + MAX_MINUTIAE * MINUTIA_LEN;

const MAGIC: [u8; 4] = *b"CAMT";
const VERSION: u8 = 1;

/// The kind of a minutia (ISO 19794-2 type codes).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub enum MinutiaKind {
    /// Neither ending nor bifurcation, or unknown (`00`).
    #[default]
    Other,
    /// A ridge ending (`01`).
    RidgeEnding,
    /// A ridge bifurcation (`10`).
    Bifurcation,
}

impl MinutiaKind {
    fn code(self) -> u16 {
        match self {
            MinutiaKind::Other => 0,
            MinutiaKind::RidgeEnding => 1,
            MinutiaKind::Bifurcation => 2,
        }
    }

    fn from_code(code: u16) -> Option<Self> {
        match code {
            0 => Some(MinutiaKind::Other),
            1 => Some(MinutiaKind::RidgeEnding),
            2 => Some(MinutiaKind::Bifurcation),
            _ => None,
        }
    }
}

/// Feature data never appears in `Debug` output.
impl fmt::Debug for MinutiaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MinutiaKind(..)")
    }
}

/// One minutia. Coordinates are pixels from the top-left corner (x to the
/// right, y down); the angle is in units of 360/256 degrees, counter-clockwise
/// from the x axis as in ISO 19794-2.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Minutia {
    /// Column, below the image width.
    pub x: u16,
    /// Row, below the image height.
    pub y: u16,
    /// Direction in units of 360/256 degrees.
    pub angle: u8,
    /// Ending, bifurcation or other.
    pub kind: MinutiaKind,
    /// Quality 0..=100.
    pub quality: u8,
}

// `Default` is the all-zero minutia (`Other` is code 0), so volatile writes
// of the default value are a proper wipe.
impl DefaultIsZeroes for Minutia {}

/// Feature data never appears in `Debug` output.
impl fmt::Debug for Minutia {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Minutia(..)")
    }
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The encoding is longer than any valid template.
    #[error("template encoding is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// Bytes given.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The encoding ends early.
    #[error("template encoding is truncated")]
    Truncated,
    /// Bytes after the last minutia.
    #[error("template encoding has trailing bytes")]
    TrailingBytes,
    /// Not a ClinAuth template.
    #[error("template encoding has a wrong magic")]
    BadMagic,
    /// A format version this build does not know.
    #[error("template format version {0} is not supported")]
    UnsupportedVersion(u8),
    /// A flag or reserved field is not zero.
    #[error("template has non-zero reserved bits")]
    ReservedBits,
    /// Width or height is zero or above [`MAX_IMAGE_DIM`].
    #[error("template image size is out of range")]
    BadImageSize,
    /// Resolution outside the accepted range.
    #[error("template resolution is out of range")]
    BadResolution,
    /// More than [`MAX_MINUTIAE`] minutiae.
    #[error("template has {0} minutiae, more than the limit")]
    TooManyMinutiae(usize),
    /// A minutia lies outside the image.
    #[error("minutia {index} lies outside the image")]
    MinutiaOutOfImage {
        /// Position in the list.
        index: usize,
    },
    /// A minutia has type code `11`.
    #[error("minutia {index} has an invalid type")]
    BadMinutiaType {
        /// Position in the list.
        index: usize,
    },
    /// A minutia quality above 100.
    #[error("minutia {index} has a quality above 100")]
    BadQuality {
        /// Position in the list.
        index: usize,
    },
}

/// A minutiae template: secret feature data, zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    width: u16,
    height: u16,
    resolution_dpi: u16,
    minutiae: Vec<Minutia>,
}

impl Template {
    /// A template after checking every limit. The vector is wiped if it is
    /// refused.
    pub fn new(
        width: u16,
        height: u16,
        resolution_dpi: u16,
        minutiae: Vec<Minutia>,
    ) -> Result<Self, TemplateError> {
        // Own the vector first so it is zeroized on every error path.
        let t = Template {
            width,
            height,
            resolution_dpi,
            minutiae,
        };
        t.check()?;
        Ok(t)
    }

    fn check(&self) -> Result<(), TemplateError> {
        if self.width == 0
            || self.height == 0
            || self.width > MAX_IMAGE_DIM
            || self.height > MAX_IMAGE_DIM
        {
            return Err(TemplateError::BadImageSize);
        }
        if !(MIN_RESOLUTION_DPI..=MAX_RESOLUTION_DPI).contains(&self.resolution_dpi) {
            return Err(TemplateError::BadResolution);
        }
        if self.minutiae.len() > MAX_MINUTIAE {
            return Err(TemplateError::TooManyMinutiae(self.minutiae.len()));
        }
        for (index, m) in self.minutiae.iter().enumerate() {
            if m.x >= self.width || m.y >= self.height {
                return Err(TemplateError::MinutiaOutOfImage { index });
            }
            if m.quality > MAX_QUALITY {
                return Err(TemplateError::BadQuality { index });
            }
        }
        Ok(())
    }

    /// Image width in pixels.
    pub fn width(&self) -> u16 {
        self.width
    }

    /// Image height in pixels.
    pub fn height(&self) -> u16 {
        self.height
    }

    /// Capture resolution in dots per inch.
    pub fn resolution_dpi(&self) -> u16 {
        self.resolution_dpi
    }

    /// The minutiae (secret; do not copy them out into non-zeroizing storage).
    pub fn minutiae(&self) -> &[Minutia] {
        &self.minutiae
    }

    /// Number of minutiae.
    pub fn len(&self) -> usize {
        self.minutiae.len()
    }

    /// No minutiae at all.
    pub fn is_empty(&self) -> bool {
        self.minutiae.is_empty()
    }

    /// The binary form (see the module docs), in a zeroizing buffer.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            HEADER_LEN + self.minutiae.len() * MINUTIA_LEN,
        ));
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(0);
        out.extend_from_slice(&self.width.to_be_bytes());
        out.extend_from_slice(&self.height.to_be_bytes());
        out.extend_from_slice(&self.resolution_dpi.to_be_bytes());
        // `check` holds for every `Template`, so the count fits in a byte.
        out.push(u8::try_from(self.minutiae.len()).unwrap_or(u8::MAX));
        for m in &self.minutiae {
            let x = (m.kind.code() << 14) | (m.x & 0x3fff);
            out.extend_from_slice(&x.to_be_bytes());
            out.extend_from_slice(&(m.y & 0x3fff).to_be_bytes());
            out.push(m.angle);
            out.push(m.quality);
        }
        out
    }

    /// Parses the binary form strictly (see the module docs).
    pub fn decode(bytes: &[u8]) -> Result<Self, TemplateError> {
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(TemplateError::TooLong {
                len: bytes.len(),
                max: MAX_ENCODED_LEN,
            });
        }
        let (header, mut rest) = bytes
            .split_at_checked(HEADER_LEN)
            .ok_or(TemplateError::Truncated)?;
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(header);
        let [m0, m1, m2, m3, version, flags, w0, w1, h0, h1, r0, r1, count] = h;
        if [m0, m1, m2, m3] != MAGIC {
            return Err(TemplateError::BadMagic);
        }
        if version != VERSION {
            return Err(TemplateError::UnsupportedVersion(version));
        }
        if flags != 0 {
            return Err(TemplateError::ReservedBits);
        }
        let width = u16::from_be_bytes([w0, w1]);
        let height = u16::from_be_bytes([h0, h1]);
        let resolution_dpi = u16::from_be_bytes([r0, r1]);
        let count = usize::from(count);
        if count > MAX_MINUTIAE {
            return Err(TemplateError::TooManyMinutiae(count));
        }
        let mut t = Template {
            width,
            height,
            resolution_dpi,
            minutiae: Vec::with_capacity(count),
        };
        for index in 0..count {
            let (rec, tail) = rest
                .split_first_chunk::<MINUTIA_LEN>()
                .ok_or(TemplateError::Truncated)?;
            rest = tail;
            let [x0, x1, y0, y1, angle, quality] = *rec;
            let xw = u16::from_be_bytes([x0, x1]);
            let yw = u16::from_be_bytes([y0, y1]);
            if yw >> 14 != 0 {
                return Err(TemplateError::ReservedBits);
            }
            let kind =
                MinutiaKind::from_code(xw >> 14).ok_or(TemplateError::BadMinutiaType { index })?;
            t.minutiae.push(Minutia {
                x: xw & 0x3fff,
                y: yw,
                angle,
                kind,
                quality,
            });
        }
        if !rest.is_empty() {
            return Err(TemplateError::TrailingBytes);
        }
        t.check()?;
        Ok(t)
    }

    /// A template built by this crate's own code (synthetic captures): values
    /// are clamped into range instead of refused.
    pub(crate) fn clamped(
        width: u16,
        height: u16,
        resolution_dpi: u16,
        mut minutiae: Vec<Minutia>,
    ) -> Self {
        let width = width.clamp(1, MAX_IMAGE_DIM);
        let height = height.clamp(1, MAX_IMAGE_DIM);
        minutiae.truncate(MAX_MINUTIAE);
        for m in &mut minutiae {
            m.x = m.x.min(width - 1);
            m.y = m.y.min(height - 1);
            m.quality = m.quality.min(MAX_QUALITY);
        }
        Template {
            width,
            height,
            resolution_dpi: resolution_dpi.clamp(MIN_RESOLUTION_DPI, MAX_RESOLUTION_DPI),
            minutiae,
        }
    }
}

impl Zeroize for Template {
    fn zeroize(&mut self) {
        self.minutiae.zeroize();
        self.width = 0;
        self.height = 0;
        self.resolution_dpi = 0;
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        self.minutiae.zeroize();
    }
}

impl ZeroizeOnDrop for Template {}

/// Shows the geometry and the count only, never a minutia.
impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Template")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("resolution_dpi", &self.resolution_dpi)
            .field("minutiae", &self.minutiae.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Template {
        let minutiae = vec![
            Minutia {
                x: 0,
                y: 0,
                angle: 0,
                kind: MinutiaKind::Other,
                quality: 0,
            },
            Minutia {
                x: 399,
                y: 499,
                angle: 255,
                kind: MinutiaKind::Bifurcation,
                quality: 100,
            },
            Minutia {
                x: 123,
                y: 321,
                angle: 77,
                kind: MinutiaKind::RidgeEnding,
                quality: 55,
            },
        ];
        Template::new(400, 500, 500, minutiae).unwrap()
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let bytes = t.encode();
        assert_eq!(bytes.len(), HEADER_LEN + 3 * MINUTIA_LEN);
        assert_eq!(Template::decode(&bytes).unwrap(), t);
    }

    #[test]
    fn round_trip_empty_and_full() {
        let e = Template::new(1, 1, 250, Vec::new()).unwrap();
        assert_eq!(Template::decode(&e.encode()).unwrap(), e);
        let full: Vec<Minutia> = (0..MAX_MINUTIAE)
            .map(|i| Minutia {
                x: i as u16 * 15,
                y: 2047 - i as u16,
                angle: i as u8,
                kind: MinutiaKind::RidgeEnding,
                quality: (i % 101) as u8,
            })
            .collect();
        let f = Template::new(2048, 2048, 1000, full).unwrap();
        let bytes = f.encode();
        assert_eq!(bytes.len(), MAX_ENCODED_LEN);
        assert_eq!(Template::decode(&bytes).unwrap(), f);
    }

    #[test]
    fn r_bio_5_debug_shows_no_feature_data() {
        let t = sample();
        let s = format!("{t:?} {:?}", t.minutiae());
        assert!(s.contains("minutiae: 3"));
        for needle in ["123", "321", "77", "55", "399", "499"] {
            assert!(!s.contains(needle), "{needle} in {s}");
        }
    }

    #[test]
    fn r_bio_5_template_wiped_by_zeroize() {
        let mut t = sample();
        t.zeroize();
        assert!(t.minutiae().is_empty());
        assert_eq!(t.width(), 0);
    }

    #[test]
    fn new_rejects_out_of_range() {
        let m = |x, y, q| Minutia {
            x,
            y,
            angle: 0,
            kind: MinutiaKind::Other,
            quality: q,
        };
        assert_eq!(
            Template::new(0, 10, 500, vec![]),
            Err(TemplateError::BadImageSize)
        );
        assert_eq!(
            Template::new(2049, 10, 500, vec![]),
            Err(TemplateError::BadImageSize)
        );
        assert_eq!(
            Template::new(10, 10, 200, vec![]),
            Err(TemplateError::BadResolution)
        );
        assert_eq!(
            Template::new(10, 10, 500, vec![m(10, 0, 0)]),
            Err(TemplateError::MinutiaOutOfImage { index: 0 })
        );
        assert_eq!(
            Template::new(10, 10, 500, vec![m(0, 0, 0), m(0, 10, 0)]),
            Err(TemplateError::MinutiaOutOfImage { index: 1 })
        );
        assert_eq!(
            Template::new(10, 10, 500, vec![m(0, 0, 101)]),
            Err(TemplateError::BadQuality { index: 0 })
        );
        assert_eq!(
            Template::new(10, 10, 500, vec![m(0, 0, 0); MAX_MINUTIAE + 1]),
            Err(TemplateError::TooManyMinutiae(MAX_MINUTIAE + 1))
        );
    }

    #[test]
    fn decode_rejects_malformed() {
        let good = sample().encode();
        let with = |i: usize, v: u8| {
            let mut b = good.to_vec();
            b[i] = v;
            Template::decode(&b)
        };
        assert_eq!(with(0, b'X'), Err(TemplateError::BadMagic));
        assert_eq!(with(4, 2), Err(TemplateError::UnsupportedVersion(2)));
        assert_eq!(with(5, 1), Err(TemplateError::ReservedBits));
        assert_eq!(with(6, 0x10), Err(TemplateError::BadImageSize)); // width 4096+
        assert_eq!(with(10, 0), Err(TemplateError::BadResolution)); // 244 dpi
        assert_eq!(with(12, 4), Err(TemplateError::Truncated));
        assert_eq!(with(12, 2), Err(TemplateError::TrailingBytes));
        assert_eq!(with(12, 200), Err(TemplateError::TooManyMinutiae(200)));
        // Minutia 0: type 11.
        assert_eq!(
            with(13, 0xc0),
            Err(TemplateError::BadMinutiaType { index: 0 })
        );
        // Minutia 0: reserved bits of y.
        assert_eq!(with(15, 0x40), Err(TemplateError::ReservedBits));
        // Minutia 0: x = 0x1000 > width.
        assert_eq!(
            with(13, 0x10),
            Err(TemplateError::MinutiaOutOfImage { index: 0 })
        );
        // Minutia 2: quality 101.
        assert_eq!(
            with(HEADER_LEN + 2 * MINUTIA_LEN + 5, 101),
            Err(TemplateError::BadQuality { index: 2 })
        );
        let mut long = good.to_vec();
        long.push(0);
        assert_eq!(Template::decode(&long), Err(TemplateError::TrailingBytes));
        assert_eq!(
            Template::decode(&good[..good.len() - 1]),
            Err(TemplateError::Truncated)
        );
        assert_eq!(Template::decode(&[]), Err(TemplateError::Truncated));
        let huge = vec![0u8; MAX_ENCODED_LEN + 1];
        assert!(matches!(
            Template::decode(&huge),
            Err(TemplateError::TooLong { .. })
        ));
    }

    fn arb_minutia(w: u16, h: u16) -> impl Strategy<Value = Minutia> {
        (0..w, 0..h, any::<u8>(), 0u8..3, 0u8..=100).prop_map(|(x, y, angle, k, quality)| Minutia {
            x,
            y,
            angle,
            kind: match k {
                0 => MinutiaKind::Other,
                1 => MinutiaKind::RidgeEnding,
                _ => MinutiaKind::Bifurcation,
            },
            quality,
        })
    }

    fn arb_template() -> impl Strategy<Value = Template> {
        (1u16..=MAX_IMAGE_DIM, 1u16..=MAX_IMAGE_DIM, 250u16..=1000)
            .prop_flat_map(|(w, h, dpi)| {
                (
                    Just(w),
                    Just(h),
                    Just(dpi),
                    proptest::collection::vec(arb_minutia(w, h), 0..=MAX_MINUTIAE),
                )
            })
            .prop_map(|(w, h, dpi, m)| Template::new(w, h, dpi, m).unwrap())
    }

    proptest! {
        #[test]
        fn decode_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1000)) {
            let _ = Template::decode(&bytes);
        }

        #[test]
        fn decode_mutated_valid_never_panics(t in arb_template(), i in any::<usize>(), v in any::<u8>()) {
            let mut b = t.encode().to_vec();
            let i = i % b.len();
            b[i] = v;
            if let Ok(d) = Template::decode(&b) {
                prop_assert_eq!(&*d.encode(), &b[..]);
            }
        }

        #[test]
        fn round_trip_any(t in arb_template()) {
            prop_assert_eq!(Template::decode(&t.encode()).unwrap(), t);
        }
    }
}
