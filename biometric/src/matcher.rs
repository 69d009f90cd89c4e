//! The 1:1 minutiae matcher (R-BIO-2, R-BIO-4).
//!
//! There is only [`verify`]: one reference (the enrolled template of the
//! claimed user) against one probe. There is deliberately no function that
//! searches a set of references (no 1:N identification).
//!
//! # Algorithm
//!
//! 1. **Local structures.** For every minutia, its (up to) [`NEIGHBOURS`]
//!    nearest neighbours within [`NEIGHBOUR_RADIUS`] are described by
//!    distance, direction of the connecting vector relative to the minutia's
//!    own direction, and the neighbour's direction relative to it. These are
//!    invariant to rotation and translation.
//! 2. **Candidate alignments.** Every reference/probe minutia pair whose
//!    directions differ by at most [`MAX_ROTATION_DEG`] (plus tolerance) is
//!    scored by how many neighbours match within tolerances; the best
//!    [`CANDIDATES`] pairs (at least two matching neighbours) become
//!    alignment hypotheses, each with the rigid transform fitted to the
//!    pair and its matched neighbours.
//! 3. **Consolidation.** For each hypothesis the reference is transformed
//!    into the probe frame and minutiae are paired one-to-one (closest
//!    first) within a loose tolerance; the transform is refitted by least
//!    squares (2-D Procrustes) on those pairs, and pairing is repeated with
//!    the final tolerance ([`PAIR_DISTANCE_PX`], [`PAIR_ANGLE_DEG`]).
//! 4. **Score.** With `m` pairs, and `n_r`, `n_p` the numbers of reference
//!    and probe minutiae inside the overlap of the two images (each at least
//!    [`OVERLAP_FLOOR`]), `score = 10000 · m² / (n_r · n_p)`, and 0 when
//!    `m <` [`MIN_PAIRED`]. The best hypothesis wins.
//!
//! [`OPERATING_THRESHOLD`] was chosen by measurement (see
//! `docs/BIOMETRICS.md` and `examples/measure.rs`).
//!
//! All intermediate buffers derived from feature data are zeroizing.

use core::f32::consts::{PI, TAU};

use zeroize::{DefaultIsZeroes, Zeroize, Zeroizing};

use crate::template::Template;

/// Score at or above which two templates match (scale 0..=10000).
///
/// Chosen by measurement on the synthetic model (docs/BIOMETRICS.md): with
/// `MIN_PAIRED` and `OVERLAP_FLOOR` tuned on the calibration set (seed 1),
/// no impostor scored above 1263 of 249,500 there, nor above 1603 of
/// 489,300 in the held-out set (seed 2); 2000 leaves a margin over both.
/// FMR 0 in 738,800 impostor comparisons (rule of three: < 4.1e-6 at 95 %),
/// FNMR 0.45–0.48 %.
pub const OPERATING_THRESHOLD: u16 = 2000;
/// Fewer paired minutiae than this never match (score 0).
pub const MIN_PAIRED: u16 = 10;
/// Largest score.
pub const MAX_SCORE: u16 = 10_000;
/// Neighbours per local structure.
pub const NEIGHBOURS: usize = 6;
/// Neighbour search radius in pixels (at 500 dpi).
pub const NEIGHBOUR_RADIUS: f32 = 110.0;
/// Largest rotation between reference and probe considered.
pub const MAX_ROTATION_DEG: f32 = 45.0;
/// Alignment hypotheses tried.
pub const CANDIDATES: usize = 12;
/// Final pairing distance tolerance in pixels.
pub const PAIR_DISTANCE_PX: f32 = 14.0;
/// Final pairing direction tolerance in degrees.
pub const PAIR_ANGLE_DEG: f32 = 22.0;
/// Overlap counts below this are raised to it in the score.
pub const OVERLAP_FLOOR: u16 = 22;

// Local-structure tolerances.
const NB_DIST_TOL: f32 = 9.0;
const NB_PHI_TOL: f32 = 14.0 * PI / 180.0;
const NB_ALPHA_TOL: f32 = 24.0 * PI / 180.0;
// First (loose) pairing pass.
const LOOSE_DISTANCE_PX: f32 = 22.0;
const LOOSE_ANGLE_DEG: f32 = 30.0;

/// The outcome of one 1:1 comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchResult {
    /// Similarity 0..=[`MAX_SCORE`].
    pub score: u16,
    /// Minutiae paired under the best alignment.
    pub paired: u16,
    /// `score >= OPERATING_THRESHOLD`.
    pub matched: bool,
}

/// Compares the claimed user's enrolled `reference` with a fresh `probe`
/// at [`OPERATING_THRESHOLD`]. 1:1 only (R-BIO-2).
pub fn verify(reference: &Template, probe: &Template) -> MatchResult {
    let (score, paired) = compare(reference, probe);
    MatchResult {
        score,
        paired,
        matched: score >= OPERATING_THRESHOLD,
    }
}

/// The score and pair count without a decision (for measurement).
pub fn compare(reference: &Template, probe: &Template) -> (u16, u16) {
    let r = Prepared::new(reference);
    let p = Prepared::new(probe);
    best_alignment(&r, &p)
}

#[derive(Clone, Copy, Default)]
struct Pt {
    x: f32,
    y: f32,
    /// Pixel-frame direction (x right, y down), radians.
    t: f32,
}
impl DefaultIsZeroes for Pt {}

#[derive(Clone, Copy, Default)]
struct Nb {
    idx: u8,
    d: f32,
    phi: f32,
    alpha: f32,
}
impl DefaultIsZeroes for Nb {}

#[derive(Clone, Copy, Default)]
struct Pair {
    cost: f32,
    r: u8,
    p: u8,
}
impl DefaultIsZeroes for Pair {}

#[derive(Clone, Copy, Default)]
struct Xform {
    c: f32,
    s: f32,
    rot: f32,
    tx: f32,
    ty: f32,
}
impl DefaultIsZeroes for Xform {}

impl Xform {
    fn new(rot: f32, tx: f32, ty: f32) -> Self {
        Xform {
            c: rot.cos(),
            s: rot.sin(),
            rot,
            tx,
            ty,
        }
    }

    fn apply(&self, p: &Pt) -> Pt {
        Pt {
            x: self.c * p.x - self.s * p.y + self.tx,
            y: self.s * p.x + self.c * p.y + self.ty,
            t: p.t + self.rot,
        }
    }

    fn invert(&self, p: &Pt) -> Pt {
        let (x, y) = (p.x - self.tx, p.y - self.ty);
        Pt {
            x: self.c * x + self.s * y,
            y: -self.s * x + self.c * y,
            t: p.t - self.rot,
        }
    }
}

fn ang_diff(a: f32, b: f32) -> f32 {
    let d = (a - b).rem_euclid(TAU);
    if d > PI {
        TAU - d
    } else {
        d
    }
}

fn wrap(a: f32) -> f32 {
    let d = a.rem_euclid(TAU);
    if d > PI {
        d - TAU
    } else {
        d
    }
}

struct Prepared {
    w: f32,
    h: f32,
    pts: Zeroizing<Vec<Pt>>,
    /// `NEIGHBOURS` slots per point.
    nbs: Zeroizing<Vec<Nb>>,
    nb_len: Zeroizing<Vec<u8>>,
}

impl Prepared {
    fn new(t: &Template) -> Self {
        let pts: Zeroizing<Vec<Pt>> = Zeroizing::new(
            t.minutiae()
                .iter()
                .map(|m| Pt {
                    x: f32::from(m.x),
                    y: f32::from(m.y),
                    // ISO units are counter-clockwise with y up.
                    t: wrap(-f32::from(m.angle) * (TAU / 256.0)),
                })
                .collect(),
        );
        let n = pts.len();
        let mut nbs = Zeroizing::new(vec![Nb::default(); n * NEIGHBOURS]);
        let mut nb_len = Zeroizing::new(vec![0u8; n]);
        let mut near: Zeroizing<Vec<(f32, u8)>> = Zeroizing::new(Vec::with_capacity(n));
        let r2 = NEIGHBOUR_RADIUS * NEIGHBOUR_RADIUS;
        for ((a, slots), len) in pts
            .iter()
            .zip(nbs.chunks_exact_mut(NEIGHBOURS))
            .zip(nb_len.iter_mut())
        {
            near.clear();
            for (j, b) in pts.iter().enumerate() {
                let (dx, dy) = (b.x - a.x, b.y - a.y);
                let d2 = dx * dx + dy * dy;
                if d2 > 0.0 && d2 <= r2 {
                    near.push((d2, u8::try_from(j).unwrap_or(u8::MAX)));
                }
            }
            near.sort_unstable_by(|x, y| x.0.total_cmp(&y.0));
            let mut k = 0u8;
            for (slot, &(d2, j)) in slots.iter_mut().zip(near.iter()) {
                let Some(b) = pts.get(usize::from(j)) else {
                    continue;
                };
                *slot = Nb {
                    idx: j,
                    d: d2.sqrt(),
                    phi: wrap((b.y - a.y).atan2(b.x - a.x) - a.t),
                    alpha: wrap(b.t - a.t),
                };
                k += 1;
            }
            *len = k;
        }
        Prepared {
            w: f32::from(t.width()),
            h: f32::from(t.height()),
            pts,
            nbs,
            nb_len,
        }
    }

    fn neighbours(&self, i: usize) -> &[Nb] {
        let len = usize::from(self.nb_len.get(i).copied().unwrap_or(0));
        self.nbs
            .get(i * NEIGHBOURS..i * NEIGHBOURS + len)
            .unwrap_or(&[])
    }
}

/// A local-structure correspondence: matched neighbour count and cost.
fn local_similarity(ra: &[Nb], pb: &[Nb], matched: &mut [(u8, u8); NEIGHBOURS]) -> (usize, f32) {
    let mut used = 0u32;
    let mut count = 0usize;
    let mut cost = 0.0f32;
    for u in ra {
        let mut best: Option<(usize, f32, u8)> = None;
        for (k, v) in pb.iter().enumerate() {
            if used & (1 << k) != 0 {
                continue;
            }
            let dd = (u.d - v.d).abs();
            if dd > NB_DIST_TOL {
                continue;
            }
            let dp = ang_diff(u.phi, v.phi);
            if dp > NB_PHI_TOL {
                continue;
            }
            let da = ang_diff(u.alpha, v.alpha);
            if da > NB_ALPHA_TOL {
                continue;
            }
            let c = dd / NB_DIST_TOL + dp / NB_PHI_TOL + da / NB_ALPHA_TOL;
            if best.is_none_or(|b| c < b.1) {
                best = Some((k, c, v.idx));
            }
        }
        if let Some((k, c, pidx)) = best {
            used |= 1 << k;
            if let Some(slot) = matched.get_mut(count) {
                *slot = (u.idx, pidx);
            }
            count += 1;
            cost += c;
        }
    }
    (count, cost)
}

/// Least-squares rigid transform (2-D Procrustes) taking reference points
/// onto probe points.
fn fit(r: &Prepared, p: &Prepared, pairs: impl Iterator<Item = (u8, u8)> + Clone) -> Option<Xform> {
    let mut n = 0.0f32;
    let (mut rx, mut ry, mut px, mut py) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    for (a, b) in pairs.clone() {
        let (Some(ra), Some(pb)) = (r.pts.get(usize::from(a)), p.pts.get(usize::from(b))) else {
            continue;
        };
        n += 1.0;
        rx += ra.x;
        ry += ra.y;
        px += pb.x;
        py += pb.y;
    }
    if n < 2.0 {
        return None;
    }
    let (rx, ry, px, py) = (rx / n, ry / n, px / n, py / n);
    let (mut dot, mut cross) = (0.0f32, 0.0f32);
    for (a, b) in pairs {
        let (Some(ra), Some(pb)) = (r.pts.get(usize::from(a)), p.pts.get(usize::from(b))) else {
            continue;
        };
        let (ax, ay) = (ra.x - rx, ra.y - ry);
        let (bx, by) = (pb.x - px, pb.y - py);
        dot += ax * bx + ay * by;
        cross += ax * by - ay * bx;
    }
    let rot = cross.atan2(dot);
    let (c, s) = (rot.cos(), rot.sin());
    Some(Xform {
        c,
        s,
        rot,
        tx: px - (c * rx - s * ry),
        ty: py - (s * rx + c * ry),
    })
}

/// Pairs minutiae one-to-one, closest first, under `x`. Fills `out` with
/// the pairs and returns their number.
fn pair_up(
    r: &Prepared,
    p: &Prepared,
    x: &Xform,
    dist: f32,
    angle: f32,
    cands: &mut Vec<Pair>,
    out: &mut Vec<(u8, u8)>,
) -> usize {
    cands.clear();
    out.clear();
    let d2max = dist * dist;
    for (i, a) in r.pts.iter().enumerate() {
        let ta = x.apply(a);
        for (j, b) in p.pts.iter().enumerate() {
            let (dx, dy) = (b.x - ta.x, b.y - ta.y);
            let d2 = dx * dx + dy * dy;
            if d2 > d2max || ang_diff(ta.t, b.t) > angle {
                continue;
            }
            cands.push(Pair {
                cost: d2,
                r: u8::try_from(i).unwrap_or(u8::MAX),
                p: u8::try_from(j).unwrap_or(u8::MAX),
            });
        }
    }
    cands.sort_unstable_by(|a, b| a.cost.total_cmp(&b.cost));
    // Templates hold at most 128 minutiae: one bit each.
    let (mut used_r, mut used_p) = (0u128, 0u128);
    for c in cands.iter() {
        let (br, bp) = (1u128 << (c.r & 127), 1u128 << (c.p & 127));
        if used_r & br != 0 || used_p & bp != 0 {
            continue;
        }
        used_r |= br;
        used_p |= bp;
        out.push((c.r, c.p));
    }
    out.len()
}

fn inside(p: &Pt, w: f32, h: f32) -> bool {
    p.x >= 0.0 && p.y >= 0.0 && p.x < w && p.y < h
}

fn score_of(r: &Prepared, p: &Prepared, x: &Xform, m: usize) -> u16 {
    let Ok(m16) = u16::try_from(m) else {
        return 0;
    };
    if m16 < MIN_PAIRED {
        return 0;
    }
    let nr = r
        .pts
        .iter()
        .filter(|a| inside(&x.apply(a), p.w, p.h))
        .count();
    let np = p
        .pts
        .iter()
        .filter(|b| inside(&x.invert(b), r.w, r.h))
        .count();
    let floor = usize::from(OVERLAP_FLOOR);
    let nr = nr.max(floor).max(m) as f32;
    let np = np.max(floor).max(m) as f32;
    let m = m as f32;
    let s = (m * m / (nr * np) * f32::from(MAX_SCORE)).round();
    s.clamp(0.0, f32::from(MAX_SCORE)) as u16
}

fn best_alignment(r: &Prepared, p: &Prepared) -> (u16, u16) {
    // Top candidate seeds: (count, cost, r, p), best first.
    let mut top: Zeroizing<Vec<(usize, f32, u8, u8)>> =
        Zeroizing::new(Vec::with_capacity(CANDIDATES + 1));
    let mut matched = [(0u8, 0u8); NEIGHBOURS];
    let max_rot = (MAX_ROTATION_DEG + PAIR_ANGLE_DEG).to_radians();
    for (i, a) in r.pts.iter().enumerate() {
        let ra = r.neighbours(i);
        if ra.len() < 2 {
            continue;
        }
        for (j, b) in p.pts.iter().enumerate() {
            if ang_diff(a.t, b.t) > max_rot {
                continue;
            }
            let (count, cost) = local_similarity(ra, p.neighbours(j), &mut matched);
            if count < 2 {
                continue;
            }
            let better = |e: &(usize, f32, u8, u8)| count > e.0 || (count == e.0 && cost < e.1);
            if top.len() == CANDIDATES && !top.last().is_some_and(better) {
                continue;
            }
            let pos = top.iter().position(better).unwrap_or(top.len());
            top.insert(
                pos,
                (
                    count,
                    cost,
                    u8::try_from(i).unwrap_or(u8::MAX),
                    u8::try_from(j).unwrap_or(u8::MAX),
                ),
            );
            top.truncate(CANDIDATES);
        }
    }
    matched.zeroize();

    let mut cands: Zeroizing<Vec<Pair>> = Zeroizing::new(Vec::new());
    let mut pairs: Zeroizing<Vec<(u8, u8)>> = Zeroizing::new(Vec::new());
    let mut seed: Zeroizing<Vec<(u8, u8)>> = Zeroizing::new(Vec::with_capacity(NEIGHBOURS + 1));
    let mut best = (0u16, 0u16);
    let loose_a = LOOSE_ANGLE_DEG.to_radians();
    let final_a = PAIR_ANGLE_DEG.to_radians();
    for &(_, _, i, j) in top.iter() {
        let (Some(ra), Some(pb)) = (r.pts.get(usize::from(i)), p.pts.get(usize::from(j))) else {
            continue;
        };
        // The seed: the central pair and its matched neighbours.
        let mut nbm = [(0u8, 0u8); NEIGHBOURS];
        let (count, _) = local_similarity(
            r.neighbours(usize::from(i)),
            p.neighbours(usize::from(j)),
            &mut nbm,
        );
        seed.clear();
        seed.push((i, j));
        seed.extend(nbm.iter().take(count).copied());
        nbm.zeroize();
        let x0 = fit(r, p, seed.iter().copied()).unwrap_or_else(|| {
            let rot = wrap(pb.t - ra.t);
            let (c, s) = (rot.cos(), rot.sin());
            Xform::new(
                rot,
                pb.x - (c * ra.x - s * ra.y),
                pb.y - (s * ra.x + c * ra.y),
            )
        });
        if ang_diff(x0.rot, 0.0) > max_rot {
            continue;
        }
        let m0 = pair_up(
            r,
            p,
            &x0,
            LOOSE_DISTANCE_PX,
            loose_a,
            &mut cands,
            &mut pairs,
        );
        let x1 = if m0 >= 3 {
            fit(r, p, pairs.iter().copied()).unwrap_or(x0)
        } else {
            x0
        };
        let m1 = pair_up(r, p, &x1, PAIR_DISTANCE_PX, final_a, &mut cands, &mut pairs);
        let s = score_of(r, p, &x1, m1);
        let m1 = u16::try_from(m1).unwrap_or(u16::MAX);
        if (s, m1) > best {
            best = (s, m1);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{CaptureModel, SyntheticFinger};
    use crate::template::{Minutia, MinutiaKind};

    #[test]
    fn identical_templates_score_max() {
        let t = SyntheticFinger::new(1).capture(1);
        let r = verify(&t, &t);
        assert!(r.matched);
        assert_eq!(r.score, MAX_SCORE);
        assert_eq!(usize::from(r.paired), t.len());
    }

    #[test]
    fn exact_capture_rotated_and_shifted_matches() {
        let f = SyntheticFinger::new(2);
        let exact = f.capture_with(0, &CaptureModel::exact());
        let model = CaptureModel {
            max_rotation_deg: 20.0,
            max_translation_px: 40.0,
            ..CaptureModel::exact()
        };
        for s in 0..10 {
            let moved = f.capture_with(s, &model);
            let r = verify(&exact, &moved);
            assert!(r.matched, "{s}: {r:?}");
        }
    }

    #[test]
    fn empty_and_tiny_templates_do_not_match() {
        let empty = Template::new(400, 500, 500, Vec::new()).unwrap();
        let t = SyntheticFinger::new(3).capture(1);
        assert_eq!(verify(&empty, &t).score, 0);
        assert_eq!(verify(&t, &empty).score, 0);
        assert_eq!(verify(&empty, &empty).score, 0);
        // A few minutiae, even identical, are below MIN_PAIRED.
        let few: Vec<Minutia> = t.minutiae().iter().take(5).copied().collect();
        let few = Template::new(400, 500, 500, few).unwrap();
        assert!(!verify(&few, &few).matched);
    }

    #[test]
    fn degenerate_templates_do_not_panic() {
        // All minutiae on one spot; maximal count; tiny image.
        let same = vec![
            Minutia {
                x: 5,
                y: 5,
                angle: 3,
                kind: MinutiaKind::Other,
                quality: 50
            };
            128
        ];
        let a = Template::new(10, 10, 500, same).unwrap();
        let _ = verify(&a, &a);
        let b = SyntheticFinger::new(4).capture(2);
        let _ = verify(&a, &b);
        let _ = verify(&b, &a);
    }

    /// R-BIO-4 (always-on, deterministic): the shipped threshold gives no
    /// false match over 5,000 impostor pairs and FNMR under 5 % over 500
    /// genuine pairs. The full measurement is `examples/measure.rs`.
    #[test]
    fn r_bio_4_threshold_fmr_and_fnmr_small_sample() {
        // 100 fingers, 6 captures each, seeds disjoint from the measurement.
        let fingers: Vec<SyntheticFinger> = (0..100u64)
            .map(|i| SyntheticFinger::new(0x7e57_0000 + i))
            .collect();
        let caps: Vec<Vec<Template>> = fingers
            .iter()
            .map(|f| (0..6u64).map(|c| f.capture(c)).collect())
            .collect();
        let mut false_non_matches = 0;
        let mut genuine = 0;
        'g: for c in &caps {
            for i in 0..c.len() {
                for j in i + 1..c.len() {
                    if genuine == 500 {
                        break 'g;
                    }
                    genuine += 1;
                    if !verify(&c[i], &c[j]).matched {
                        false_non_matches += 1;
                    }
                }
            }
        }
        assert_eq!(genuine, 500);
        let mut impostor = 0;
        let mut false_matches = 0;
        'i: for a in 0..caps.len() {
            for b in 0..caps.len() {
                if a == b {
                    continue;
                }
                if impostor == 5_000 {
                    break 'i;
                }
                impostor += 1;
                if verify(&caps[a][0], &caps[b][1 + (a + b) % 5]).matched {
                    false_matches += 1;
                }
            }
        }
        assert_eq!(impostor, 5_000);
        assert_eq!(false_matches, 0, "FMR must be 0 over 5,000 impostor pairs");
        assert!(
            false_non_matches <= 25,
            "FNMR {false_non_matches}/500 over 5 %"
        );
    }
}
