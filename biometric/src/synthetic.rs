//! Synthetic fingers for tests, the reader emulator and the FMR/FNMR
//! measurement (R-BIO-4).
//!
//! This is a statistical model of minutiae, not an image synthesiser. It is
//! deterministic: a finger is a `u64` seed, a capture is the finger plus a
//! capture seed, and the same seeds give the same template on every
//! platform-independent run (only `f64` arithmetic and a SplitMix64 PRNG are
//! used).
//!
//! # The model
//!
//! **Finger (master minutiae).** Coordinates are in a 400 × 500 pixel frame
//! at 500 dpi (a 20 × 25 mm optical sensor area):
//!
//! * a pattern class is drawn — loop (65 %), whorl (30 %) or arch (5 %) —
//!   with singular points (cores and deltas) placed at random near their
//!   usual positions; the ridge orientation field is the zero-pole model of
//!   Sherlock and Monro (1993): `O(z) = O₀ + ½·(Σ arg(z − core) − Σ arg(z −
//!   delta))`, and an arch is a smooth field without singular points. Every
//!   finger therefore has a plausible, smoothly varying orientation field,
//!   and different fingers of the same class have *similar* fields, which
//!   makes impostor comparisons realistically hard (minutia directions are
//!   not independent uniform angles);
//! * 30–60 minutiae are placed by rejection sampling inside an ellipse
//!   (semi-axes 170 × 230 px) with a minimum spacing of 18 px (about two
//!   ridge periods at 500 dpi);
//! * each minutia's direction is the local ridge orientation, in one of its
//!   two senses at random, plus N(0, 6°); the type is a ridge ending (55 %),
//!   a bifurcation (40 %) or other (5 %); the quality is uniform in 40..=100.
//!
//! **Capture.** Each capture (see [`CaptureModel`]; defaults in parentheses):
//!
//! * places the finger with a global rotation uniform in ±`max_rotation_deg`
//!   (default 20°) and a translation uniform in ±`max_translation_px` (default 40 px) on each
//!   axis, about the image centre;
//! * applies a pressure distortion: a scale `1 ± distortion` (default 3 %) along a
//!   random axis;
//! * jitters every minutia's position by N(0, `position_sigma_px` (default 4 px)) per
//!   axis and its direction by N(0, `angle_sigma_deg` (default 6°));
//! * loses minutiae: those that fall outside the sensor are gone (partial
//!   placement), each remaining one is dropped with a per-capture probability
//!   uniform in `drop_min..drop_max` (default 10 %..30 %), plus up to
//!   `edge_extra_drop` (default 40 %) more, rising linearly inside the
//!   `edge_margin_px` (default 30 px) band along the sensor border;
//! * flips ending ↔ bifurcation with probability `kind_flip` (default 10 %);
//! * perturbs quality by N(0, `quality_sigma` (default 10)), lower near the border;
//! * adds 0..=`max_spurious` (default 8) spurious minutiae uniformly over the image
//!   with random direction and quality 10..=50;
//! * shuffles the list (extractors give no particular order).
//!
//! The numbers follow the usual descriptions of minutiae extraction error
//! (e.g. Maltoni et al., *Handbook of Fingerprint Recognition*, ch. 4 and 9);
//! real sensors and extractors differ, so the FMR measured on this model is a
//! check of the matcher's logic and threshold, not a certification of a
//! particular reader.

use core::f64::consts::{PI, TAU};
use core::fmt;

use zeroize::{Zeroize, Zeroizing};

use crate::template::{Minutia, MinutiaKind, Template, MAX_MINUTIAE};

/// SplitMix64 (Steele, Lea and Flood 2014): a tiny, fast, well-mixed
/// deterministic generator. Not for keys — for synthetic data only.
#[derive(Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // 53 random bits.
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `lo..=hi` (`lo` if `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo + 1;
        lo + self.next_u64() % span
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }
}

/// Sensor frame of the model.
pub const SENSOR_WIDTH: u16 = 400;
/// Sensor frame of the model.
pub const SENSOR_HEIGHT: u16 = 500;
/// Resolution of the model.
pub const SENSOR_DPI: u16 = 500;

/// How captures vary (see the module docs). `Default` is the realistic model
/// used for the measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureModel {
    /// Global rotation, uniform in ± this many degrees.
    pub max_rotation_deg: f64,
    /// Translation, uniform in ± this many pixels per axis.
    pub max_translation_px: f64,
    /// Relative scale change along a random axis.
    pub distortion: f64,
    /// Per-minutia position noise (standard deviation, pixels per axis).
    pub position_sigma_px: f64,
    /// Per-minutia direction noise (standard deviation, degrees).
    pub angle_sigma_deg: f64,
    /// Lower bound of the per-capture drop probability.
    pub drop_min: f64,
    /// Upper bound of the per-capture drop probability.
    pub drop_max: f64,
    /// Width of the border band with extra drops.
    pub edge_margin_px: f64,
    /// Extra drop probability at the very border.
    pub edge_extra_drop: f64,
    /// Most spurious minutiae added.
    pub max_spurious: u32,
    /// Quality noise (standard deviation).
    pub quality_sigma: f64,
    /// Probability that ending and bifurcation swap.
    pub kind_flip: f64,
}

impl Default for CaptureModel {
    fn default() -> Self {
        CaptureModel {
            max_rotation_deg: 20.0,
            max_translation_px: 40.0,
            distortion: 0.03,
            position_sigma_px: 4.0,
            angle_sigma_deg: 6.0,
            drop_min: 0.10,
            drop_max: 0.30,
            edge_margin_px: 30.0,
            edge_extra_drop: 0.40,
            max_spurious: 8,
            quality_sigma: 10.0,
            kind_flip: 0.10,
        }
    }
}

impl CaptureModel {
    /// No variation at all: every capture is the master set (for tests).
    pub fn exact() -> Self {
        CaptureModel {
            max_rotation_deg: 0.0,
            max_translation_px: 0.0,
            distortion: 0.0,
            position_sigma_px: 0.0,
            angle_sigma_deg: 0.0,
            drop_min: 0.0,
            drop_max: 0.0,
            edge_margin_px: 0.0,
            edge_extra_drop: 0.0,
            max_spurious: 0,
            quality_sigma: 0.0,
            kind_flip: 0.0,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct MasterMinutia {
    x: f64,
    y: f64,
    /// Direction in the pixel frame (radians, x right, y down).
    theta: f64,
    kind: MinutiaKind,
    quality: f64,
}

impl zeroize::DefaultIsZeroes for MasterMinutia {}

/// A synthetic finger: its master minutiae, from a seed.
#[derive(Clone)]
pub struct SyntheticFinger {
    seed: u64,
    master: Zeroizing<Vec<MasterMinutia>>,
}

/// Shows the seed and the number of master minutiae only.
impl fmt::Debug for SyntheticFinger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyntheticFinger")
            .field("seed", &self.seed)
            .field("minutiae", &self.master.len())
            .finish()
    }
}

fn wrap_pi(a: f64) -> f64 {
    let mut a = a % TAU;
    if a > PI {
        a -= TAU;
    } else if a < -PI {
        a += TAU;
    }
    a
}

/// Ridge orientation (mod π) at a point, from the zero-pole model.
struct OrientationField {
    base: f64,
    cores: Vec<(f64, f64)>,
    deltas: Vec<(f64, f64)>,
    /// Arch: amplitude of the smooth bend.
    arch: f64,
}

impl OrientationField {
    fn random(rng: &mut SplitMix64) -> Self {
        let cx = f64::from(SENSOR_WIDTH) / 2.0;
        let cy = f64::from(SENSOR_HEIGHT) / 2.0;
        let class = rng.unit();
        let base = rng.uniform(-0.2, 0.2);
        if class < 0.65 {
            // Loop: a core above the centre, a delta below to one side.
            let side = if rng.chance(0.5) { 1.0 } else { -1.0 };
            OrientationField {
                base,
                cores: vec![(cx + rng.uniform(-40.0, 40.0), cy + rng.uniform(-80.0, 0.0))],
                deltas: vec![(
                    cx + side * rng.uniform(60.0, 150.0),
                    cy + rng.uniform(100.0, 200.0),
                )],
                arch: 0.0,
            }
        } else if class < 0.95 {
            // Whorl: two cores close together, two deltas low on both sides.
            let (x, y) = (cx + rng.uniform(-30.0, 30.0), cy + rng.uniform(-60.0, 20.0));
            OrientationField {
                base,
                cores: vec![
                    (x + rng.uniform(-25.0, 0.0), y + rng.uniform(-15.0, 15.0)),
                    (x + rng.uniform(0.0, 25.0), y + rng.uniform(-15.0, 15.0)),
                ],
                deltas: vec![
                    (cx - rng.uniform(90.0, 170.0), cy + rng.uniform(90.0, 190.0)),
                    (cx + rng.uniform(90.0, 170.0), cy + rng.uniform(90.0, 190.0)),
                ],
                arch: 0.0,
            }
        } else {
            OrientationField {
                base,
                cores: Vec::new(),
                deltas: Vec::new(),
                arch: rng.uniform(0.4, 0.9),
            }
        }
    }

    fn at(&self, x: f64, y: f64) -> f64 {
        if self.cores.is_empty() {
            // Arch: horizontal ridges bending up in the middle.
            let cx = f64::from(SENSOR_WIDTH) / 2.0;
            let u = (x - cx) / 120.0;
            return self.base - self.arch * u * (-u * u).exp() * (y / f64::from(SENSOR_HEIGHT));
        }
        let mut o = self.base;
        for &(px, py) in &self.cores {
            o += 0.5 * (y - py).atan2(x - px);
        }
        for &(px, py) in &self.deltas {
            o -= 0.5 * (y - py).atan2(x - px);
        }
        o
    }
}

/// Pixel-frame direction (radians) to ISO 19794-2 units (counter-clockwise
/// with y up, 256 units per turn).
pub(crate) fn theta_to_units(theta: f64) -> u8 {
    let iso = (-theta).rem_euclid(TAU);
    let u = (iso / TAU * 256.0).round() as i64;
    (u.rem_euclid(256)) as u8
}

impl SyntheticFinger {
    /// The finger for a seed.
    pub fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x5eed_f1a9_e500_0001);
        let field = OrientationField::random(&mut rng);
        let target = rng.range(30, 60) as usize;
        let cx = f64::from(SENSOR_WIDTH) / 2.0;
        let cy = f64::from(SENSOR_HEIGHT) / 2.0;
        let (ax, ay) = (170.0, 230.0);
        let min_d2 = 18.0f64 * 18.0;
        let mut master: Zeroizing<Vec<MasterMinutia>> = Zeroizing::new(Vec::with_capacity(target));
        let mut attempts = 0;
        while master.len() < target && attempts < 20_000 {
            attempts += 1;
            let x = rng.uniform(cx - ax, cx + ax);
            let y = rng.uniform(cy - ay, cy + ay);
            let (ux, uy) = ((x - cx) / ax, (y - cy) / ay);
            if ux * ux + uy * uy > 1.0 {
                continue;
            }
            if master
                .iter()
                .any(|m| (m.x - x) * (m.x - x) + (m.y - y) * (m.y - y) < min_d2)
            {
                continue;
            }
            let sense = if rng.chance(0.5) { 0.0 } else { PI };
            let theta = wrap_pi(field.at(x, y) + sense + rng.normal() * 6f64.to_radians());
            let k = rng.unit();
            let kind = if k < 0.55 {
                MinutiaKind::RidgeEnding
            } else if k < 0.95 {
                MinutiaKind::Bifurcation
            } else {
                MinutiaKind::Other
            };
            master.push(MasterMinutia {
                x,
                y,
                theta,
                kind,
                quality: rng.uniform(40.0, 100.0),
            });
        }
        SyntheticFinger { seed, master }
    }

    /// The seed this finger came from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Number of master minutiae (30..=60).
    pub fn master_len(&self) -> usize {
        self.master.len()
    }

    /// One capture with the default (realistic) model.
    pub fn capture(&self, capture_seed: u64) -> Template {
        self.capture_with(capture_seed, &CaptureModel::default())
    }

    /// One capture with a given model.
    pub fn capture_with(&self, capture_seed: u64, model: &CaptureModel) -> Template {
        let mut rng = SplitMix64::new(
            self.seed
                .rotate_left(17)
                .wrapping_mul(0x2545_f491_4f6c_dd1d)
                ^ capture_seed
                ^ 0xc0ff_ee00_ca97_0002,
        );
        let w = f64::from(SENSOR_WIDTH);
        let h = f64::from(SENSOR_HEIGHT);
        let (cx, cy) = (w / 2.0, h / 2.0);
        let rot = rng.uniform(-1.0, 1.0) * model.max_rotation_deg.to_radians();
        let tx = rng.uniform(-1.0, 1.0) * model.max_translation_px;
        let ty = rng.uniform(-1.0, 1.0) * model.max_translation_px;
        let axis = rng.uniform(0.0, PI);
        let scale = 1.0 + rng.uniform(-1.0, 1.0) * model.distortion;
        let p_drop = rng.uniform(model.drop_min, model.drop_max.max(model.drop_min));
        let (ca, sa) = (axis.cos(), axis.sin());
        let (cr, sr) = (rot.cos(), rot.sin());

        let mut out: Vec<Minutia> = Vec::with_capacity(MAX_MINUTIAE);
        for m in self.master.iter() {
            // Scale along `axis`, then rotate, then translate.
            let (dx, dy) = (m.x - cx, m.y - cy);
            let along = (dx * ca + dy * sa) * scale;
            let across = -dx * sa + dy * ca;
            let (sx, sy) = (along * ca - across * sa, along * sa + across * ca);
            let x = cx + sx * cr - sy * sr + tx + rng.normal() * model.position_sigma_px;
            let y = cy + sx * sr + sy * cr + ty + rng.normal() * model.position_sigma_px;
            let theta = m.theta + rot + rng.normal() * model.angle_sigma_deg.to_radians();
            if !(0.0..w).contains(&x) || !(0.0..h).contains(&y) {
                continue;
            }
            let edge = x.min(y).min(w - 1.0 - x).min(h - 1.0 - y);
            let closeness = if model.edge_margin_px > 0.0 && edge < model.edge_margin_px {
                1.0 - edge / model.edge_margin_px
            } else {
                0.0
            };
            if rng.chance(p_drop + model.edge_extra_drop * closeness) {
                continue;
            }
            let kind = if rng.chance(model.kind_flip) {
                match m.kind {
                    MinutiaKind::RidgeEnding => MinutiaKind::Bifurcation,
                    MinutiaKind::Bifurcation => MinutiaKind::RidgeEnding,
                    MinutiaKind::Other => MinutiaKind::Other,
                }
            } else {
                m.kind
            };
            let q = m.quality + rng.normal() * model.quality_sigma - 30.0 * closeness;
            out.push(Minutia {
                x: x as u16,
                y: y as u16,
                angle: theta_to_units(theta),
                kind,
                quality: q.clamp(0.0, 100.0).round() as u8,
            });
        }
        let spurious = rng.range(0, u64::from(model.max_spurious));
        for _ in 0..spurious {
            out.push(Minutia {
                x: rng.range(0, u64::from(SENSOR_WIDTH) - 1) as u16,
                y: rng.range(0, u64::from(SENSOR_HEIGHT) - 1) as u16,
                angle: rng.range(0, 255) as u8,
                kind: if rng.chance(0.5) {
                    MinutiaKind::RidgeEnding
                } else {
                    MinutiaKind::Bifurcation
                },
                quality: rng.range(10, 50) as u8,
            });
        }
        // Fisher–Yates.
        let n = out.len();
        for i in (1..n).rev() {
            let j = rng.range(0, i as u64) as usize;
            out.swap(i, j);
        }
        let t = Template::clamped(SENSOR_WIDTH, SENSOR_HEIGHT, SENSOR_DPI, out);
        rng.0.zeroize();
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic() {
        let a = SyntheticFinger::new(7);
        let b = SyntheticFinger::new(7);
        assert_eq!(a.capture(1), b.capture(1));
        assert_ne!(a.capture(1), a.capture(2));
        assert_ne!(a.capture(1), SyntheticFinger::new(8).capture(1));
    }

    #[test]
    fn master_size_and_spacing() {
        for seed in 0..50 {
            let f = SyntheticFinger::new(seed);
            assert!((30..=60).contains(&f.master_len()), "{}", f.master_len());
            let e = f.capture_with(0, &CaptureModel::exact());
            assert_eq!(e.len(), f.master_len());
            let m = e.minutiae();
            for (i, a) in m.iter().enumerate() {
                for b in &m[i + 1..] {
                    let dx = f64::from(a.x) - f64::from(b.x);
                    let dy = f64::from(a.y) - f64::from(b.y);
                    assert!(dx * dx + dy * dy >= 16.0 * 16.0);
                }
            }
        }
    }

    #[test]
    fn captures_vary_realistically() {
        let mut counts = Vec::new();
        for seed in 0..200u64 {
            let f = SyntheticFinger::new(seed);
            let c = f.capture(seed * 31 + 1);
            assert!(c.len() <= f.master_len() + 8);
            counts.push(c.len() as f64 / f.master_len() as f64);
            for m in c.minutiae() {
                assert!(m.x < SENSOR_WIDTH && m.y < SENSOR_HEIGHT && m.quality <= 100);
            }
        }
        let mean = counts.iter().sum::<f64>() / counts.len() as f64;
        // Drops (incl. partial placement) and spurious minutiae roughly balance
        // to 65..95 % of the master count.
        assert!((0.6..0.95).contains(&mean), "{mean}");
    }

    #[test]
    fn normal_is_roughly_standard() {
        let mut r = SplitMix64::new(1);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }

    #[test]
    fn units_convention() {
        // Pixel frame: pointing right is 0, pointing up (negative y) is a
        // quarter turn counter-clockwise, i.e. 64 units.
        assert_eq!(theta_to_units(0.0), 0);
        assert_eq!(theta_to_units(-PI / 2.0), 64);
        assert_eq!(theta_to_units(PI / 2.0), 192);
    }
}
