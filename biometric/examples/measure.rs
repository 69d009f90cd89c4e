//! FMR / FNMR measurement of the 1:1 matcher on synthetic fingers (R-BIO-4).
//!
//! ```text
//! cargo run --release -p clinauth-biometric --example measure -- \
//!     --fingers 500 --captures 6 --seed 1 --threads 2
//! ```
//!
//! * `N` fingers (`SyntheticFinger::new(seed << 32 | i)`), `M` captures each
//!   (capture seeds `0..M`), default capture model.
//! * Genuine: every pair of captures of the same finger, `N·M·(M−1)/2`.
//! * Impostor: every ordered pair of different fingers `(a, b)`, reference
//!   capture 0 of `a` against probe capture `1 + (a+b) mod (M−1)` of `b`,
//!   `N·(N−1)`.
//!
//! Prints score statistics, a table of FMR/FNMR per threshold, the values at
//! the shipped `OPERATING_THRESHOLD` (with the rule-of-three 95 % upper bound
//! `3/n` when there are no false matches), and the time per comparison.

use std::time::Instant;

use clinauth_biometric::matcher::{compare, MAX_SCORE, OPERATING_THRESHOLD};
use clinauth_biometric::synthetic::SyntheticFinger;
use clinauth_biometric::template::Template;

struct Args {
    fingers: u64,
    captures: u64,
    seed: u64,
    threads: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        fingers: 500,
        captures: 6,
        seed: 1,
        threads: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let n: u64 = v
            .parse()
            .map_err(|_| format!("{flag}: not a number: {v}"))?;
        match flag.as_str() {
            "--fingers" => a.fingers = n,
            "--captures" => a.captures = n,
            "--seed" => a.seed = n,
            "--threads" => a.threads = usize::try_from(n).map_err(|e| e.to_string())?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.fingers < 2 || a.captures < 2 || a.threads == 0 || a.seed > u64::from(u32::MAX) {
        return Err("need --fingers >= 2, --captures >= 2, --threads >= 1, --seed < 2^32".into());
    }
    Ok(a)
}

/// Scores of a list of (reference, probe) index pairs, on `threads` threads.
fn scores(
    caps: &[Vec<Template>],
    jobs: &[(usize, usize, usize, usize)],
    threads: usize,
) -> Vec<u16> {
    let chunk = jobs.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|&(fa, ca, fb, cb)| {
                            match (
                                caps.get(fa).and_then(|c| c.get(ca)),
                                caps.get(fb).and_then(|c| c.get(cb)),
                            ) {
                                (Some(r), Some(p)) => compare(r, p).0,
                                _ => 0,
                            }
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

fn pct(sorted: &[u16], q: f64) -> u16 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("measure: {e}");
            std::process::exit(2);
        }
    };
    let t0 = Instant::now();
    let caps: Vec<Vec<Template>> = (0..a.fingers)
        .map(|i| {
            let f = SyntheticFinger::new(a.seed << 32 | i);
            (0..a.captures).map(|c| f.capture(c)).collect()
        })
        .collect();
    let (n, m) = (a.fingers as usize, a.captures as usize);
    let mut genuine_jobs = Vec::new();
    for f in 0..n {
        for i in 0..m {
            for j in i + 1..m {
                genuine_jobs.push((f, i, f, j));
            }
        }
    }
    let mut impostor_jobs = Vec::new();
    for fa in 0..n {
        for fb in 0..n {
            if fa != fb {
                impostor_jobs.push((fa, 0, fb, 1 + (fa + fb) % (m - 1)));
            }
        }
    }
    let t1 = Instant::now();
    let mut gen = scores(&caps, &genuine_jobs, a.threads);
    let mut imp = scores(&caps, &impostor_jobs, a.threads);
    let elapsed = t1.elapsed();
    let comparisons = gen.len() + imp.len();

    // Single-thread timing on a sample.
    let sample = impostor_jobs.len().min(4000);
    let ts = Instant::now();
    let mut sink = 0u64;
    for &(fa, ca, fb, cb) in impostor_jobs.iter().take(sample) {
        if let (Some(r), Some(p)) = (
            caps.get(fa).and_then(|c| c.get(ca)),
            caps.get(fb).and_then(|c| c.get(cb)),
        ) {
            sink += u64::from(compare(r, p).0);
        }
    }
    let per_cmp_us = ts.elapsed().as_secs_f64() * 1e6 / sample as f64;
    let sample_g = genuine_jobs.len().min(2000);
    let tg = Instant::now();
    for &(fa, ca, fb, cb) in genuine_jobs.iter().take(sample_g) {
        if let (Some(r), Some(p)) = (
            caps.get(fa).and_then(|c| c.get(ca)),
            caps.get(fb).and_then(|c| c.get(cb)),
        ) {
            sink += u64::from(compare(r, p).0);
        }
    }
    let per_gen_us = tg.elapsed().as_secs_f64() * 1e6 / sample_g as f64;

    let imp_raw = imp.clone();
    gen.sort_unstable();
    imp.sort_unstable();
    let minutiae: usize = caps.iter().flatten().map(Template::len).sum();
    println!("# clinauth-biometric measure");
    println!(
        "fingers {n}, captures {m}, seed {}, finger seeds {}<<32 | 0..{n}, capture seeds 0..{m}",
        a.seed, a.seed
    );
    println!(
        "mean minutiae per capture {:.1}; generation {:.1} s; {} comparisons in {:.1} s on {} threads",
        minutiae as f64 / (n * m) as f64,
        (t1 - t0).as_secs_f64(),
        comparisons,
        elapsed.as_secs_f64(),
        a.threads
    );
    println!(
        "single-thread time per comparison: impostor {per_cmp_us:.0} us, genuine {per_gen_us:.0} us (checksum {sink})"
    );
    println!(
        "genuine  n={:>8}  min {}  p1 {}  p5 {}  median {}",
        gen.len(),
        pct(&gen, 0.0),
        pct(&gen, 0.01),
        pct(&gen, 0.05),
        pct(&gen, 0.5)
    );
    println!(
        "impostor n={:>8}  median {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
        imp.len(),
        pct(&imp, 0.5),
        pct(&imp, 0.99),
        pct(&imp, 0.999),
        pct(&imp, 0.9999),
        imp.last().copied().unwrap_or(0)
    );
    // The worst impostor comparisons, for inspection.
    let mut worst: Vec<(u16, usize)> = Vec::new();
    {
        let unsorted = &imp_raw;
        let mut idx: Vec<usize> = (0..unsorted.len()).collect();
        idx.sort_unstable_by_key(|&i| std::cmp::Reverse(unsorted.get(i).copied().unwrap_or(0)));
        for &i in idx.iter().take(8) {
            worst.push((unsorted.get(i).copied().unwrap_or(0), i));
        }
    }
    println!("worst impostor pairs (score, paired, reference minutiae, probe minutiae):");
    for &(s, i) in &worst {
        if let Some(&(fa, ca, fb, cb)) = impostor_jobs.get(i) {
            if let (Some(r), Some(p)) = (
                caps.get(fa).and_then(|c| c.get(ca)),
                caps.get(fb).and_then(|c| c.get(cb)),
            ) {
                println!(
                    "  {s:>5} {:>3} {:>3} {:>3}   fingers {fa}/{ca} vs {fb}/{cb}",
                    compare(r, p).1,
                    r.len(),
                    p.len()
                );
            }
        }
    }
    let fm = |t: u16| imp.iter().filter(|&&s| s >= t).count();
    let fnm = |t: u16| gen.iter().filter(|&&s| s < t).count();
    println!();
    println!("| threshold | false matches | FMR | false non-matches | FNMR |");
    println!("|---:|---:|---:|---:|---:|");
    let mut ts: Vec<u16> = (0..=30).map(|k| k * 100).collect();
    ts.push(OPERATING_THRESHOLD);
    ts.sort_unstable();
    ts.dedup();
    for t in ts.into_iter().filter(|&t| t <= MAX_SCORE) {
        let (f, g) = (fm(t), fnm(t));
        println!(
            "| {t}{} | {f} | {:.2e} | {g} | {:.2}% |",
            if t == OPERATING_THRESHOLD {
                " (operating)"
            } else {
                ""
            },
            f as f64 / imp.len() as f64,
            100.0 * g as f64 / gen.len() as f64
        );
    }
    let (f, g) = (fm(OPERATING_THRESHOLD), fnm(OPERATING_THRESHOLD));
    println!();
    println!(
        "at OPERATING_THRESHOLD {OPERATING_THRESHOLD}: FMR {f}/{} = {:.2e}{}; FNMR {g}/{} = {:.2}%",
        imp.len(),
        f as f64 / imp.len() as f64,
        if f == 0 {
            format!(
                " (rule of three: < {:.1e} at 95 % confidence)",
                3.0 / imp.len() as f64
            )
        } else {
            String::new()
        },
        gen.len(),
        100.0 * g as f64 / gen.len() as f64
    );
}
