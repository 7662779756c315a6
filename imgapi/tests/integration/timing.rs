//! A robust comparison of the running times of two operations: many interleaved samples
//! (A B B A ...), so that machine noise and drift hit both alike, then the ratio of the two
//! medians. Used to show that a credential check does not get faster when less of a secret
//! matches, and (as a control) that the same measurement does see a leaking comparison.

use std::time::Instant;

/// Median nanoseconds per sample of `a` and of `b`; each sample runs the operation `batch`
/// times so that it is long enough for the clock.
pub fn interleaved_medians(
    samples: usize,
    batch: usize,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..batch {
            f();
        }
        start.elapsed().as_nanos() as f64
    };
    let (mut ta, mut tb) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for i in 0..samples {
        if i % 2 == 0 {
            ta.push(time(&mut a));
            tb.push(time(&mut b));
        } else {
            tb.push(time(&mut b));
            ta.push(time(&mut a));
        }
    }
    (median(ta), median(tb))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|x, y| x.total_cmp(y));
    v[v.len() / 2]
}

/// The larger median over the smaller one.
pub fn ratio((a, b): (f64, f64)) -> f64 {
    a.max(b) / a.min(b).max(1.0)
}

/// Passes when one of `attempts` measurements has medians within `bound` of each other: a
/// leak shows in every attempt, noise rarely in all of them.
pub fn assert_same_time(what: &str, attempts: usize, bound: f64, mut measure: impl FnMut() -> (f64, f64)) {
    let mut seen = Vec::new();
    for _ in 0..attempts {
        let medians = measure();
        seen.push(medians);
        if ratio(medians) <= bound {
            eprintln!(
                "{what}: medians {:.0} ns vs {:.0} ns (ratio {:.2})",
                medians.0,
                medians.1,
                ratio(medians)
            );
            return;
        }
    }
    panic!(
        "{what}: the time depends on how much matched: medians (ns) of each attempt {seen:?}, bound {bound}"
    );
}

/// Passes when one of `attempts` measurements shows medians at least `factor` apart.
pub fn assert_differs(what: &str, attempts: usize, factor: f64, mut measure: impl FnMut() -> (f64, f64)) {
    let mut seen = Vec::new();
    for _ in 0..attempts {
        let medians = measure();
        seen.push(medians);
        if ratio(medians) >= factor {
            eprintln!(
                "{what}: medians {:.0} ns vs {:.0} ns (ratio {:.1})",
                medians.0,
                medians.1,
                ratio(medians)
            );
            return;
        }
    }
    panic!("{what}: the measurement cannot see a leaking comparison: {seen:?}, wanted a factor {factor}");
}
